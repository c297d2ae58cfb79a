"""Request rates: per user (per address when anonymous), counted in the cache every worker shares.

Views that set `throttle_scope = "predict"` (/api/test/) count against KERASUI_THROTTLE_PREDICT, every
other API view against KERASUI_THROTTLE_API; beyond it, 429 JSON with Retry-After.

A counter per client and time window (one small integer, incremented) rather than DRF's list of
every request's time, which grows with the rate (6,000 entries at 6000/min) and is read and written
whole on every request.
"""

import time

from django.core.cache import cache
from rest_framework import throttling
from rest_framework.settings import api_settings


class ScopedThrottle(throttling.SimpleRateThrottle):
    """At most N requests per client in each window of the scope's rate ("1200/min": N=1200, a minute)."""

    default_scope = "api"

    def __init__(self):
        # The rate is read per request (a changed setting applies at once), not when created.
        self.wait_seconds = None

    def allow_request(self, request, view):
        return self.allow(request, getattr(view, "throttle_scope", None) or self.default_scope)

    def allow(self, request, scope: str) -> bool:
        """Count one request of `scope` for the client; False beyond the scope's rate (then see `wait`)."""
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(scope)
        if rate is None:
            return True
        limit, duration = self.parse_rate(rate)
        now = time.time()
        window = int(now // duration)
        if request.user and request.user.is_authenticated:
            client = f"user-{request.user.pk}"
        else:
            client = f"ip-{self.get_ident(request)}"
        key = f"throttle:{scope}:{client}:{duration}:{window}"
        cache.add(key, 0, timeout=duration + 5)
        try:
            count = cache.incr(key)
        except ValueError:  # the window ended between add() and incr()
            cache.set(key, 1, timeout=duration + 5)
            count = 1
        if count <= limit:
            return True
        self.wait_seconds = (window + 1) * duration - now
        return False

    def wait(self):
        return self.wait_seconds
