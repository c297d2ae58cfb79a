"""What the browser tests of the dataset, labelling and camera pages share: one Chromium per module (its fake
camera granted without asking, for getUserMedia) and a logged-in page that collects console and page errors."""

import io
from pathlib import Path

import pytest

from datasets.services import dataset_item_create
from jobs.process import job_execute
from management.models import SuggestionJob
from tests.images import colour_image
from tests.labelling.test_suggestions import MIXED, mixed_image

CHROMIUM = Path("/usr/bin/chromium")
CAMERA_FLAGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
DESKTOP = {"width": 1400, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium for the module (skipped, saying why, without it or without playwright)."""
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (requirements-dev.txt)")
    # Playwright's sync API runs an event loop in this thread; the ORM calls of the tests stay synchronous.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_api.sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", *CAMERA_FLAGS])
            yield chromium
            chromium.close()


@pytest.fixture
def to_label(trained_dataset):
    """The trained colour dataset with 12 unlabelled images (3 red, 3 green, 3 blue, 3 blends, in this order)
    and their suggestions."""
    images = [colour_image(name, seed=700 + n) for name in ("red", "green", "blue") for n in range(3)]
    images += [mixed_image(MIXED[n % 2], seed=n) for n in range(3)]
    for data in images:
        dataset_item_create(dataset=trained_dataset, label="", file=io.BytesIO(data))
    job = SuggestionJob.objects.get(dataset=trained_dataset, status="queued")  # queued by their arrival
    assert job_execute(kind="suggestions", job_id=job.pk, worker="test:1").status == "succeeded"
    return trained_dataset


def open_page(browser, live_server, user, size):
    """A new context at `size` with `user` logged in (password "password"): (context, page, errors), where
    errors collects every console error and uncaught page error."""
    context = browser.new_context(viewport=size)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.set_default_timeout(20_000)
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    return context, page, errors
