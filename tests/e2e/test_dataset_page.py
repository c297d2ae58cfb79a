"""The dataset page and list in Chromium, as a new user meets them: the model first, then the images, then
the options; thumbnails instead of originals; uploads that show what they skipped and where the new images
are; counts that follow relabels; a late Validate answer that cannot overwrite a newer one; the list on a
phone. One browser for the module, a fresh context (and login) per test."""

import io
import os
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from PIL import Image

from datasets.models import DataSet, DataSetItem
from jobs import runner
from tests.e2e.conftest import CHROMIUM, DESKTOP, open_page
from tests.e2e.test_browser import drop_files, shoot
from tests.images import colour_image, zip_of
from tests.runs import install_model

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]
pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -r requirements-dev.txt)")


@pytest.fixture
def page(browser, live_server, admin_user):
    """A logged-in administrator's page at 1400×900; the test fails on any console or page error."""
    context, page, errors = open_page(browser, live_server, admin_user, DESKTOP)
    page.errors = errors
    yield page
    context.close()
    assert errors == []


@pytest.fixture
def screenshots() -> Path:
    folder = Path(os.environ.get("KERASUI_SCREENSHOTS", "/tmp/kerasui-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def open_dataset(page, live_server, dataset: DataSet) -> None:
    page.goto(f"{live_server.url}/admin/management/dataset/{dataset.pk}/change/")
    page.wait_for_selector("#kerasui-gallery .kerasui-card img")


def test_the_gallery_shows_a_small_thumbnail_of_a_large_photo_never_the_original(page, live_server):
    dataset = DataSet.objects.create(name="Photos")
    buffer = io.BytesIO()
    Image.radial_gradient("L").resize((4000, 3000)).convert("RGB").save(buffer, format="JPEG", quality=95)
    # Stored as before thumbnails existed: its thumbnail is made on the first request.
    item = DataSetItem(dataset=dataset, label="sky")
    item.image.save("photo.jpg", ContentFile(buffer.getvalue()), save=False)
    item.save()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    open_dataset(page, live_server, dataset)
    image = page.locator(f"[data-item='{item.pk}'] img")
    source = image.get_attribute("src")
    assert source.endswith(item.thumbnail_url) and "/thumbnails/" in source
    response = page.request.get(source)
    assert response.headers["content-type"] == "image/webp"
    assert len(response.body()) < 60_000 < item.image.size
    assert not [url for url in requested if url.endswith(item.image.url)]  # the original is never fetched
    # The original on demand: the thumbnail links to it.
    assert page.locator(f"[data-item='{item.pk}'] a[href$='{item.image.url}']").count() == 1


def test_the_dataset_page_shows_the_model_then_the_images_then_the_options(
    page, live_server, colour_dataset, colour_model_file, screenshots
):
    run = install_model(colour_dataset, colour_model_file)
    open_dataset(page, live_server, colour_dataset)
    page.wait_for_selector(".CodeMirror-linenumber")

    def top(selector: str) -> float:
        return page.locator(selector).first.bounding_box()["y"]

    # The current model (accuracy, Test, Train, last runs) is in the first screen; then images; then options.
    assert top("#kerasui-model") < 900 and top("#train-button") < 900
    assert run.accuracy_percent in page.inner_text("#kerasui-model")
    assert page.locator(f"#kerasui-model a[href$='/trainingrun/{run.pk}/change/']").count() >= 1
    assert page.locator("#kerasui-model a:text('Test')").count() == 1
    assert top("#kerasui-model") < top("#kerasui-upload") < top("#kerasui-gallery") < top(".CodeMirror")
    # Train sits with the model, not beside the label box of the drop zone.
    assert page.locator("#kerasui-upload [data-submit-form], #kerasui-upload a.button").count() == 0
    assert page.locator("label[for=kerasui-upload-label]").inner_text() == "Label of the images you drop"
    # The code editor is as wide as the page's form.
    editor = page.locator(".CodeMirror").bounding_box()["width"]
    form = page.locator("#content-main").bounding_box()["width"]
    assert editor > 0.6 * form, (editor, form)
    shoot(page, screenshots, "11-dataset-page")
    # Train, from the model's section, queues a run and opens its page.
    page.click("#train-button")
    page.wait_for_selector("#kerasui-run")


def test_newly_dropped_images_appear_first_in_the_gallery(page, live_server, colour_dataset):
    open_dataset(page, live_server, colour_dataset)  # 30 images: more than a gallery page
    page.fill("[data-upload-label]", "red")
    drop_files(page, "#kerasui-upload .kerasui-drop", [("new.png", "image/png", colour_image("red", seed=77))])
    page.wait_for_selector("#kerasui-upload[data-state=done]")
    newest = DataSetItem.objects.filter(dataset=colour_dataset).latest("id")
    assert page.locator("#kerasui-gallery .kerasui-card").first.get_attribute("data-item") == str(newest.pk)
    assert "11" in page.locator("#kerasui-label-chart tbody tr", has_text="red").inner_text()


def test_what_an_upload_skipped_stays_on_the_page_with_its_reasons_until_dismissed(
    page, live_server, colour_dataset, screenshots, settings
):
    # The zip is imported by a job: the thread runner runs it in its own process, and the drop zone
    # follows it to its report.
    settings.KERASUI_TRAINING_BACKEND = "thread"
    runner.reset()
    open_dataset(page, live_server, colour_dataset)
    archive = zip_of({"green/ok.png": colour_image("green", seed=5), "green/notes.txt": b"not an image"})
    drop_files(page, "#kerasui-upload .kerasui-drop", [("more.zip", "application/zip", archive)])
    page.wait_for_selector("#kerasui-upload[data-state=done]", timeout=120_000)
    report = page.locator(".kerasui-upload-report")
    assert "green/notes.txt" in report.inner_text() and "not an image" in report.inner_text()
    assert "Imported 1 image into" in report.inner_text()
    # No reload wipes it: the gallery and counts were refreshed in place.
    assert "11" in page.locator("#kerasui-label-chart tbody tr", has_text="green").inner_text()
    assert report.is_visible()
    shoot(page, screenshots, "12-dataset-upload-report")
    report.locator("button.kerasui-dismiss").click()
    assert page.locator(".kerasui-upload-report").count() == 0


def test_the_label_counts_follow_a_relabel_without_a_reload(page, live_server, colour_dataset):
    open_dataset(page, live_server, colour_dataset)
    item = DataSetItem.objects.filter(dataset=colour_dataset).latest("id")
    box = page.locator(f"input[aria-label='label of image {item.pk}']")
    box.fill("teal")
    box.press("Enter")
    page.click(f"[data-item='{item.pk}'] >> text=Create 'teal'")  # a new label is asked about first
    page.wait_for_selector(f"[data-item='{item.pk}'].saved")
    row = page.locator("#kerasui-label-chart tbody tr", has_text="teal")
    assert row.count() == 1 and "1" in row.inner_text()
    assert page.locator("#kerasui-gallery select[data-filter] option[value=teal]").count() == 1


def test_a_late_answer_to_an_earlier_validate_never_replaces_the_newer_one(page, live_server, colour_dataset):
    # The two answers as the Validate page gives them (its report part is what the editor shows).
    report = (
        '<div id="kerasui-validation-report" data-line="{}"><ul class="messagelist"><li class="{}">{}</li></ul></div>'
    )
    builds = report.format("", "success", "The model builds: 99 parameters.")
    fails = report.format("2", "error", "The model does not build (line 2): NameError")
    held = []

    def answer(route):
        if not held:
            held.append(route)  # the first Validate's answer comes late
        else:
            route.fulfill(status=200, content_type="text/html", body=fails)

    page.route("**/validate/", answer)
    open_dataset(page, live_server, colour_dataset)
    page.wait_for_selector(".CodeMirror-linenumber")
    button = page.locator("text=Validate the model code")
    button.click()
    button.click()
    page.wait_for_selector(".kerasui-validation li.error")
    with page.expect_response("**/validate/") as late:
        held[0].fulfill(status=200, content_type="text/html", body=builds)
    late.value.finished()
    page.wait_for_timeout(300)  # room for the page's script to (wrongly) show the late answer
    text = page.inner_text(".kerasui-validation")
    assert "does not build" in text and "The model builds" not in text
    assert page.locator(".CodeMirror .kerasui-error-line").count() == 1


def test_the_dataset_list_on_a_phone_shows_the_accuracy(
    page, live_server, colour_dataset, colour_model_file, screenshots
):
    install_model(colour_dataset, colour_model_file)
    DataSet.objects.create(name="Empty")
    page.goto(f"{live_server.url}/admin/management/dataset/")
    page.set_viewport_size({"width": 390, "height": 844})
    cell = page.locator("#result_list td.field-current_accuracy").first
    box = cell.bounding_box()
    assert box["x"] + box["width"] <= 390 and "%" in cell.inner_text()
    shoot(page, screenshots, "13-dataset-list")
    page.set_viewport_size({"width": 390, "height": 844})
    open_dataset(page, live_server, colour_dataset)
    page.wait_for_selector(".CodeMirror-linenumber")
    # Nothing of the dataset page is wider than a phone.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
