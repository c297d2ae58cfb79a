"""Request-rate counters in Redis (KERASUI_REDIS_URL), as a deployment with several machines has them."""

import pytest
import redis
from django.conf import settings as django_settings
from rest_framework.test import APIClient


@pytest.fixture
def redis_cache(servers, settings):
    # The CI's Redis server, a database of its own (the broker uses another).
    url = django_settings.CELERY_BROKER_URL.rsplit("/", 1)[0] + "/3"
    redis.Redis.from_url(url).flushdb()
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}}
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"api": "3/day", "predict": "2/day"},
    }
    yield url
    redis.Redis.from_url(url).flushdb()


def test_request_rates_are_counted_in_redis(redis_cache, admin_user):
    client = APIClient()
    client.force_authenticate(admin_user)
    assert [client.get("/api/dataset/").status_code for _ in range(4)] == [200, 200, 200, 429]
    keys = redis.Redis.from_url(redis_cache).keys("*throttle:api:*")
    assert keys, "the throttle's counter is not in Redis"
