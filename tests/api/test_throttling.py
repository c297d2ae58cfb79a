"""Request rates: per user (per address when anonymous), predictions counted apart from the rest;
beyond the rate, 429 JSON with Retry-After."""

import base64
import io
import os
import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from datasets.models import DataSet
from tests.images import png

# Queries of a bearer request between the throttle's leases (the token with its user; for a dataset, the
# dataset with its current run, its label counts and its latest run): not one counts the request.
QUERIES_BEARER_ROOT = 3
QUERIES_BEARER_DATASET = 4


@pytest.fixture
def tiny_rates(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"api": "3/day", "predict": "2/day"},
    }


def client_for(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def assert_throttled(response):
    assert response.status_code == 429, response.content[:300]
    assert 0 < int(response["Retry-After"]) <= 24 * 3600
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


def test_scrapes_of_metrics_have_their_own_rate(settings, admin_user):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"api": "3/day", "predict": "2/day", "metrics": "2/day"},
    }
    client = client_for(admin_user)
    for _ in range(3):
        client.get("/api/dataset/")
    assert client.get("/api/dataset/").status_code == 429
    # The account's API requests used up, Prometheus scraping with it is still answered.
    for _ in range(2):
        assert client.get("/metrics").status_code == 200
    assert_throttled(client.get("/metrics"))


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
    assert rates == {"api": "1200/min", "predict": "6000/min", "metrics": "120/min", "explain": "60/min"}


def cache_backend(tmp_path, **environment: str) -> str:
    code = "import django; django.setup(); from django.conf import settings; print(settings.CACHES['default'])"
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=django_settings.BASE_DIR,
        env={
            **{key: value for key, value in os.environ.items() if not key.startswith("KERASUI_")},
            "KERASUI_DATA_DIR": str(tmp_path),
            "DJANGO_SETTINGS_MODULE": "kerasui.settings",
            **environment,
        },
        capture_output=True,
        text=True,
        check=True,
    )
    return completed.stdout


def test_the_counters_live_in_the_database_cache_or_in_redis_when_configured(tmp_path):
    assert "django.core.cache.backends.db.DatabaseCache" in cache_backend(tmp_path)
    redis = cache_backend(tmp_path, KERASUI_REDIS_URL="redis://127.0.0.1:6379/2")
    assert "django.core.cache.backends.redis.RedisCache" in redis and "redis://127.0.0.1:6379/2" in redis


@pytest.mark.django_db(transaction=True)
def test_migrate_makes_the_database_cache_table(settings):
    from django.core.cache.backends.db import DatabaseCache
    from django.core.management import call_command
    from django.db import connection

    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "kerasui_cache"}
    }
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS kerasui_cache")
    call_command("migrate", verbosity=0)
    cache = DatabaseCache("kerasui_cache", {})
    cache.set("throttle_probe", [1, 2])
    assert cache.get("throttle_probe") == [1, 2]


def test_media_downloads_are_not_counted_against_the_rate(tiny_rates, admin_user):
    import io

    from datasets.models import DataSet
    from datasets.services import dataset_item_create

    item = dataset_item_create(dataset=DataSet.objects.create(name="Pets"), label="cat", file=io.BytesIO(png()))
    client = client_for(admin_user)
    assert [client.get(item.image.url).status_code for _ in range(5)] == [200] * 5
    assert client.get("/api/dataset/").status_code == 200


# The embedded default: counts leased from the database cache, counted down in memory.


@pytest.fixture
def database_cache(settings):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "kerasui_cache"}
    }


@pytest.fixture
def bearer(admin_user):
    from datetime import timedelta

    from django.utils import timezone
    from oauth2_provider.models import get_access_token_model, get_application_model

    Application = get_application_model()
    application = Application.objects.create(
        name="script",
        user=admin_user,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
    )
    token = get_access_token_model().objects.create(
        user=admin_user,
        application=application,
        token="a-bearer-token-for-the-tests",
        expires=timezone.now() + timedelta(hours=1),
        scope="read write predict",
    )
    return {"HTTP_AUTHORIZATION": f"Bearer {token.token}"}


def writes(queries) -> list[str]:
    return [
        query["sql"] for query in queries if query["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
    ]


def test_counting_a_request_writes_to_the_database_once_per_lease_not_per_request(database_cache, bearer, settings):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from api.throttles import lease_size

    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api": "1200/min"}}
    dataset = DataSet.objects.create(name="Pets")
    client = APIClient()
    written = []
    for _ in range(3 * lease_size(1200)):
        with CaptureQueriesContext(connection) as queries:
            assert client.get(f"/api/dataset/{dataset.pk}/", **bearer).status_code == 200
        written.append(bool(writes(queries.captured_queries)))
    # A minute's window may end mid-loop: one more lease then.
    assert 3 <= sum(written) <= 4, written


def test_an_authenticated_requests_queries_do_not_grow_with_requests_or_images(
    database_cache, bearer, settings, django_assert_max_num_queries
):
    from datasets.services import dataset_item_create

    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api": "1200/min"}}
    dataset = DataSet.objects.create(name="Pets")
    client = APIClient()
    client.get("/api/", **bearer)  # the first lease
    with django_assert_max_num_queries(QUERIES_BEARER_ROOT):
        assert client.get("/api/", **bearer).status_code == 200
    with django_assert_max_num_queries(QUERIES_BEARER_DATASET):
        assert client.get(f"/api/dataset/{dataset.pk}/", **bearer).status_code == 200
    for label in ("cat", "dog") * 20:
        dataset_item_create(dataset=dataset, label=label, file=io.BytesIO(png()))
    for _ in range(10):
        with django_assert_max_num_queries(QUERIES_BEARER_DATASET):
            assert client.get(f"/api/dataset/{dataset.pk}/", **bearer).status_code == 200


def test_a_client_over_its_rate_is_refused_from_memory_without_a_query(database_cache, bearer, settings):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"api": "3/day"}}
    client = APIClient()
    assert [client.get("/api/", **bearer).status_code for _ in range(4)] == [200, 200, 200, 429]
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/api/", **bearer)
    assert_throttled(response)
    # The bearer token's look-up only: the count is not read again.
    assert not any("kerasui_cache" in query["sql"] for query in queries.captured_queries)
