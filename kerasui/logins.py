"""Password guessing: after AXES_FAILURE_LIMIT failed logins for one username from one address, every
door that checks a password (the admin's login form, the OAuth2 password grant, Basic authentication)
refuses that pair for AXES_COOLOFF_TIME, even with the right password.

django-axes counts the failures in the database, which every worker process shares; this module
names the client's address and turns axes' verdict into each door's answer: 429 JSON with
Retry-After under /api/ and /o/, a page saying so elsewhere.
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
from django.utils import timezone

logger = logging.getLogger("kerasui.security")

API_PREFIXES = ("/api/", "/o/")


def client_ip(request) -> str:
    """The client's address: REMOTE_ADDR, or with KERASUI_PROXY_COUNT proxies in front, the address
    the outermost of them saw (DRF's rule for NUM_PROXIES, so throttles and lockouts agree).

    X-Forwarded-For is read only then: without proxies any client could name any address in it.
    """
    remote = request.META.get("REMOTE_ADDR", "")
    proxies = settings.KERASUI_PROXY_COUNT
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
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
