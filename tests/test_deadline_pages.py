"""A page or API answer whose database work runs past KERASUI_REQUEST_TIME_LIMIT is stopped with a 503 (issue 24)."""

import pytest
from django.db import connection
from rest_framework.test import APIClient

from datasets.models import DataSet
from management.admin import DataSetAdmin

# Counts to a hundred million in SQLite: tens of seconds unless something stops it.
SLOW = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000000) SELECT count(*) FROM c"


@pytest.fixture
def slow_dataset_list(monkeypatch, settings):
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL stops statements itself (statement_timeout, set in settings)")
    settings.KERASUI_REQUEST_TIME_LIMIT = 0.2

    def slow(*args, **kwargs):
        with connection.cursor() as cursor:
            cursor.execute(SLOW)
        return DataSet.objects.all()

    monkeypatch.setattr("datasets.api.datasets_with_counts", slow)
    monkeypatch.setattr(DataSetAdmin, "get_queryset", lambda self, request: slow())


def test_an_api_answer_past_the_time_limit_is_a_503_that_says_why(slow_dataset_list, admin_user):
    api = APIClient()
    api.force_authenticate(admin_user)
    response = api.get("/api/dataset/")
    assert response.status_code == 503
    assert "KERASUI_REQUEST_TIME_LIMIT" in response.json()["detail"]
    assert response["Retry-After"] == "30"
    # The connection is usable again afterwards: the next request has its own deadline.
    assert api.get("/api/trainingrun/").status_code == 200


def test_an_admin_page_past_the_time_limit_is_a_page_that_says_why(slow_dataset_list, admin_client):
    response = admin_client.get("/admin/management/dataset/")
    assert response.status_code == 503
    assert "took too long" in response.content.decode()


def test_outside_a_request_no_statement_is_stopped(db, settings):
    settings.KERASUI_REQUEST_TIME_LIMIT = 0.01
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) SELECT count(*) FROM c"
        )
        assert cursor.fetchone() == (300000,)
