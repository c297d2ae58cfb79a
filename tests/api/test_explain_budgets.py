"""Explanations within budgets (issue 30): a run's heatmaps only for images it evaluated, every heatmap
made (API, Test page, run heatmaps) counted against the explain rate, at most N at once per user and on
the machine; `explain` a strict boolean in JSON."""

import base64

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from serving.explanations import explanation_budget
from tests.admin.test_explanations import mistakes  # noqa: F401  (a fixture)
from tests.api.test_explanations import square_png


@pytest.fixture(autouse=True)
def own_locks(settings, tmp_path):
    settings.KERASUI_LOCK_DIR = tmp_path / "locks"


def explain_payload(dataset) -> dict:
    return {"image": base64.b64encode(square_png()).decode(), "dataset": dataset.pk, "explain": True}


@pytest.mark.parametrize("value", ["yes", "true", "1", 1, 0])
def test_explain_in_json_is_a_boolean_or_a_400_naming_it(api, trained_dataset, value):
    response = api.post("/api/test/", explain_payload(trained_dataset) | {"explain": value}, format="json")
    assert response.status_code == 400, response.content
    assert "must be true or false" in response.json()["explain"][0]


@pytest.mark.parametrize(("value", "explained"), [("true", True), ("1", True), ("false", False), ("0", False)])
def test_explain_in_a_form_takes_true_false_1_or_0(api, trained_dataset, value, explained):
    form = {"image": SimpleUploadedFile("s.png", square_png()), "dataset": trained_dataset.pk, "explain": value}
    response = api.post("/api/test/", form, format="multipart")
    assert response.status_code == 200 and ("explanation" in response.json()) == explained
    form["image"] = SimpleUploadedFile("s.png", square_png())
    assert api.post("/api/test/", form | {"explain": "yes"}, format="multipart").status_code == 400


def test_a_runs_heatmap_is_only_for_the_images_it_evaluated(api, mistakes):  # noqa: F811
    run, by_label = mistakes
    trained_on = run.splits["train"][0]
    response = api.get(f"/api/trainingrun/{run.pk}/explain/{trained_on}/")
    assert response.status_code == 404 and "evaluated" in response.json()["item"][0]
    assert api.get(f"/api/trainingrun/{run.pk}/explain/{by_label['red'][0].pk}/").status_code == 200


def test_a_runs_heatmaps_count_against_the_explain_rate_but_a_kept_one_does_not(api, mistakes, settings):  # noqa: F811
    run, by_label = mistakes
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "explain": "1/day"},
    }
    first = f"/api/trainingrun/{run.pk}/explain/{by_label['red'][0].pk}/"
    assert api.get(first).status_code == 200
    assert api.get(first).status_code == 200  # drawn once, then served from its file
    refused = api.get(f"/api/trainingrun/{run.pk}/explain/{by_label['red'][1].pk}/")
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert "KERASUI_THROTTLE_EXPLAIN" in refused.json()["item"][0]
    # The predict route shares the same count.
    prediction = api.post("/api/test/", explain_payload(run.dataset), format="json")
    assert prediction.status_code == 429 and "KERASUI_THROTTLE_EXPLAIN" in prediction.json()["explain"][0]


def test_one_explanation_at_once_per_user_and_n_on_the_machine(api, admin_user, api_as, trained_dataset, settings):
    settings.KERASUI_MAX_EXPLANATIONS_PER_USER = 1
    settings.KERASUI_MAX_CONCURRENT_EXPLANATIONS = 2
    with explanation_budget(user_id=admin_user.pk):  # the administrator's explanation is being made
        refused = api.post("/api/test/", explain_payload(trained_dataset), format="json")
        assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
        assert "KERASUI_MAX_EXPLANATIONS_PER_USER" in refused.json()["explain"][0]
        assert (
            api.post("/api/test/", explain_payload(trained_dataset) | {"explain": False}, format="json").status_code
            == 200
        )
        other = api_as("view_dataset")
        assert other.post("/api/test/", explain_payload(trained_dataset), format="json").status_code == 200
        with explanation_budget(user_id=None):  # the machine's second slot taken too
            third = api_as("view_dataset")
            busy = third.post("/api/test/", explain_payload(trained_dataset), format="json")
            assert busy.status_code == 429 and "KERASUI_MAX_CONCURRENT_EXPLANATIONS" in busy.json()["explain"][0]
    assert api.post("/api/test/", explain_payload(trained_dataset), format="json").status_code == 200


def test_the_test_pages_explanations_share_the_rate(admin_client, admin_user, trained_dataset, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "explain": "1/day"},
    }
    api = APIClient()
    api.force_authenticate(admin_user)
    assert api.post("/api/test/", explain_payload(trained_dataset), format="json").status_code == 200
    image = SimpleUploadedFile("s.png", square_png())
    page = admin_client.post(
        "/admin/management/dataset/test/", {"dataset": trained_dataset.pk, "image": image, "explain": "on"}
    ).content.decode()
    assert "KERASUI_THROTTLE_EXPLAIN" in page and 'class="kerasui-explanation"' not in page
