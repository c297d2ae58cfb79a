"""/api/test/ with `"explain": true`: the usual answer plus a heatmap PNG of the image's size; anything
but a boolean is a 400 naming `explain`; explanations have their own rate."""

import base64
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from tests.images import colour_image


def square_png(size=(40, 30), square=(8, 6, 24, 20), colour=(220, 40, 40), background=(40, 200, 50)) -> bytes:
    image = Image.new("RGB", size, background)
    image.paste(colour, square)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def decoded(explanation: dict) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(explanation["png_base64"])))


def test_explain_true_adds_a_heatmap_of_the_image_to_the_usual_answer(api, trained_dataset):
    payload = {"image": base64.b64encode(square_png()).decode(), "dataset": trained_dataset.pk, "explain": True}
    response = api.post("/api/test/", payload, format="json")
    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["result"] in answer["probabilities"] and answer["run"] == trained_dataset.current_run_id
    explanation = answer["explanation"]
    assert explanation["method"] == "occlusion" and explanation["label"] == answer["result"]
    heatmap = decoded(explanation)
    assert heatmap.format == "PNG" and heatmap.size == (40, 30)


def test_explain_in_a_multipart_form_and_explain_false(api, trained_dataset):
    upload = SimpleUploadedFile("square.png", square_png(), content_type="image/png")
    form = {"image": upload, "dataset": trained_dataset.pk, "explain": "true"}
    answer = api.post("/api/test/", form, format="multipart").json()
    assert decoded(answer["explanation"]).size == (40, 30)
    plain = {"image": base64.b64encode(colour_image("red", seed=1)).decode(), "dataset": trained_dataset.pk}
    for extra in ({}, {"explain": False}):
        answer = api.post("/api/test/", plain | extra, format="json").json()
        assert answer["result"] == "red" and "explanation" not in answer


@pytest.mark.parametrize("value", ["maybe", 7, [True], {"x": 1}, None])
def test_an_explain_that_is_not_a_boolean_is_a_400_naming_it(api, trained_dataset, value):
    payload = {"image": base64.b64encode(square_png()).decode(), "dataset": trained_dataset.pk, "explain": value}
    response = api.post("/api/test/", payload, format="json")
    assert response.status_code == 400, response.content
    assert "explain" in response.json()


def test_explaining_a_batch_is_refused_naming_explain(api, trained_dataset):
    image = base64.b64encode(square_png()).decode()
    payload = {"images": [image, image], "dataset": trained_dataset.pk, "explain": True}
    response = api.post("/api/test/", payload, format="json")
    assert response.status_code == 400 and "explain" in response.json()


def test_explanations_have_their_own_rate_and_plain_predictions_go_on(settings, api, trained_dataset):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"api": "100/day", "predict": "100/day", "explain": "1/day"},
    }
    payload = {"image": base64.b64encode(square_png()).decode(), "dataset": trained_dataset.pk}
    assert api.post("/api/test/", payload | {"explain": True}, format="json").status_code == 200
    refused = api.post("/api/test/", payload | {"explain": True}, format="json")
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert api.post("/api/test/", payload, format="json").status_code == 200
