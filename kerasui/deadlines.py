"""A time limit on each database statement of a request, so that no page can hold a worker for long.

PostgreSQL stops a statement itself (`-c statement_timeout`, set on the connection in settings). SQLite
has no such setting: a progress handler, installed on each new connection, interrupts the statement
running when the deadline `StatementDeadlineMiddleware` gave it has passed. Either way the request ends
with a clear answer: a 503 JSON body on the API, a short page elsewhere, never a traceback.
"""

from __future__ import annotations

import threading
import time

from django.conf import settings
from django.db import connection
from django.db.backends.signals import connection_created
from django.db.utils import OperationalError
from django.dispatch import receiver
from django.http import HttpResponse, JsonResponse

# SQLite calls the handler every this many virtual-machine instructions: about every 0.1 ms.
PROGRESS_STEPS = 10_000
_deadline = threading.local()


def _past_deadline() -> int:
    """Non-zero (SQLite then interrupts the statement) once this thread's statement deadline has passed."""
    deadline = getattr(_deadline, "at", None)
    return 1 if deadline is not None and time.monotonic() > deadline else 0


@receiver(connection_created)
def install_progress_handler(sender, connection, **kwargs) -> None:
    if connection.vendor == "sqlite":
        connection.connection.set_progress_handler(_past_deadline, PROGRESS_STEPS)


def _limited(execute, sql, params, many, context):
    """Each statement of a request gets `KERASUI_STATEMENT_TIMEOUT` seconds from its start (as PostgreSQL's
    statement_timeout counts them)."""
    _deadline.at = time.monotonic() + settings.KERASUI_STATEMENT_TIMEOUT
    try:
        return execute(sql, params, many, context)
    finally:
        _deadline.at = None


def is_time_limit(error: BaseException) -> bool:
    """Whether a database error is a statement stopped by its time limit (SQLite's interrupt, or
    PostgreSQL's query_canceled, SQLSTATE 57014)."""
    if not isinstance(error, OperationalError):
        return False
    cause = error.__cause__
    return (
        str(error) == "interrupted" or getattr(cause, "sqlstate", None) == "57014" or "statement timeout" in str(error)
    )


class StatementDeadlineMiddleware:
    """Gives each statement of a request its deadline (SQLite; PostgreSQL keeps its own), and answers a
    statement stopped by it with a 503 that says so."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if settings.KERASUI_STATEMENT_TIMEOUT <= 0 or connection.vendor != "sqlite":
            return self.get_response(request)
        # Installed again on each request too: the connection may have been opened before this module
        # was imported (the signal then came too early), and installing it is one C call.
        connection.ensure_connection()
        install_progress_handler(None, connection)
        with connection.execute_wrapper(_limited):
            return self.get_response(request)

    def process_exception(self, request, exception):
        if not is_time_limit(exception):
            return None
        limit = settings.KERASUI_STATEMENT_TIMEOUT
        message = (
            f"the database took longer than {limit:g} s on one step of this request and it was stopped "
            "(KERASUI_STATEMENT_TIMEOUT): try again later, or ask for less (a smaller page, a filter)"
        )
        if request.path.startswith(("/api/", "/o/")):
            response = JsonResponse({"detail": message}, status=503)
        else:
            response = HttpResponse(
                f"<!doctype html><title>Too slow</title><h1>This page took too long</h1><p>{message}.</p>",
                status=503,
                content_type="text/html; charset=utf-8",
            )
        response["Retry-After"] = "30"
        return response
