"""Decoded-pixel budgets (issue 30): per image, per request (a batch's sum) and per user per minute,
read from the headers before anything is decoded; 413 or 429 JSON naming the limit and its setting."""

import base64

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from management import budgets
from tests.images import png
from tests.ml.test_pixel_budget import gif_with_screen


@pytest.fixture(autouse=True)
def fresh_counts():
    budgets.user_pixels_reset()
    yield
    budgets.user_pixels_reset()


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if the prediction service decodes anything."""

    def decode(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr("serving.prediction.load_image", decode)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_batch_over_the_request_budget_is_a_413_naming_the_setting_before_decoding(
    api, trained_dataset, settings, no_decoding
):
    settings.KERASUI_MAX_REQUEST_PIXELS = 1000
    images = [b64(png(size=(16, 16))) for _ in range(4)]  # 4 x 256 = 1,024 pixels
    response = api.post("/api/test/", {"dataset": trained_dataset.pk, "images": images}, format="json")
    assert response.status_code == 413, response.content
    answer = response.json()
    assert answer["setting"] == "KERASUI_MAX_REQUEST_PIXELS" and answer["limit"] == 1000
    assert "1,024 pixels; at most 1,000 per request (KERASUI_MAX_REQUEST_PIXELS)" in answer["images"][0]


def test_many_tiny_gifs_with_huge_screens_are_refused_from_their_headers(api, trained_dataset, no_decoding):
    bomb = b64(gif_with_screen(8000, 5000))  # 40 megapixels each: over the default per-image budget
    response = api.post("/api/test/", {"dataset": trained_dataset.pk, "images": [bomb] * 64}, format="json")
    assert response.status_code == 413
    assert response.json()["setting"] == "KERASUI_MAX_IMAGE_PIXELS"
    smaller = b64(gif_with_screen(5000, 4000))  # 20 megapixels each: 6 of them are over the request budget
    response = api.post("/api/test/", {"dataset": trained_dataset.pk, "images": [smaller] * 6}, format="json")
    assert response.status_code == 413 and response.json()["setting"] == "KERASUI_MAX_REQUEST_PIXELS"


def test_a_user_over_their_minute_is_a_429_with_retry_after_and_others_go_on(api, api_as, trained_dataset, settings):
    settings.KERASUI_MAX_USER_PIXELS_PER_MINUTE = 600
    payload = {"dataset": trained_dataset.pk, "image": b64(png(size=(16, 16)))}
    assert api.post("/api/test/", payload, format="json").status_code == 200
    assert api.post("/api/test/", payload, format="json").status_code == 200  # 512 of 600
    refused = api.post("/api/test/", payload, format="json")
    assert refused.status_code == 429 and 0 < int(refused["Retry-After"]) <= 61
    assert refused.json()["setting"] == "KERASUI_MAX_USER_PIXELS_PER_MINUTE"
    # A refused request decoded nothing and spends nothing: a smaller image still fits the minute.
    assert api.post("/api/test/", payload | {"image": b64(png(size=(8, 8)))}, format="json").status_code == 200
    other = api_as("view_dataset")
    assert other.post("/api/test/", payload, format="json").status_code == 200


def test_adding_an_item_spends_the_same_budgets(api, trained_dataset, settings):
    settings.KERASUI_MAX_USER_PIXELS_PER_MINUTE = 300
    form = lambda: {  # noqa: E731
        "dataset": trained_dataset.pk,
        "label": "red",
        "image": SimpleUploadedFile("red.png", png(size=(16, 16))),
    }
    assert api.post("/api/datasetitem/", form()).status_code == 201
    refused = api.post("/api/datasetitem/", form())
    assert refused.status_code == 429 and refused.json()["setting"] == "KERASUI_MAX_USER_PIXELS_PER_MINUTE"


def test_a_zip_entry_over_the_image_budget_is_skipped_naming_the_setting(api, trained_dataset):
    from tests.images import zip_of

    archive = zip_of({"red/bomb.gif": gif_with_screen(8000, 5000), "red/ok.png": png()})
    response = api.post(f"/api/dataset/{trained_dataset.pk}/upload/", {"file": SimpleUploadedFile("a.zip", archive)})
    assert response.status_code in {201, 202}, response.content
    answer = response.json()
    if response.status_code == 201:  # imported in the request (before zip imports became jobs)
        assert answer["added"] == 1
        [skipped] = answer["skipped"]
        assert skipped["name"] == "red/bomb.gif" and "KERASUI_MAX_IMAGE_PIXELS" in skipped["reason"]
