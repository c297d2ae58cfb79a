"""Why did the model decide, in Chromium: a misclassified image's 'why?' swaps in its heatmap and back, a
confusion cell opens its images, the Test page shows the heatmap beside the answer; no console error."""

from pathlib import Path

import pytest

from tests.admin.test_explanations import LABELS, evaluated_run
from tests.e2e.test_browser import CHROMIUM, browser_page, drop_files, screenshots, shoot, sync_api  # noqa: F401
from tests.images import colour_image

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]


def test_why_buttons_cell_links_and_the_test_pages_heatmap_in_the_browser(
    browser_page,  # noqa: F811
    live_server,
    admin_user,
    trained_dataset,
    screenshots: Path,  # noqa: F811
):
    page, errors = browser_page
    url = live_server.url
    reds = list(trained_dataset.items.filter(label="red").order_by("pk")[:3])
    answers = {item.pk: (item.label, 0.9) for item in trained_dataset.items.order_by("pk")[:12]}
    answers |= {item.pk: ("blue", 0.8) for item in reds[:2]} | {reds[2].pk: ("red", 0.9)}
    run = evaluated_run(trained_dataset, answers=answers)

    page.goto(f"{url}/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.goto(f"{url}/admin/management/trainingrun/{run.pk}/change/")
    card = page.locator(f"[data-relabel-item='{reds[0].pk}']")
    card.locator("button.kerasui-why").click()
    page.wait_for_selector(f"[data-relabel-item='{reds[0].pk}'] img.kerasui-why-heatmap:visible")
    assert card.locator("button.kerasui-why").get_attribute("aria-pressed") == "true"
    shoot(page, screenshots, "23-run-why-misclassified")
    card.locator("button.kerasui-why").click()
    assert not card.locator("img.kerasui-why-heatmap").is_visible()

    red, blue = LABELS.index("red"), LABELS.index("blue")
    page.click(f"a[href$='/confusion/validation/{red}/{blue}/']")
    page.wait_for_selector(".kerasui-confusion-cell")
    shown = page.locator("[data-cell-item]")
    assert shown.count() == 2
    assert {int(shown.nth(n).get_attribute("data-cell-item")) for n in range(2)} == {reds[0].pk, reds[1].pk}
    assert page.inner_text("#content h1") == "Labelled red, predicted blue"
    shoot(page, screenshots, "24-confusion-cell")

    page.goto(f"{url}/admin/management/dataset/test/?dataset={trained_dataset.pk}")
    assert page.is_checked("#id_explain")
    drop_files(page, "#kerasui-test .kerasui-drop", [("red.png", "image/png", colour_image("red", seed=7, size=48))])
    page.wait_for_selector(".kerasui-result .kerasui-explanation img")
    assert page.inner_text("#predicted-label") == "red"
    assert page.evaluate("document.querySelector('.kerasui-explanation img').naturalWidth") == 48
    shoot(page, screenshots, "25-test-heatmap")
    assert errors == []
