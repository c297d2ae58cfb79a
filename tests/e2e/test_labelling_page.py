"""Dataset → Label in Chromium, driven by the keyboard only: least sure first, Enter accepts the suggestion,
number keys pick a label, Backspace undoes, X skips, arrows move, D deletes after a confirm; on a phone too."""

import io
import time

import pytest

from datasets.services import dataset_item_create
from management.models import DataSet, DataSetItem, Suggestion
from tests.e2e.conftest import CHROMIUM, DESKTOP, PHONE, open_page
from tests.images import colour_image

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]
pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -r requirements-dev.txt)")


def shown(page) -> int:
    page.wait_for_selector("#kerasui-label-image[data-item]")
    return int(page.get_attribute("#kerasui-label-image", "data-item"))


def showing(page, pk: int) -> None:
    page.wait_for_selector(f"#kerasui-label-image[data-item='{pk}']")


def label_of(pk: int) -> str | None:
    return DataSetItem.objects.filter(pk=pk).values_list("label", flat=True).first()


def wait_for(condition, seconds: float = 10.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_labelling_from_the_keyboard_least_sure_first(browser, live_server, admin_user, to_label):
    dataset = to_label
    order = list(
        Suggestion.objects.filter(dataset=dataset).order_by("margin", "item_id").values_list("item_id", "label")
    )
    context, page, errors = open_page(browser, live_server, admin_user, DESKTOP)
    page.goto(f"{live_server.url}/admin/management/dataset/{dataset.pk}/label/")
    assert shown(page) == order[0][0]  # the least sure first
    assert "30 of 42 labelled" in page.inner_text("#kerasui-label-progress")

    page.keyboard.press("Enter")  # accept the suggestion
    wait_for(lambda: label_of(order[0][0]) == order[0][1])
    showing(page, order[1][0])

    second = page.locator("#kerasui-label-buttons button").nth(1).get_attribute("data-label")
    page.keyboard.press("2")  # the second button's label
    wait_for(lambda: label_of(order[1][0]) == second)
    showing(page, order[2][0])  # the page moves on once the server has answered, a moment after the write

    page.keyboard.press("Backspace")  # undo: unlabelled again, and shown again
    wait_for(lambda: label_of(order[1][0]) == "")
    showing(page, order[1][0])

    page.keyboard.press("x")  # skip
    showing(page, order[2][0])
    assert label_of(order[1][0]) == ""
    page.keyboard.press("ArrowLeft")
    showing(page, order[1][0])
    page.keyboard.press("ArrowRight")
    showing(page, order[2][0])

    page.once("dialog", lambda dialog: dialog.dismiss())
    page.keyboard.press("d")  # refused at the confirm: kept
    assert shown(page) == order[2][0]
    page.once("dialog", lambda dialog: dialog.accept())
    page.keyboard.press("d")
    wait_for(lambda: not DataSetItem.objects.filter(pk=order[2][0]).exists())
    showing(page, order[3][0])

    # The rest by Enter alone, timed: the labelling rate with suggestions.
    started = time.monotonic()
    for pk, _ in order[3:]:
        showing(page, pk)
        page.keyboard.press("Enter")
    page.wait_for_selector("#kerasui-label-empty:not([hidden])")
    seconds = time.monotonic() - started
    count = len(order) - 3
    print(f"labelled {count} images by keyboard in {seconds:.2f} s: {60 * count / seconds:.0f} per minute")
    assert all(label_of(pk) == label for pk, label in order[3:])
    assert "40 of 41 labelled" in page.inner_text("#kerasui-label-progress")
    context.close()
    assert errors == []


def test_the_labelling_page_on_a_phone_without_the_permission_to_label(
    browser,
    live_server,
    to_label,
    django_user_model,
):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", password="password", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__in=["view_dataset", "view_datasetitem"]))
    context, page, errors = open_page(browser, live_server, viewer, PHONE)
    page.goto(f"{live_server.url}/admin/management/dataset/{to_label.pk}/label/")
    first = shown(page)
    box = page.locator("#kerasui-label-image").bounding_box()
    assert box["width"] <= 390 and box["y"] + box["height"] < 844
    assert page.locator("#kerasui-label-buttons button[disabled]").count() >= 3
    assert page.locator("#kerasui-grid, #kerasui-grid-open").count() == 0  # no grid without the permission
    page.keyboard.press("g")
    assert page.locator("#kerasui-label-card").is_visible()
    page.keyboard.press("Enter")
    time.sleep(0.5)
    assert label_of(first) == "" and shown(page) == first
    response = page.request.post(
        f"{live_server.url}/admin/management/dataset/{to_label.pk}/label/set/", form={"ids": str(first), "label": "red"}
    )
    assert response.status in {403, 400} and label_of(first) == ""
    context.close()
    assert errors == []
    assert DataSet.objects.get(pk=to_label.pk)


def test_accepting_every_confident_suggestion_at_once(browser, live_server, admin_user, to_label):
    # The cut between the sure and the unsure: the blends are usually under 90 %, but the tiny model is
    # sometimes sure of them too, so the cut is the percent nearest 90 that leaves some images on each side.
    confidence = dict(Suggestion.objects.filter(dataset=to_label).values_list("item_id", "confidence"))
    cuts = [p for p in range(50, 101) if 0 < sum(value >= p / 100 for value in confidence.values()) < len(confidence)]
    assert cuts, confidence
    percent = min(cuts, key=lambda p: abs(p - 90))
    sure = {item for item, value in confidence.items() if value >= percent / 100}
    unsure = set(confidence) - sure
    assert sure and unsure, confidence
    context, page, errors = open_page(browser, live_server, admin_user, DESKTOP)
    page.goto(f"{live_server.url}/admin/management/dataset/{to_label.pk}/label/")
    shown(page)
    page.fill("#kerasui-label-min", str(percent))
    page.click("#kerasui-label-accept-all")
    page.wait_for_selector(f"#kerasui-label-accepted:text('{len(sure)} labelled')")
    assert not DataSetItem.objects.filter(pk__in=sure, label="").exists()
    assert set(DataSetItem.objects.filter(dataset=to_label, label="").values_list("pk", flat=True)) == unsure
    assert shown(page) in unsure  # the queue goes on with the unsure ones
    context.close()
    assert errors == []


def test_images_dropped_as_unlabelled_on_the_dataset_page(browser, live_server, admin_user, colour_dataset):
    from tests.e2e.test_browser import drop_files

    context, page, errors = open_page(browser, live_server, admin_user, DESKTOP)
    page.goto(f"{live_server.url}/admin/management/dataset/{colour_dataset.pk}/change/")
    page.wait_for_selector("#kerasui-upload .kerasui-drop")
    page.check("[data-upload-unlabelled]")
    drop_files(page, "#kerasui-upload .kerasui-drop", [("new.png", "image/png", colour_image("red", seed=77))])
    page.wait_for_selector(".kerasui-upload-results :text('unlabelled: 1')")
    assert list(
        DataSetItem.objects.filter(dataset=colour_dataset, original_name="new.png").values_list("label", flat=True)
    ) == [""]
    context.close()
    assert errors == []


def test_past_the_first_page_the_queue_fetches_the_next(browser, live_server, admin_user):
    from tests.images import png

    dataset = DataSet.objects.create(name="Many", image_size=16)
    dataset_item_create(dataset=dataset, label="cat", file=io.BytesIO(png()))
    for number in range(103):
        dataset_item_create(dataset=dataset, label="", file=io.BytesIO(png(color=(number, 0, 0))))
    context, page, errors = open_page(browser, live_server, admin_user, DESKTOP)
    page.goto(f"{live_server.url}/admin/management/dataset/{dataset.pk}/label/")
    for _ in range(100):
        current = shown(page)
        page.keyboard.press("1")
        page.wait_for_selector(f"#kerasui-label-image:not([data-item='{current}'])")
    # The first page is labelled: the next three come from the server, not "nothing left".
    left = set(DataSetItem.objects.filter(dataset=dataset, label="").values_list("pk", flat=True))
    assert len(left) == 3 and shown(page) in left
    assert "101 of 104 labelled" in page.inner_text("#kerasui-label-progress")
    context.close()
    assert errors == []


@pytest.mark.parametrize("size", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_grid_mode_accepts_the_ticked_suggestions_at_once_from_the_keyboard(
    browser, live_server, admin_user, to_label, size
):
    # The 12 unlabelled images in the order they came: 3 red, 3 green, 3 blue, 3 blends (no right answer).
    items = list(DataSetItem.objects.filter(dataset=to_label, label="").order_by("pk").values_list("pk", flat=True))
    truth = dict(zip(items, ["red"] * 3 + ["green"] * 3 + ["blue"] * 3 + [None] * 3, strict=True))
    suggested = dict(Suggestion.objects.filter(dataset=to_label).values_list("item_id", "label"))
    context, page, errors = open_page(browser, live_server, admin_user, size)
    page.goto(f"{live_server.url}/admin/management/dataset/{to_label.pk}/label/")
    shown(page)
    started = time.monotonic()
    page.keyboard.press("g")
    page.wait_for_selector("#kerasui-grid-tiles input:focus")
    tiles = [
        int(pk)
        for pk in page.eval_on_selector_all("#kerasui-grid-tiles input", "boxes => boxes.map(b => b.dataset.item)")
    ]
    confidences = dict(Suggestion.objects.filter(dataset=to_label).values_list("item_id", "confidence"))
    assert sorted(tiles) == sorted(items) and [confidences[pk] for pk in tiles] == sorted(
        confidences.values(), reverse=True
    )
    wrong = {pk for pk in tiles if suggested[pk] != truth[pk]}
    assert wrong  # the blends at least
    for pk in tiles:  # a person's pass over the grid: Space unticks a wrong one, the arrow moves on
        if pk in wrong:
            page.keyboard.press(" ")
        page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    page.wait_for_selector(f"#kerasui-grid-status:text('{len(tiles) - len(wrong)} accepted')")
    seconds = time.monotonic() - started
    print(
        f"grid: {len(tiles) - len(wrong)} images accepted ({len(wrong)} unticked) in {seconds:.2f} s: "
        f"{60 * len(tiles) / seconds:.0f} images looked at per minute"
    )
    labels = dict(DataSetItem.objects.filter(pk__in=items).values_list("pk", "label"))
    assert all(labels[pk] == suggested[pk] for pk in tiles if pk not in wrong)
    assert all(labels[pk] == "" for pk in wrong)  # left for one at a time
    assert page.locator("#kerasui-grid-tiles input").count() == 0  # the unticked are not shown again
    assert f"{30 + len(tiles) - len(wrong)} of 42 labelled" in page.inner_text("#kerasui-label-progress")
    assert page.evaluate("document.documentElement.scrollWidth") <= size["width"]
    page.keyboard.press("Escape")  # back to one at a time: the unticked ones are there
    assert shown(page) in wrong
    context.close()
    assert errors == []
