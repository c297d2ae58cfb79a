"""The Prometheus endpoint: the series operators expect, for staff or a token with the metrics scope."""

import base64
import re
import secrets
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_application_model
from rest_framework.test import APIClient

from tests.images import colour_image
from training.services import training_run_create


def value(text: str, series: str) -> float:
    """The value of one series (name and labels exactly as exposed), 0 when absent."""
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def token_client(user: User, scope: str) -> APIClient:
    application = get_application_model().objects.create(
        name="prometheus",
        user=user,
        client_type="confidential",
        authorization_grant_type="client-credentials",
    )
    token = get_access_token_model().objects.create(
        user=user,
        application=application,
        token=secrets.token_urlsafe(24),
        expires=timezone.now() + timedelta(hours=1),
        scope=scope,
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.token}")
    return client


def test_metrics_count_requests_predictions_loads_models_and_the_training_queue(admin_client, trained_dataset):
    before = admin_client.get("/metrics").content.decode()
    image = base64.b64encode(colour_image("blue", seed=4)).decode()
    for _ in range(3):
        response = admin_client.post(
            "/api/test/", {"image": image, "dataset": trained_dataset.pk}, content_type="application/json"
        )
        assert response.status_code == 200
    training_run_create(dataset=trained_dataset, enqueue=False)

    response = admin_client.get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    requests = 'kerasui_http_requests_total{endpoint="predict",method="POST",status="200"}'
    assert value(text, requests) - value(before, requests) == 3
    assert 'kerasui_http_request_duration_seconds_count{endpoint="predict",method="POST"}' in text
    images = 'kerasui_predicted_images_total{engine="onnxruntime"}'
    assert value(text, images) - value(before, images) == 3
    assert 'kerasui_prediction_duration_seconds_count{engine="onnxruntime"}' in text
    assert value(text, 'kerasui_model_loads_total{engine="onnxruntime",trigger="request"}') >= 1
    assert value(text, "kerasui_cached_models") == 1
    assert "kerasui_tensorflow_imported" in text
    assert value(text, 'kerasui_training_runs{status="queued"}') == 1
    assert value(text, 'kerasui_training_runs{status="running"}') == 0


def test_metrics_are_for_staff_or_a_token_with_the_metrics_scope(client, db, django_user_model):
    assert client.get("/metrics").status_code == 401
    member = django_user_model.objects.create_user("member", password="pw-member-1")
    client.force_login(member)
    assert client.get("/metrics").status_code == 403

    staff = django_user_model.objects.create_user("operator", password="pw-operator-1", is_staff=True)
    refused = token_client(staff, "read write predict").get("/metrics")
    assert refused.status_code == 403 and "lacks the 'metrics' scope" in refused.json()["detail"]
    assert token_client(staff, "metrics").get("/metrics", HTTP_ACCEPT="text/plain").status_code == 200
    assert token_client(member, "metrics").get("/metrics").status_code == 403

    basic = APIClient()
    basic.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"operator:pw-operator-1").decode())
    assert basic.get("/metrics").status_code == 200


@pytest.mark.parametrize("method", ["BREW", "get"])
def test_an_unknown_method_does_not_add_a_label_value(admin_client, method):
    admin_client.generic(method, "/api/health/")
    text = admin_client.get("/metrics").content.decode()
    assert f'method="{method}"' not in text
