"""Request rates: per user (per address when anonymous), counted in process memory first.

Views that set `throttle_scope = "predict"` (/api/test/) count against KERASUI_THROTTLE_PREDICT, every
other API view against KERASUI_THROTTLE_API; beyond it, 429 JSON with Retry-After. Failed logins per
address (kerasui.logins) are counted by the same `counters`.

A count is one small integer per client and time window in the cache every worker shares. With Redis
(KERASUI_REDIS_URL) each request increments it there, one round trip. On the embedded default (the
database cache) a request must not cost a database write, so each worker leases a few requests at a
time from the shared count (one write per lease) and counts them down in memory: together the workers
never allow more than the limit in a window; a client may be refused up to (workers - 1) × (lease - 1)
requests early, the requests other workers leased and it did not use there. The lease is 1 below 100 a
window (exact counts), 1/50 of the limit up to 100 above. A worker that found the window used up
refuses the client's further requests from memory until the window ends.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from django.core.cache import caches
from django.core.cache.backends.db import DatabaseCache
from django.core.cache.backends.redis import RedisCache
from django.db import connections, router, transaction
from rest_framework import throttling
from rest_framework.settings import api_settings

# Leases kept per worker (clients × scopes); the least recently used go first.
MAX_LEASES = 10_000


def lease_size(limit: int) -> int:
    """How many requests a worker takes from the shared count at once."""
    return max(1, min(limit // 50, 100))


@dataclass
class _Lease:
    window: int
    tokens: int = 0
    used_up: bool = False


class Counters:
    """Events per key and window (`limit` per `seconds`), shared by every worker through the cache."""

    def __init__(self) -> None:
        self._leases: OrderedDict[str, _Lease] = OrderedDict()
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._leases.clear()

    def hit(self, key: str, *, limit: int, seconds: int) -> float:
        """Count one event; 0 when it is within the limit, else the seconds until the window ends."""
        now = time.time()
        window = int(now // seconds)
        wait = max(0.001, (window + 1) * seconds - now)
        shared_key = f"{key}:{seconds}:{window}"
        if isinstance(caches["default"], RedisCache):
            return 0 if _redis_add(shared_key, 1, timeout=seconds + 5) <= limit else wait
        with self._lock:
            lease = self._lease(key, window)
            if lease.tokens > 0:
                lease.tokens -= 1
                return 0
            if lease.used_up:
                return wait
        granted = _take(shared_key, lease_size(limit), limit=limit, timeout=seconds + 5)
        with self._lock:
            lease = self._lease(key, window)
            lease.tokens += granted
            if lease.tokens > 0:
                lease.tokens -= 1
                return 0
            lease.used_up = True
            return wait

    def used_up(self, key: str, *, limit: int, seconds: int) -> float:
        """Without counting: the seconds until the window ends when its events reached the limit, else 0."""
        now = time.time()
        window = int(now // seconds)
        wait = max(0.001, (window + 1) * seconds - now)
        with self._lock:
            lease = self._lease(key, window)
            if lease.used_up:
                return wait
            if lease.tokens > 0:
                return 0
        if (caches["default"].get(f"{key}:{seconds}:{window}") or 0) < limit:
            return 0
        with self._lock:
            self._lease(key, window).used_up = True
        return wait

    def _lease(self, key: str, window: int) -> _Lease:
        lease = self._leases.get(key)
        if lease is None or lease.window != window:
            lease = self._leases[key] = _Lease(window)
            while len(self._leases) > MAX_LEASES:
                self._leases.popitem(last=False)
        self._leases.move_to_end(key)
        return lease


counters = Counters()


def _redis_add(key: str, amount: int, *, timeout: int) -> int:
    """The count's new value, in one round trip (the key expires after the window)."""
    cache = caches["default"]
    name = cache.make_and_validate_key(key)
    pipeline = cache._cache.get_client(name, write=True).pipeline()
    pipeline.set(name, 0, ex=timeout, nx=True)
    pipeline.incrby(name, amount)
    return pipeline.execute()[1]


def _take(key: str, want: int, *, limit: int, timeout: int) -> int:
    """Up to `want` of the window's `limit` from the shared count, atomically across processes."""
    cache = caches["default"]
    if isinstance(cache, DatabaseCache):
        alias = router.db_for_write(cache.cache_model_class)
        cache.add(key, 0, timeout)
        with transaction.atomic(using=alias):
            connection = connections[alias]
            # SQLite's IMMEDIATE transactions already hold the database's write lock here.
            if connection.vendor != "sqlite":
                table = connection.ops.quote_name(cache._table)
                with connection.cursor() as cursor:
                    cursor.execute(
                        f"SELECT cache_key FROM {table} WHERE cache_key = %s FOR UPDATE",  # noqa: S608
                        [cache.make_and_validate_key(key)],
                    )
            return _take_unlocked(key, want, limit=limit, timeout=timeout)
    return _take_unlocked(key, want, limit=limit, timeout=timeout)


def _take_unlocked(key: str, want: int, *, limit: int, timeout: int) -> int:
    cache = caches["default"]
    used = cache.get(key) or 0
    granted = max(0, min(want, limit - used))
    if granted:
        cache.set(key, used + granted, timeout)
    return granted


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
        if request.user and request.user.is_authenticated:
            client = f"user-{request.user.pk}"
        else:
            client = f"ip-{self.get_ident(request)}"
        wait = counters.hit(f"throttle:{scope}:{client}", limit=limit, seconds=duration)
        if not wait:
            return True
        self.wait_seconds = wait
        return False

    def wait(self):
        return self.wait_seconds
