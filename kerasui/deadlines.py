"""A time limit per request for its database work: KERASUI_REQUEST_TIME_LIMIT seconds.

gunicorn's `timeout` does not stop a request with gthread workers (the worker's main loop keeps
answering the arbiter while a thread is busy), so the limit is enforced where the time goes:
- SQLite: a progress handler on each connection interrupts a statement once the request that runs it
  has lasted longer than the limit (the statement fails with "interrupted");
- PostgreSQL: `statement_timeout` (settings.py) ends any statement that runs longer than the limit;
and the answer is a 503 JSON naming the setting, never a traceback. The CPU work of a request (decoding,
predicting, explaining) is bounded by the pixel budgets and the explanation slots instead: Python
cannot interrupt a thread stuck in C code.
"""

from __future__ import annotations

import threading
import time

from django.conf import settings
from django.db import OperationalError, connection
from django.db.backends.signals import connection_created
from django.http import HttpResponse, JsonResponse
from django.utils.html import escape

# How many SQLite virtual-machine instructions run between two looks at the clock (a few ms of work).
PROGRESS_STEPS = 20_000

_local = threading.local()


def request_deadline() -> float | None:
    """When this thread's request must have finished its database work (time.monotonic()), if any."""
    return getattr(_local, "deadline", None)


def _interrupt_when_late() -> int:
    deadline = getattr(_local, "deadline", None)
    return 1 if deadline is not None and time.monotonic() > deadline else 0


def install_progress_handler(raw_connection) -> None:
    """Make an SQLite connection interrupt its statements once its thread's request is past its limit."""
    raw_connection.set_progress_handler(_interrupt_when_late, PROGRESS_STEPS)


def _on_connection_created(sender, connection, **kwargs) -> None:
    if connection.vendor == "sqlite":
        install_progress_handler(connection.connection)
        connection.kerasui_deadline_installed = connection.connection


connection_created.connect(_on_connection_created, dispatch_uid="kerasui.deadlines")


def _is_interruption(error: BaseException) -> bool:
    """Whether a database error is a statement stopped by the limit (SQLite's interrupt, or PostgreSQL's
    query_canceled, SQLSTATE 57014)."""
    if not isinstance(error, OperationalError):
        return False
    text = str(error).lower()
    return (
        "interrupted" in text
        or "statement timeout" in text
        or "canceling statement" in text
        or getattr(error.__cause__, "sqlstate", None) == "57014"
    )


class RequestTimeLimitMiddleware:
    """Give each request its deadline; a statement stopped by it answers 503 naming the setting."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.KERASUI_REQUEST_TIME_LIMIT
        raw = getattr(connection, "connection", None)
        if (
            connection.vendor == "sqlite"
            and raw is not None
            and getattr(connection, "kerasui_deadline_installed", None) is not raw
        ):
            # A connection opened before this module was imported (tests, a management shell).
            install_progress_handler(raw)
            connection.kerasui_deadline_installed = raw
        _local.deadline = time.monotonic() + limit if limit > 0 else None
        try:
            return self.get_response(request)
        finally:
            _local.deadline = None

    def process_exception(self, request, exception):
        if not _is_interruption(exception):
            return None
        limit = settings.KERASUI_REQUEST_TIME_LIMIT
        message = (
            f"the request took longer than {limit} seconds (KERASUI_REQUEST_TIME_LIMIT) and was stopped: "
            "try again later, or ask for less (a smaller page, a filter)"
        )
        if request.path.startswith(("/api/", "/o/")):
            response = JsonResponse({"detail": message, "setting": "KERASUI_REQUEST_TIME_LIMIT"}, status=503)
        else:
            response = HttpResponse(
                f"<!doctype html><title>Too slow</title><h1>This page took too long</h1><p>{escape(message)}.</p>",
                status=503,
                content_type="text/html; charset=utf-8",
            )
        response["Retry-After"] = "30"
        return response
