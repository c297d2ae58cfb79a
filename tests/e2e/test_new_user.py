"""What a new user tripped over (issue 29), each in a real headless Chromium: Train with unsaved edits,
deletes that say what goes before anything goes, a manual promotion that keeps its reason, a phase from a
run's first second, the compare chart's axes, and no sideways scrolling on a phone (390 px).

Runs are written straight into the database (tests/runs.py): no training. One Chromium serves the module.
"""

import os
from pathlib import Path

import pytest
from django.core.files.base import ContentFile

from datasets.models import DataSet, DataSetItem
from datasets.services import dataset_item_create
from health.models import HealthCheck, HealthDismissal
from tests.images import colour_image
from tests.runs import finish_run, split_report
from training import runs as lifecycle
from training.models import TrainingRun
from training.services import training_run_create

CHROMIUM = Path("/usr/bin/chromium")
PHONE = {"width": 390, "height": 844}

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -r requirements-dev.txt)")


@pytest.fixture(scope="module")
def chromium():
    # Playwright's sync API runs an event loop in this thread; the ORM calls of the tests stay synchronous.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            yield browser
            browser.close()


@pytest.fixture
def page(chromium, live_server, admin_user):
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    errors = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on("console", lambda message: message.type == "error" and errors.append(message.text))
    opened.set_default_timeout(30_000)
    opened.goto(f"{live_server.url}/admin/login/")
    opened.fill("#id_username", admin_user.username)
    opened.fill("#id_password", "password")
    opened.click("input[type=submit]")
    opened.wait_for_selector("#kerasui-dashboard")
    opened.base = live_server.url
    yield opened
    context.close()
    assert not errors, errors


def shoot(page, name: str) -> None:
    """The page at both sizes, saved for a person to look at (KERASUI_SCREENSHOTS)."""
    folder = Path(os.environ.get("KERASUI_SCREENSHOTS", "/tmp/kerasui-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    for size, viewport in (("desktop", {"width": 1400, "height": 900}), ("phone", PHONE)):
        page.set_viewport_size(viewport)
        page.wait_for_timeout(150)
        page.screenshot(path=str(folder / f"ui-{name}-{size}.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 900})


def two_runs(dataset: DataSet) -> tuple[TrainingRun, TrainingRun]:
    """Two succeeded runs on the same validation images: the first current when it finished (the dataset had
    no model), the second better, so the policy made it current instead."""
    items = list(dataset.items.order_by("id"))
    labels = sorted({item.label for item in items})
    ids, true = [item.pk for item in items], [labels.index(item.label) for item in items]
    worse = [(label + 1) % 3 if n < 6 else label for n, label in enumerate(true)]
    history = [
        {"epoch": epoch, "loss": 1.0 / epoch, "accuracy": 0.4 + 0.03 * epoch, "val_loss": 1.1 / epoch,
         "val_accuracy": 0.35 + 0.03 * epoch} for epoch in range(1, 17)
    ]  # fmt: skip
    made = [
        finish_run(
            dataset,
            evaluation={"validation": split_report(ids, true, predicted, labels)},
            splits={"validation": ids},
            history=history,
            labels=labels,
        )
        for predicted in (worse, true)
    ]
    return made[0], made[1]


OFF_SCREEN = """() => {
  const shown = "a, button, input:not([type=hidden]), select, textarea, td, th, img, p, li, h2, h3, svg, pre";
  const nodes = document.querySelectorAll("#content " + shown.split(", ").join(", #content "));
  return Array.from(nodes).filter(function (node) {
    const box = node.getBoundingClientRect();
    // Inside a table that says it scrolls sideways (its note shows on a phone), a cell may lie further right.
    return box.width > 0 && box.right > window.innerWidth + 1 && !node.closest("[data-scrolls]");
  }).map(function (node) { return node.tagName.toLowerCase() + " " + (node.textContent || "").trim().slice(0, 30); });
}"""


def overflow(page) -> list[str]:
    """What lies past the window's right edge, and whether the page itself scrolls sideways."""
    wider = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    return ([f"page wider by {wider} px"] if wider > 0 else []) + page.evaluate(OFF_SCREEN)[:8]


def test_train_with_unsaved_edits_asks_then_trains_what_is_on_screen(page, colour_dataset):
    page.goto(f"{page.base}/admin/management/dataset/{colour_dataset.pk}/change/")
    page.fill("#id_image_size", "24")
    page.click("#train-button")
    ask = page.locator("#kerasui-train-ask")
    sync_api.expect(ask).to_be_visible()
    assert "not saved" in ask.inner_text()
    assert not TrainingRun.objects.exists()  # nothing was trained behind the question
    with page.expect_navigation():
        page.click("#kerasui-train-ask >> text=Save and train")
    run = TrainingRun.objects.get()
    assert f"/trainingrun/{run.pk}/change/" in page.url
    assert run.image_size == 24 and DataSet.objects.get(pk=colour_dataset.pk).image_size == 24

    # Without edits, Train trains at once, as before.
    lifecycle.run_cancel(run=run)
    page.goto(f"{page.base}/admin/management/dataset/{colour_dataset.pk}/change/")
    with page.expect_navigation():
        page.click("#train-button")
    assert TrainingRun.objects.count() == 2


def _health_check(dataset: DataSet, report: dict) -> HealthCheck:
    base = {
        "images": dataset.items.count(), "labels": ["blue", "green", "red"], "method": "test", "folds": 5,
        "label_issues": [], "label_quality": {}, "duplicates": [], "leaks": {"run": None, "groups": []},
        "outliers": [], "balance": {"counts": {}, "smallest": [], "imbalance_ratio": 1.0, "notes": []},
        "unreadable": [], "seconds": {"total": 1.0},
    }  # fmt: skip
    return HealthCheck.objects.create(dataset=dataset, status="succeeded", progress=1.0, report=base | report)


def test_deleting_images_on_the_health_page_asks_first_and_keep_this_one_keeps_the_original_runs_used(
    page, colour_dataset
):
    suspect = colour_dataset.items.filter(label="blue").first()
    original = colour_dataset.items.filter(label="green").first()
    used, _ = two_runs(colour_dataset)  # both trained with the original
    with original.image.open("rb") as file:
        copy = dataset_item_create(dataset=colour_dataset, label="green", file=ContentFile(file.read()))
    issue = {"item": suspect.pk, "given": "blue", "suggested": "red", "confidence": 0.97, "quality": 0.01}
    _health_check(
        colour_dataset,
        {
            "label_issues": [issue],
            "duplicates": [{"items": [original.pk, copy.pk], "exact": False, "labels": ["green"]}],
        },
    )
    health = f"{page.base}/admin/management/dataset/{colour_dataset.pk}/health/"
    page.goto(health)

    # Delete: a page naming the image first; going back deletes nothing.
    page.click("#label-issues ~ .kerasui-scroll >> text=Delete")
    page.wait_for_selector("#kerasui-confirm-delete")
    assert f"#{suspect.pk} blue" in page.inner_text("#kerasui-confirm-delete")
    assert "cannot be undone" in page.inner_text("#content-main")
    shoot(page, "health-confirm-delete")
    page.click("text=No, go back")
    assert DataSetItem.objects.filter(pk=suspect.pk).exists()
    page.click("#label-issues ~ .kerasui-scroll >> text=Delete")
    with page.expect_navigation():
        page.click("#kerasui-confirm")
    assert not DataSetItem.objects.filter(pk=suspect.pk).exists()
    assert "Deleted 1 image." in page.inner_text(".messagelist")

    # Keep this one on the copy: the original, which the runs trained on, is not deleted.
    page.locator(".kerasui-health-group figure", has_text=f"#{copy.pk}").locator("text=Keep this one").click()
    page.wait_for_selector("#kerasui-confirm-protected")
    assert f"#{original.pk}" in page.inner_text("#kerasui-confirm-protected")
    assert str(used.pk) in page.inner_text("#kerasui-confirm-protected")
    assert page.is_visible("#kerasui-confirm-nothing")
    with page.expect_navigation():
        page.click("#kerasui-confirm")
    assert DataSetItem.objects.filter(pk__in=[original.pk, copy.pk]).count() == 2
    assert HealthDismissal.objects.filter(item__in=[original.pk, copy.pk], kind="duplicate").count() == 2


def test_deleting_a_dataset_or_a_run_says_in_words_what_goes(page, colour_dataset):
    first, second = two_runs(colour_dataset)
    page.goto(f"{page.base}/admin/management/dataset/{colour_dataset.pk}/delete/")
    listed = page.inner_text("#deleted-objects")
    assert "30 images with their files" in listed and "2 training runs, 2 trained models among them" in listed
    assert page.locator("#deleted-objects li").count() < 8  # sentences, not a line per image
    assert "This cannot be undone" in page.inner_text("#kerasui-irreversible")
    page.click("text=No, take me back")
    assert DataSet.objects.filter(pk=colour_dataset.pk).exists()

    page.goto(f"{page.base}/admin/management/trainingrun/{second.pk}/delete/")
    assert "it is the current model" in page.inner_text("#deleted-objects")
    with page.expect_navigation():
        page.click("input[type=submit]")
    assert not TrainingRun.objects.filter(pk=second.pk).exists()


def test_a_manual_promotion_keeps_the_reason_and_the_replaced_run_says_it_was_current(page, colour_dataset):
    first, second = two_runs(colour_dataset)
    assert first.promotion["reason"] == "the dataset had no model yet: promoted"
    assert DataSet.objects.get(pk=colour_dataset.pk).current_run_id == second.pk
    page.goto(f"{page.base}/admin/management/dataset/{colour_dataset.pk}/change/")
    with page.expect_navigation():
        page.click(f"button[formaction$='/trainingrun/{first.pk}/promote/']")
    first.refresh_from_db()
    kept = "promoted by a person (when it finished: the dataset had no model yet: promoted)"
    assert first.promotion["reason"] == kept

    page.goto(f"{page.base}/admin/management/trainingrun/{second.pk}/change/")
    said = page.inner_text(".field-promotion_display")
    assert "Not current any more" in said and f"run {first.pk} answers predictions now" in said
    assert "anyway" not in said  # it was current: promoting it again is not "anyway"


def test_a_running_run_shows_a_phase_from_its_first_second(page, colour_dataset):
    run = training_run_create(dataset=colour_dataset, enqueue=False)
    lifecycle.run_claim(run_id=run.pk, worker="test:1")  # its process is importing TensorFlow: no phase yet
    page.goto(f"{page.base}/admin/management/trainingrun/{run.pk}/change/")
    assert "Running: starting the training process 0%" in page.inner_text(".kerasui-live-progress")
    page.wait_for_timeout(1500)  # the page's own poll redraws it
    assert "Running: starting the training process 0%" in page.inner_text(".kerasui-live-progress")


def test_the_compare_page_labels_epochs_in_round_steps_and_accuracy_in_percent(page, colour_dataset):
    first, second = two_runs(colour_dataset)
    page.goto(f"{page.base}/admin/management/trainingrun/compare/?ids={first.pk},{second.pk}")
    page.wait_for_selector("[data-compare-chart=accuracy] svg polyline")
    epochs = [int(text) for text in page.locator("[data-compare-chart=loss] text.epoch-tick").all_text_contents()]
    assert epochs == [2, 4, 6, 8, 10, 12, 14, 16], epochs
    assert "%" in page.locator(".kerasui-compare table tbody tr").first.inner_text()


def test_no_page_scrolls_sideways_on_a_phone(page, colour_dataset, settings):
    first, second = two_runs(colour_dataset)
    suspect = colour_dataset.items.filter(label="blue").first()
    copies = list(colour_dataset.items.filter(label="green")[:2])
    issue = {"item": suspect.pk, "given": "blue", "suggested": "red", "confidence": 0.97, "quality": 0.01}
    _health_check(
        colour_dataset,
        {
            "label_issues": [issue],
            "duplicates": [{"items": [copy.pk for copy in copies], "exact": True, "labels": ["green"]}],
            "outliers": [{"item": suspect.pk, "label": "blue", "score": 4.2}],
        },
    )
    pages = {
        "dataset": f"/admin/management/dataset/{colour_dataset.pk}/change/",
        "run": f"/admin/management/trainingrun/{first.pk}/change/",
        "compare": f"/admin/management/trainingrun/compare/?ids={first.pk},{second.pk}",
        "health": f"/admin/management/dataset/{colour_dataset.pk}/health/",
        "test": f"/admin/management/dataset/test/?dataset={colour_dataset.pk}",
    }
    page.set_viewport_size(PHONE)
    wide = {}
    for name, url in pages.items():
        page.goto(page.base + url)
        page.wait_for_load_state("networkidle")
        if past := overflow(page):
            wide[name] = past
        shoot(page, name)
        page.set_viewport_size(PHONE)
    assert not wide, f"past the right edge of a 390 px screen: {wide}"
    # The Promote button of a version is on screen, not past its right edge.
    page.goto(page.base + pages["dataset"])
    box = page.locator(f"button[formaction$='/trainingrun/{first.pk}/promote/']").bounding_box()
    assert box["x"] + box["width"] <= PHONE["width"]


def test_uploads_say_each_thing_once_in_words_and_every_line_can_be_dismissed(page, colour_dataset):
    from tests.e2e.test_browser import drop_files

    page.goto(f"{page.base}/admin/management/dataset/{colour_dataset.pk}/change/")
    assert page.inner_text("[data-all-images]") == "All 30 images in the list"
    page.fill("[data-upload-label]", "red")
    images = [(f"r{n}.png", "image/png", colour_image("red", seed=500 + n)) for n in range(4)]
    drop_files(page, "#kerasui-upload .kerasui-drop", [*images, ("fake.jpg", "image/jpeg", b"not an image")])
    page.wait_for_selector("#kerasui-upload[data-state=done]", timeout=60_000)
    report = page.inner_text(".kerasui-upload-report")
    assert "Imported 4 images into 'Colours' (red: 4)." in report and "file(s)" not in report
    assert report.count("fake.jpg") == 1, report
    # The link under the gallery counts the images there are now, not those when the page was made.
    sync_api.expect(page.locator("[data-all-images]")).to_have_text("All 34 images in the list")
    lines = page.locator(".kerasui-upload-report li")
    assert lines.count() == 2
    lines.nth(1).locator(".kerasui-dismiss-line").click()  # the warning, not only the first line
    assert lines.count() == 1 and "fake.jpg" not in page.inner_text(".kerasui-upload-report")


def test_a_new_label_typed_in_the_gallery_is_asked_about_and_the_nearest_label_offered(page, colour_dataset):
    page.goto(f"{page.base}/admin/management/dataset/{colour_dataset.pk}/change/")
    card = page.locator("#kerasui-gallery .kerasui-card").first
    item = DataSetItem.objects.get(pk=int(card.get_attribute("data-item")))
    box = card.locator("input[type=text]")
    box.fill("gren")
    box.press("Enter")
    ask = card.locator(".kerasui-new-label")
    sync_api.expect(ask).to_contain_text("'gren' is a new label. Did you mean 'green'?")
    assert DataSetItem.objects.get(pk=item.pk).label == item.label  # nothing saved yet
    ask.locator("text=Use 'green'").click()
    sync_api.expect(card.locator("a.kerasui-muted")).to_have_text(f"✓ #{item.pk}")
    assert DataSetItem.objects.get(pk=item.pk).label == "green"

    box.fill("purple")
    box.press("Enter")
    card.locator("text=Create 'purple'").click()
    sync_api.expect(card.locator("a.kerasui-muted")).to_have_text(f"✓ #{item.pk}")
    assert DataSetItem.objects.get(pk=item.pk).label == "purple"


def test_deleting_an_image_from_its_page_says_what_goes_and_that_it_cannot_be_undone(page, colour_dataset):
    item = colour_dataset.items.first()
    page.goto(f"{page.base}/admin/management/datasetitem/{item.pk}/delete/")
    listed = page.inner_text("#deleted-objects")
    assert f"image #{item.pk} labelled '{item.label}' ({item.original_name}), its file and thumbnail" in listed
    assert "This cannot be undone" in page.inner_text("#kerasui-irreversible")
    with page.expect_navigation():
        page.click("input[type=submit]")
    assert not DataSetItem.objects.filter(pk=item.pk).exists()
