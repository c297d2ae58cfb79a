"""The Compare page in a real headless Chromium: ticked on the dataset page, curves overlaid, flipped images
shown, no console error (the CSP allows no inline script). Saved as compare-desktop.png and compare-phone.png."""

import io
from itertools import pairwise

import pytest

from datasets.models import DataSet
from datasets.services import dataset_import_zip
from tests.e2e.test_browser import CHROMIUM, browser_page, screenshots, shoot  # noqa: F401 - fixtures
from tests.images import colour_zip
from tests.runs import finish_run, split_report

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]


def test_runs_ticked_on_the_dataset_page_are_compared_in_the_browser(
    browser_page,  # noqa: F811 - the fixture imported above
    live_server,
    admin_user,
    screenshots,  # noqa: F811
):
    page, errors = browser_page
    dataset = DataSet.objects.create(name="Colours compared", image_size=16)
    dataset_import_zip(dataset=dataset, file=io.BytesIO(colour_zip(3)))
    items = list(dataset.items.order_by("id"))
    labels = sorted({item.label for item in items})
    ids, true = [item.pk for item in items], [labels.index(item.label) for item in items]
    better = [(label + 1) % 3 if n == 0 else label for n, label in enumerate(true)]
    worse = [(label + 1) % 3 if n in (1, 4, 7) else label for n, label in enumerate(true)]
    curves = [
        [{"epoch": epoch, "loss": 1.2 / epoch, "accuracy": 0.3 + 0.1 * epoch, "val_loss": 1.3 / epoch,
          "val_accuracy": 0.25 + 0.1 * epoch} for epoch in range(1, 6)],
        [{"epoch": epoch, "loss": 1.0 / epoch, "accuracy": 0.4 + 0.1 * epoch, "val_loss": 1.5 / epoch,
          "val_accuracy": 0.2 + 0.1 * epoch} for epoch in range(1, 5)],
    ]  # fmt: skip
    first, second = (
        finish_run(
            dataset,
            evaluation={"validation": split_report(ids, true, predicted, labels)},
            splits={"validation": ids},
            history=history,
            labels=labels,
            process=process,
        )
        for predicted, history, process in (
            (better, curves[0], "model.add(layers.Flatten())\n"),
            (worse, curves[1], "model.add(layers.Flatten())\nmodel.add(layers.Dense(8))\n"),
        )
    )

    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.goto(f"{live_server.url}/admin/management/dataset/{dataset.pk}/change/")
    assert "kept as a version, not promoted" in page.inner_text(".kerasui-promotion")
    page.check(f"input[name=ids][value='{first.pk}']")
    page.check(f"input[name=ids][value='{second.pk}']")
    with page.expect_navigation():
        page.click("text=Compare selected runs")
    assert f"/trainingrun/compare/?ids={second.pk}&ids={first.pk}" in page.url  # the table's order; oldest is baseline

    page.wait_for_selector("[data-compare-chart=accuracy] svg polyline")
    assert page.locator("[data-compare-chart=loss] polyline").count() == 4  # two runs: validation and training
    # The value axis in round steps (1, 2 or 5 times a power of ten), never 0.38 or 1.1.
    ticks = [float(text) for text in page.locator("[data-compare-chart=loss] text.value-tick").all_text_contents()]
    steps = {round(b - a, 6) for a, b in pairwise(ticks)}
    assert len(steps) == 1 and f"{steps.pop():.0e}"[0] in "125", ticks
    assert page.locator(".kerasui-diff-add").inner_text() == "+model.add(layers.Dense(8))"
    assert page.locator(".kerasui-flips .kerasui-card").count() == 4  # 1 fixed, 3 broken
    assert page.locator(".kerasui-flips img").first.evaluate("image => image.naturalWidth") > 0
    shoot(page, screenshots, "21-run-compare")
    assert not errors, errors
