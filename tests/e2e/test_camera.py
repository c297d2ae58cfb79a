"""The camera in Chromium with its fake camera (a test pattern, granted without asking), on desktop and phone
sizes with no console error: pictures into a chosen label or unlabelled on the labelling page and on the
dataset page (one component, camera.js, through the same upload as any image), and the Test page predicting
on the camera's picture live, one request in flight at a time, stopping when unticked or hidden."""

import time

import pytest

from management.models import DataSetItem
from tests.e2e.conftest import CHROMIUM, DESKTOP, PHONE, open_page
from tests.e2e.test_labelling_page import shown

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]
pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -r requirements-dev.txt)")

SIZES = pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])


def take_two_pictures(page) -> None:
    """Start the camera, take one picture into 'green' and one unlabelled."""
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


def fits(page, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert page.locator("#kerasui-camera-video, #kerasui-live-video").first.bounding_box()["width"] <= width


@SIZES
def test_pictures_from_the_camera_go_into_the_chosen_label_or_unlabelled(
    browser, live_server, admin_user, to_label, size
):
    before = set(DataSetItem.objects.filter(dataset=to_label).values_list("pk", flat=True))
    context, page, errors = open_page(browser, live_server, admin_user, size)
    page.goto(f"{live_server.url}/admin/management/dataset/{to_label.pk}/label/")
    shown(page)
    take_two_pictures(page)
    new = DataSetItem.objects.filter(dataset=to_label).exclude(pk__in=before).order_by("pk")
    assert [item.label for item in new] == ["green", ""]
    assert all(item.image.name.endswith(".jpg") and item.original_name.startswith("camera-") for item in new)
    assert "31 of 44 labelled" in page.inner_text("#kerasui-label-progress")  # the page counted them
    fits(page, size["width"])
    context.close()
    assert errors == []


@SIZES
def test_the_dataset_page_takes_pictures_with_the_same_camera(browser, live_server, admin_user, trained_dataset, size):
    before = set(DataSetItem.objects.filter(dataset=trained_dataset).values_list("pk", flat=True))
    context, page, errors = open_page(browser, live_server, admin_user, size)
    page.goto(f"{live_server.url}/admin/management/dataset/{trained_dataset.pk}/change/")
    page.wait_for_selector("#kerasui-gallery .kerasui-card img")
    take_two_pictures(page)
    new = list(DataSetItem.objects.filter(dataset=trained_dataset).exclude(pk__in=before).order_by("pk"))
    assert [item.label for item in new] == ["green", ""]
    assert all(item.original_name.startswith("camera-") for item in new)
    # The gallery (newest first) and the counts follow, without reloading the page.
    page.wait_for_selector(f"#kerasui-gallery .kerasui-card[data-item='{new[1].pk}']")
    page.wait_for_selector("#kerasui-label-chart tbody tr:has-text('green'):has-text('11')")
    fits(page, size["width"])
    context.close()
    assert errors == []


@SIZES
def test_the_test_page_predicts_the_cameras_picture_live_one_request_at_a_time(
    browser, live_server, admin_user, trained_dataset, size
):
    context, page, errors = open_page(browser, live_server, admin_user, size)
    page.goto(f"{live_server.url}/admin/management/dataset/test/?dataset={trained_dataset.pk}")
    in_flight, most, started = [0], [0], []

    def sent(request):
        if request.method == "POST" and "/dataset/test/" in request.url:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
            started.append(time.monotonic())

    def ended(request):
        if request.method == "POST" and "/dataset/test/" in request.url:
            in_flight[0] -= 1

    page.on("request", sent)
    page.on("requestfinished", ended)
    page.on("requestfailed", ended)
    page.check("#kerasui-live")
    page.wait_for_selector("#kerasui-live-status:text('3 pictures predicted')", timeout=30_000)
    assert page.inner_text("#predicted-label") in {"red", "green", "blue", "unknown"}
    assert page.locator(".kerasui-preview").get_attribute("src").startswith("blob:")
    assert page.locator(".kerasui-explanation").count() == 0  # live frames skip the heatmap, ticked or not
    brightest = page.evaluate(
        """() => { const image = document.querySelector('.kerasui-preview'), canvas = document.createElement('canvas');
                   canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;
                   const context = canvas.getContext('2d'); context.drawImage(image, 0, 0);
                   const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
                   return pixels.reduce((most, value, i) => (i % 4 < 3 && value > most ? value : most), 0); }"""
    )
    assert brightest > 64  # the camera's picture, not a black frame
    assert most[0] == 1  # never two at once
    gaps = [later - earlier for earlier, later in zip(started, started[1:], strict=False)]
    assert gaps and min(gaps) >= 0.8  # about one a second, not as fast as the server answers
    fits(page, size["width"])

    page.uncheck("#kerasui-live")
    time.sleep(0.3)
    sent_so_far = len(started)
    time.sleep(1.5)
    assert len(started) == sent_so_far and page.locator("#kerasui-live-video[hidden]").count() == 1

    page.check("#kerasui-live")
    page.wait_for_selector("#kerasui-live-status:text('1 picture predicted')", timeout=30_000)
    page.evaluate(
        "Object.defineProperty(document, 'hidden', {value: true, configurable: true});"
        "document.dispatchEvent(new Event('visibilitychange'))"
    )
    assert not page.is_checked("#kerasui-live")
    time.sleep(0.3)
    sent_so_far = len(started)
    time.sleep(1.5)
    assert len(started) == sent_so_far and most[0] == 1
    context.close()
    assert errors == []
