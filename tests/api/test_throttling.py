"""Request rates: per user (per address when anonymous), predictions counted apart from the rest;
beyond the rate, 429 JSON with Retry-After."""

import base64

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from tests.images import png


@pytest.fixture
def tiny_rates(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"api": "3/min", "predict": "2/min"},
    }


def client_for(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def assert_throttled(response):
    assert response.status_code == 429, response.content[:300]
    assert 0 < int(response["Retry-After"]) <= 60
    assert "throttled" in response.json()["detail"]


def test_a_user_beyond_the_api_rate_gets_429_and_others_do_not(tiny_rates, admin_user):
    first = client_for(admin_user)
    for _ in range(3):
        assert first.get("/api/dataset/").status_code == 200
    assert_throttled(first.get("/api/dataset/"))
    assert_throttled(first.post("/api/dataset/", {"name": "Late"}, format="json"))
    other = client_for(User.objects.create_superuser("other", password="a-long-pass-phrase-9"))
    assert other.get("/api/dataset/").status_code == 200


def test_predictions_have_their_own_rate(tiny_rates, trained_dataset, admin_user):
    client = client_for(admin_user)
    for _ in range(3):
        client.get("/api/dataset/")
    assert client.get("/api/dataset/").status_code == 429
    payload = {"dataset": trained_dataset.pk, "image": base64.b64encode(png()).decode()}
    for _ in range(2):
        assert client.post("/api/test/", payload, format="json").status_code == 200
    assert_throttled(client.post("/api/test/", payload, format="json"))


def test_anonymous_clients_are_counted_by_address_and_health_is_never_throttled(tiny_rates, db):
    client = APIClient()
    for _ in range(3):
        assert client.get("/api/schema/?format=json").status_code == 200
    assert_throttled(client.get("/api/schema/?format=json"))
    assert client.get("/api/schema/?format=json", REMOTE_ADDR="10.0.0.9").status_code == 200
    # A forged X-Forwarded-For does not make a new client: no proxy is configured.
    assert client.get("/api/schema/?format=json", HTTP_X_FORWARDED_FOR="10.9.9.9").status_code == 429
    for _ in range(10):
        assert client.get("/api/health/").status_code == 200


def test_the_default_rates_are_generous(settings):
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    assert rates == {"api": "1200/min", "predict": "6000/min"}
