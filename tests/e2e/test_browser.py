"""The UI in a real headless Chromium (Debian's package, driven by Playwright): the whole story of a user.

Log in, create a dataset, drop a zip on it, train a tiny model and watch the chart gain points, read the
confusion matrix, fix a wrong label from the misclassified gallery, test an image. Every page is saved as
a screenshot at 1400×900 and 390×844, light and dark, into KERASUI_SCREENSHOTS (default /tmp/kerasui-screenshots).
"""

import base64
import os
import time
from pathlib import Path

import pytest

from datasets.models import DataSet, DataSetItem
from tests.images import colour_image, colour_zip, zip_of
from training.models import TrainingRun

CHROMIUM = Path("/usr/bin/chromium")
SIZES = {"desktop": (1400, 900), "phone": (390, 844)}

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"
    ),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -r requirements-dev.txt)")


@pytest.fixture
def screenshots() -> Path:
    folder = Path(os.environ.get("KERASUI_SCREENSHOTS", "/tmp/kerasui-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser_page(live_server, monkeypatch):
    # Playwright's sync API runs an event loop in this thread; the ORM calls of the test are still synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: message.type == "error" and errors.append(message.text))
        page.set_default_timeout(30_000)
        yield page, errors
        context.close()
        browser.close()


def shoot(page, folder: Path, name: str) -> None:
    """The page as it is now, at the desktop and the phone size, light and then dark (`<name>-dark-…`).

    Dark is the same page with the system's colour scheme switched (the admin follows it): no second story.
    """
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        suffix = "" if scheme == "light" else "-dark"
        for size_name, (width, height) in SIZES.items():
            page.set_viewport_size({"width": width, "height": height})
            page.evaluate("window.scrollTo(0, 0)")  # the admin's sticky sidebar stays at the top
            page.wait_for_timeout(150)
            page.screenshot(path=str(folder / f"{name}{suffix}-{size_name}.png"), full_page=True)
    page.emulate_media(color_scheme="light")
    page.set_viewport_size({"width": 1400, "height": 900})


def drop_files(page, selector: str, files: list[tuple[str, str, bytes]]) -> None:
    """Drag and drop files onto an element, as a user drags them from a file manager."""
    payload = [{"name": name, "type": kind, "data": base64.b64encode(data).decode()} for name, kind, data in files]
    transfer = page.evaluate_handle(
        """(files) => {
            const transfer = new DataTransfer();
            for (const file of files) {
                const bytes = Uint8Array.from(atob(file.data), (c) => c.charCodeAt(0));
                transfer.items.add(new File([bytes], file.name, { type: file.type }));
            }
            return transfer;
        }""",
        payload,
    )
    page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def test_a_user_trains_reviews_fixes_and_tests_a_model_in_the_browser(
    browser_page, live_server, admin_user, settings, screenshots
):
    settings.KERASUI_TRAINING_BACKEND = "thread"
    page, errors = browser_page
    url = live_server.url

    # Log in through the admin's own login page; an empty installation offers its first steps.
    page.goto(f"{url}/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_selector("#kerasui-dashboard")
    assert "Create a dataset" in page.inner_text("#kerasui-dashboard")
    assert page.is_visible("text=Load the demo dataset")
    shoot(page, screenshots, "01-home-empty")

    # Create a dataset with the admin's add form (tiny images so training takes seconds).
    page.goto(f"{url}/admin/management/dataset/add/")
    page.wait_for_selector(".CodeMirror-linenumber")  # the model code is a code editor with line numbers
    assert page.is_visible(".kerasui-contract")
    shoot(page, screenshots, "02-dataset-add")
    page.fill("#id_name", "Colours")
    page.fill("#id_image_size", "16")
    page.fill("#id_epochs", "12")
    page.fill("#id_batch_size", "8")
    page.fill("#id_validation_split", "0.5")
    page.fill("#id_early_stopping_patience", "0")
    # A fixed seed whose split holds out all four mislabelled images (below): the misclassified gallery then
    # always has a wrong label to fix (with a random seed all four trained 3.5 % of the time).
    page.fill("#id_seed", "25")
    page.click("input[name=_continue]")
    page.wait_for_selector("#kerasui-upload")
    dataset = DataSet.objects.get(name="Colours")

    # Drop a zip: one folder per label, and four red images wrongly filed as blue.
    wrong = {f"blue/mislabelled_{n}.png": colour_image("red", seed=900 + n) for n in range(4)}
    archive = zip_of({**dict(_entries(colour_zip(10))), **wrong})
    drop_files(page, "#kerasui-upload .kerasui-drop", [("colours.zip", "application/zip", archive)])
    page.wait_for_selector("#kerasui-upload[data-state=done]", timeout=120_000)  # imported by a job
    assert dataset.items.count() == 34
    rows = page.locator("#kerasui-label-chart tbody tr")
    assert rows.count() == 3 and "14" in rows.nth(0).inner_text()
    # The gallery's first page: 24 of the 34 images, each with its label to change.
    # Counted by Playwright's selectors: wait_for_function evaluates a string, which the CSP forbids.
    sync_api.expect(page.locator("#kerasui-gallery .kerasui-card img")).to_have_count(24)

    # Many single images at once, with the label typed beside the drop zone.
    page.fill("[data-upload-label]", "red")
    red_images = [(f"r{n}.png", "image/png", colour_image("red", seed=n)) for n in (7, 8)]
    drop_files(page, "#kerasui-upload .kerasui-drop", red_images)
    page.wait_for_selector("#kerasui-upload[data-state=done]", timeout=60_000)  # counts and gallery follow in place
    assert dataset.items.filter(label="red").count() == 12
    assert "12" in page.locator("#kerasui-label-chart tbody tr").nth(2).inner_text()
    page.select_option("#kerasui-gallery select[data-filter]", "green")
    sync_api.expect(page.locator("#kerasui-gallery .kerasui-card")).to_have_count(10)
    shoot(page, screenshots, "03-dataset")

    # Validate the model code under the editor.
    page.click("text=Validate the model code")
    page.wait_for_selector(".kerasui-validation .success", timeout=120_000)
    assert "parameters" in page.inner_text(".kerasui-validation .success")

    # Train: the run page polls the API and the chart gains points while the run trains.
    page.click("#train-button")
    page.wait_for_selector("#kerasui-run")
    run = TrainingRun.objects.get(dataset=dataset)
    assert run.seed == 25
    seen, shot = [], False
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = page.get_attribute("#kerasui-run", "data-status")
        points = int(page.get_attribute("#kerasui-run [data-chart=loss] svg", "data-points") or 0)
        seen.append((status, points))
        if status == "running" and points >= 4 and not shot:
            shoot(page, screenshots, "04-run-training")
            shot = True
        if status not in {"queued", "running"}:
            break
        page.wait_for_timeout(250)
    running_points = [points for status, points in seen if status == "running"]
    assert running_points and max(running_points) > min(running_points), seen  # it grew without a reload
    run.refresh_from_db()
    assert run.status == "succeeded", run.error

    # The evaluation arrives without a reload: the confusion matrix as a heatmap, the per-class table.
    page.wait_for_selector("table.kerasui-confusion td[style*=background]", timeout=30_000)
    assert page.locator("table.kerasui-confusion tbody tr").count() == 3
    page.wait_for_selector(".kerasui-log")
    assert "Epoch" in page.inner_text(".kerasui-log")
    shoot(page, screenshots, "05-run-finished")

    # Fix a wrong label from the misclassified gallery in one click.
    card = page.locator(".kerasui-mistakes [data-relabel-item]").first
    card.wait_for()
    item_id = int(card.get_attribute("data-relabel-item"))
    predicted = card.locator("button.kerasui-fix").get_attribute("data-label")
    card.locator("button.kerasui-fix").click()
    page.wait_for_selector(f"[data-relabel-item='{item_id}'].saved")
    assert DataSetItem.objects.get(pk=item_id).label == predicted
    shoot(page, screenshots, "06-run-label-fixed")

    # Test an image: drop it, read the label and its top probabilities.
    page.goto(f"{url}/admin/management/dataset/test/?dataset={dataset.pk}")
    shoot(page, screenshots, "07-test-empty")
    drop_files(page, "#kerasui-test .kerasui-drop", [("blue.png", "image/png", colour_image("blue", seed=4242))])
    page.wait_for_selector("#predicted-label")
    assert page.inner_text("#predicted-label") == "blue"
    assert page.locator(".kerasui-probs li").count() == 3
    assert not page.is_visible("#kerasui-version-row")  # one version: nothing to pick
    shoot(page, screenshots, "08-test-result")

    # With a second version, the test page offers both and predicts with the one picked.
    from tests.runs import install_model

    newer = install_model(dataset, Path(run.model_file.path))
    page.goto(f"{url}/admin/management/dataset/test/?dataset={dataset.pk}")
    page.wait_for_selector("#kerasui-version-row:not([hidden])")
    assert page.locator("#kerasui-version option").count() == 3  # the current one, run N, run N+1
    page.select_option("#kerasui-version", str(run.pk))
    drop_files(page, "#kerasui-test .kerasui-drop", [("blue.png", "image/png", colour_image("blue", seed=4242))])
    page.wait_for_selector(f"#kerasui-test .help a[href$='/trainingrun/{run.pk}/change/']")
    assert page.inner_text("#predicted-label") == "blue" and newer.pk != run.pk

    # The home page now shows the dataset, its balance and its accuracy.
    page.goto(f"{url}/admin/")
    assert "Colours" in page.inner_text("#kerasui-dashboard")
    assert "%" in page.inner_text("#kerasui-dashboard .kerasui-big >> nth=1")
    shoot(page, screenshots, "09-home")
    page.goto(f"{url}/admin/management/trainingrun/")
    shoot(page, screenshots, "10-run-list")

    assert not errors, errors


def _entries(archive: bytes):
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        for name in opened.namelist():
            yield name, opened.read(name)
