"""Pressing Enter in a gallery's label box relabels that image and nothing else.

Before the fix, Enter also submitted the dataset form through its first submit button, which is the
Promote button of the oldest version: relabelling one image silently changed the current model.
"""

from pathlib import Path

import pytest

from datasets.models import DataSet, DataSetItem
from tests.runs import install_model

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -r requirements-dev.txt)")


def test_enter_in_a_gallery_label_box_relabels_without_promoting_an_older_version(
    live_server, admin_user, colour_dataset, colour_model_file, monkeypatch
):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    older = install_model(colour_dataset, colour_model_file)
    newer = install_model(colour_dataset, colour_model_file)
    DataSet.objects.filter(pk=colour_dataset.pk).update(current_run=newer)
    # The gallery shows the newest first.
    item = DataSetItem.objects.filter(dataset=colour_dataset).order_by("-id").first()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.set_default_timeout(30_000)
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", admin_user.username)
        page.fill("#id_password", "password")
        page.click("input[type=submit]")
        page.goto(f"{live_server.url}/admin/management/dataset/{colour_dataset.pk}/change/")
        assert page.locator(f"button[formaction$='/{older.pk}/promote/']").count() == 1
        box = page.locator(f"input[aria-label='label of image {item.pk}']")
        box.fill("teal")
        box.press("Enter")
        page.click(f"[data-item='{item.pk}'] >> text=Create 'teal'")  # a new label is asked about first
        page.wait_for_selector(f"[data-item='{item.pk}'].saved")
        page.wait_for_timeout(500)
        url = page.url
        browser.close()
    colour_dataset.refresh_from_db()
    item.refresh_from_db()
    assert item.label == "teal"
    assert colour_dataset.current_run_id == newer.pk
    assert url.endswith(f"/dataset/{colour_dataset.pk}/change/")
    assert errors == []
