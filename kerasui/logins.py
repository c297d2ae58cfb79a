"""Password guessing: after AXES_FAILURE_LIMIT failed logins for one username from one address, every
door that checks a password (the admin's login form, the OAuth2 password grant, Basic authentication)
refuses that pair for AXES_COOLOFF_TIME, even with the right password.

django-axes counts the failures in the database, which every worker process shares; this module
names the client's address and turns axes' verdict into each door's answer: 429 JSON with
Retry-After under /api/ and /o/, a page saying so elsewhere.

Guessing with a new username each time never trips that lockout, and each guess costs a password
hash (a quarter of a second of a core). So failed credentials are also counted per address, whatever
the username or client id (KERASUI_FAILED_LOGIN_RATE, with the API's request counters): beyond the
rate every door answers 429 before it hashes anything - the admin's form (the middleware below), Basic
authentication and /o/token/'s client and user checks (api.authentication).
"""

from __future__ import annotations

import logging
import math

from axes.helpers import get_cool_off
from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import Max
from django.http import JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from api.throttles import ScopedThrottle, counters

logger = logging.getLogger("kerasui.security")

API_PREFIXES = ("/api/", "/o/")


def client_ip(request) -> str:
    """The client's address: REMOTE_ADDR, or with KERASUI_PROXY_COUNT proxies in front, the address
    the outermost of them saw (DRF's rule for NUM_PROXIES, so throttles and lockouts agree).

    X-Forwarded-For is read only then: without proxies any client could name any address in it.
    """
    return address_of(request.META)


def address_of(meta) -> str:
    """client_ip() from a request's META (or oauthlib's copy of it, its headers)."""
    remote = meta.get("REMOTE_ADDR", "")
    proxies = settings.KERASUI_PROXY_COUNT
    forwarded = [part.strip() for part in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if proxies > 0 and forwarded:
        return forwarded[-min(proxies, len(forwarded))]
    return remote


def lockout_seconds(request, username: str | None) -> int:
    """How long `username` stays locked out from this request's address (at least one second)."""
    cool_off = get_cool_off(request)
    if cool_off is None:
        return 0
    last = (
        AccessAttempt.objects.filter(username=username, ip_address=client_ip(request))
        .aggregate(last=Max("attempt_time"))
        .get("last")
    )
    if last is None:
        return math.ceil(cool_off.total_seconds())
    return max(1, math.ceil((last + cool_off - timezone.now()).total_seconds()))


def lockout_message(seconds: int) -> str:
    minutes = math.ceil(seconds / 60)
    wait = f"{minutes} minute{'s' if minutes != 1 else ''}" if seconds >= 60 else f"{seconds} seconds"
    return (
        f"Too many failed logins for this username from your address ({settings.AXES_FAILURE_LIMIT} in a row): "
        f"logins are refused for {wait}, even with the right password. An administrator can unlock it sooner."
    )


def log_lockout(request, username: str | None, seconds: int, door: str) -> None:
    logger.warning(
        "login refused: username %r from %s is locked out for %d more seconds (%s)",
        username,
        client_ip(request),
        seconds,
        door,
    )


def lockout_response(request, original_response=None, credentials=None):
    """AXES_LOCKOUT_CALLABLE: what a locked-out login through a Django view gets (the admin's form)."""
    username = (credentials or {}).get("username") or request.POST.get("username")
    seconds = lockout_seconds(request, username)
    log_lockout(request, username, seconds, door=request.path)
    message = lockout_message(seconds)
    if request.path.startswith(API_PREFIXES):
        response = JsonResponse({"detail": message}, status=429)
    else:
        context = {"title": "Login refused for now", "message": message, "site_header": "KerasUI"}
        response = render(request, "admin/locked_out.html", context, status=429)
    response["Retry-After"] = str(seconds)
    return response


# Failed credentials per address.


def _failed_login_rate() -> tuple[int, int] | None:
    rate = settings.KERASUI_FAILED_LOGIN_RATE
    return ScopedThrottle().parse_rate(rate) if rate else None


def failed_logins_wait(meta) -> int:
    """Seconds until this address may try credentials again (0: now); counts nothing, hashes nothing."""
    rate = _failed_login_rate()
    if rate is None:
        return 0
    limit, seconds = rate
    wait = counters.used_up(f"failed-logins:{address_of(meta)}", limit=limit, seconds=seconds)
    return math.ceil(wait) if wait else 0


def failed_login_count(meta) -> None:
    """One more failed login from this address."""
    rate = _failed_login_rate()
    if rate is not None:
        limit, seconds = rate
        counters.hit(f"failed-logins:{address_of(meta)}", limit=limit, seconds=seconds)


def failed_logins_message(seconds: int) -> str:
    minutes = math.ceil(seconds / 60)
    wait = f"{minutes} minute{'s' if minutes != 1 else ''}" if seconds >= 60 else f"{seconds} seconds"
    return (
        f"Too many failed logins from your address (KERASUI_FAILED_LOGIN_RATE, {settings.KERASUI_FAILED_LOGIN_RATE}): "
        f"try again in {wait}."
    )


def failed_logins_response(request, seconds: int):
    """429 with Retry-After: JSON under /api/ and /o/, the login page saying so elsewhere."""
    logger.warning("login refused: too many failed logins from %s (%s)", client_ip(request), request.path)
    message = failed_logins_message(seconds)
    if request.path.startswith(API_PREFIXES):
        response = JsonResponse({"detail": message}, status=429)
    else:
        context = {"title": "Login refused for now", "message": message, "site_header": "KerasUI"}
        response = render(request, "admin/locked_out.html", context, status=429)
    response["Retry-After"] = str(seconds)
    return response


class FailedLoginCounter:
    """The last authentication backend: reached only when every one before it returned no user (a wrong
    password, an unknown or inactive user; a django-axes lockout stops authenticate() before it), it
    counts a failure against the client's address and authenticates nobody."""

    def authenticate(self, request, username=None, password=None, **credentials):
        if request is not None:
            failed_login_count(request.META)
        return None

    def get_user(self, user_id):
        return None


class FailedLoginThrottleMiddleware:
    """Answers a login form's POST with 429 before the view hashes a password, while the client's
    address has too many failed logins (Basic authentication and /o/token/ check it themselves)."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.login_path = None

    def __call__(self, request):
        if request.method == "POST":
            if self.login_path is None:
                self.login_path = reverse("admin:login")
            if request.path == self.login_path:
                seconds = failed_logins_wait(request.META)
                if seconds:
                    return failed_logins_response(request, seconds)
        return self.get_response(request)
