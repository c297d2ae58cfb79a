"""Issue 30's small holes: private API answers never cached, PATCH needs what GET needs, compare shows a
dataset's name and model code only to who may view the dataset, health logs under the health report's
rule, and an oversized body is a 4xx without a traceback."""

import logging
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Permission, User
from rest_framework.test import APIClient

from health.models import HealthCheck
from training.services import training_run_create


def client_with(username: str, *codenames: str) -> APIClient:
    user = User.objects.create_user(username, password="a-long-pass-phrase-9")
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = APIClient()
    client.force_authenticate(User.objects.get(pk=user.pk))
    return client


@pytest.mark.parametrize(
    "path",
    ["/api/", "/api/dataset/", "/api/datasetitem/", "/api/users/", "/api/trainingrun/", "/api/healthcheck/{check}/"],
)
def test_every_private_api_answer_says_private_no_store(api, colour_dataset, path):
    check = HealthCheck.objects.create(dataset=colour_dataset, status=HealthCheck.Status.SUCCEEDED)
    response = api.get(path.format(check=check.pk))
    assert response.status_code == 200
    assert response["Cache-Control"] == "private, no-store"
    refused = APIClient().get(path.format(check=check.pk))
    assert refused.status_code == 401 and refused["Cache-Control"] == "private, no-store"


def test_predictions_are_not_cached(api, trained_dataset):
    import base64

    from tests.images import png

    response = api.post("/api/test/", {"dataset": trained_dataset.pk, "image": base64.b64encode(png()).decode()})
    assert response.status_code == 200 and response["Cache-Control"] == "private, no-store"


def test_who_may_patch_an_item_may_also_get_it_as_in_the_admin(colour_dataset):
    item = colour_dataset.items.first()
    changer = client_with("changer", "change_datasetitem")
    patched = changer.patch(f"/api/datasetitem/{item.pk}/", {}, format="json")
    assert patched.status_code == 200
    read = changer.get(f"/api/datasetitem/{item.pk}/")
    assert read.status_code == 200 and read.json() == patched.json()
    assert client_with("nobody").get(f"/api/datasetitem/{item.pk}/").status_code == 403


def test_compare_shows_the_dataset_name_and_code_only_to_who_may_view_the_dataset(colour_dataset):
    first, second = training_run_create(dataset=colour_dataset), None
    first.status = "failed"
    first.save()
    second = training_run_create(dataset=colour_dataset)
    url = f"/api/trainingrun/compare/?ids={first.pk},{second.pk}"
    runs_only = client_with("runs", "view_trainingrun").get(url).json()
    assert runs_only["dataset"] == {"id": colour_dataset.pk, "name": None}
    assert all(run["process"] is None for run in runs_only["runs"])
    assert (
        runs_only["pairs"][0]["code"]["diff"] == "" and "may view the dataset" in runs_only["pairs"][0]["code"]["note"]
    )
    both = client_with("both", "view_trainingrun", "view_dataset").get(url).json()
    assert both["dataset"]["name"] == "Colours" and both["runs"][0]["process"] == first.process


def test_a_health_log_needs_the_health_reports_permissions(colour_dataset, settings):
    log = Path(settings.MEDIA_ROOT) / "logs" / "health_7.log"
    log.parent.mkdir(parents=True)
    log.write_text("checked 30 images of Colours\n")
    run_log = log.with_name("run_3.log")
    run_log.write_text("epoch 1\n")
    runs_only = client_with("runs", "view_trainingrun")
    assert runs_only.get("/media/logs/health_7.log").status_code == 403
    assert runs_only.get("/media/logs/run_3.log").status_code == 200
    health = client_with("health", "view_dataset", "view_datasetitem")
    assert health.get("/media/logs/health_7.log").status_code == 200


def test_a_60_mb_body_is_a_4xx_json_without_a_traceback(api, colour_dataset, caplog):
    body = b'{"dataset": 1, "image": "' + b"A" * (60 * 1024 * 1024) + b'"}'
    assert len(body) > django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    with caplog.at_level(logging.INFO):
        response = api.generic("POST", "/api/test/", body, content_type="application/json")
    assert 400 <= response.status_code < 500 and "detail" in response.json()
    assert "Traceback" not in caplog.text and not any(record.exc_info for record in caplog.records)
