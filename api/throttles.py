"""Request rates: per user (per address when anonymous), counted in the cache every worker shares.

Views that set `throttle_scope = "predict"` (/api/test/) count against KERASUI_THROTTLE_PREDICT, every
other API view against KERASUI_THROTTLE_API; beyond it, 429 JSON with Retry-After.
"""

from rest_framework import throttling
from rest_framework.settings import api_settings


class ScopedThrottle(throttling.ScopedRateThrottle):
    """DRF's scoped throttle, with a default scope for views that name none."""

    default_scope = "api"

    def allow_request(self, request, view):
        self.scope = getattr(view, self.scope_attr, None) or self.default_scope
        # Read now, not when the class was defined, so a changed setting (a test's) applies.
        self.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return throttling.SimpleRateThrottle.allow_request(self, request, view)
