"""A request's database work stops at KERASUI_REQUEST_TIME_LIMIT (issue 30): a statement still running
past it is interrupted and the request answers 503 JSON naming the setting, not a traceback."""

import json
import time

import pytest
from django.db import OperationalError, connection
from django.http import JsonResponse
from django.test import RequestFactory

from kerasui.deadlines import RequestTimeLimitMiddleware

# Counts to a billion: minutes of work for SQLite, unless it is interrupted.
ENDLESS = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000000) SELECT count(*) FROM n"


def slow_view(request):
    with connection.cursor() as cursor:
        cursor.execute(ENDLESS)
        return JsonResponse({"count": cursor.fetchone()[0]})


@pytest.mark.django_db
def test_a_request_past_its_time_limit_is_stopped_with_a_503_naming_the_setting(settings):
    settings.KERASUI_REQUEST_TIME_LIMIT = 1
    middleware = RequestTimeLimitMiddleware(slow_view)
    request = RequestFactory().get("/api/slow/")
    started = time.monotonic()
    try:
        response = middleware(request)
    except OperationalError as error:
        response = middleware.process_exception(request, error)
    assert time.monotonic() - started < 30  # stopped, not run to its end
    assert response.status_code == 503
    assert "KERASUI_REQUEST_TIME_LIMIT" in json.loads(response.content)["detail"]


@pytest.mark.django_db
def test_outside_a_request_nothing_is_interrupted(settings):
    settings.KERASUI_REQUEST_TIME_LIMIT = 1
    RequestTimeLimitMiddleware(lambda request: JsonResponse({}))(RequestFactory().get("/api/"))
    with connection.cursor() as cursor:  # the handler is installed, but no deadline is set now
        cursor.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000) SELECT count(*) FROM n"
        )
        assert cursor.fetchone()[0] == 300000
