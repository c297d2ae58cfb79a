"""Pictures from a camera on the labelling page, in Chromium with its fake camera: into a chosen label or
unlabelled, through the same upload as any image; on desktop and phone sizes, with no console error."""

from pathlib import Path

import pytest

from datasets.models import DataSetItem
from tests.e2e.test_labelling_page import open_page, shown, to_label  # noqa: F401 - the labelling page's fixture

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]
pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -r requirements-dev.txt)")


@pytest.fixture(scope="module")
def camera_browser():
    """Chromium with its fake camera (a test pattern) granted without asking."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=str(CHROMIUM),
                args=["--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"],
            )
            yield chromium
            chromium.close()


@pytest.mark.parametrize(
    "size", [{"width": 1400, "height": 900}, {"width": 390, "height": 844}], ids=["desktop", "phone"]
)
def test_pictures_from_the_camera_go_into_the_chosen_label_or_unlabelled(
    camera_browser,
    live_server,
    admin_user,
    to_label,  # noqa: F811
    size,
):
    before = set(DataSetItem.objects.filter(dataset=to_label).values_list("pk", flat=True))
    context, page, errors = open_page(camera_browser, live_server, admin_user, size)
    page.goto(f"{live_server.url}/admin/management/dataset/{to_label.pk}/label/")
    shown(page)
    page.click("#kerasui-camera summary")
    page.click("#kerasui-camera-start")
    page.wait_for_selector("#kerasui-camera-shoot:not([disabled])")
    page.wait_for_selector("#kerasui-camera-video:not([hidden])")
    page.select_option("#kerasui-camera-label", "green")
    page.click("#kerasui-camera-shoot")
    page.wait_for_selector("#kerasui-camera-status:text('1 taken')")
    page.select_option("#kerasui-camera-label", "")
    page.click("#kerasui-camera-shoot")
    page.wait_for_selector("#kerasui-camera-status:text('2 taken')")
    new = DataSetItem.objects.filter(dataset=to_label).exclude(pk__in=before).order_by("pk")
    assert [item.label for item in new] == ["green", ""]
    assert all(item.image.name.endswith(".jpg") and item.original_name.startswith("camera-") for item in new)
    context.close()
    assert errors == []
