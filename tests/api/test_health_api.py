"""Dataset health through the API: start a check (202), poll it, read the report, keep or keep one, cancel."""

import pytest

from datasets.models import DataSetItem
from health import job as health_job
from health.models import HealthCheck
from jobs.process import NotRunnable, job_execute


@pytest.fixture
def computed(monkeypatch):
    """The check's computation replaced by a small report naming the dataset's first items (the ML is
    tested in tests/ml and tests/services); everything around it, lifecycle included, is the real one."""

    def compute(*, check, progress):
        progress("labels", 0.5)
        first, second, third = DataSetItem.objects.filter(dataset=check.dataset).order_by("id")[:3]
        return {
            "images": 30,
            "labels": ["blue", "green", "red"],
            "method": "test",
            "folds": 5,
            "label_issues": [
                {"item": first.pk, "given": first.label, "suggested": "red", "confidence": 0.9, "quality": 0.1}
            ],
            "label_quality": {},
            "duplicates": [{"items": [second.pk, third.pk], "exact": True, "labels": [second.label]}],
            "leaks": {"run": None, "groups": []},
            "outliers": [],
            "balance": {"counts": {}, "smallest": [], "imbalance_ratio": 1.0, "notes": []},
            "unreadable": [],
            "seconds": {"total": 0.1},
        }

    monkeypatch.setattr(health_job, "health_check_compute", compute)


def test_start_then_poll_until_the_report_is_there(api, colour_dataset, computed):
    started = api.post(f"/api/dataset/{colour_dataset.pk}/health/")
    assert started.status_code == 202 and started.json()["status"] == "queued"
    check_id = started.json()["id"]
    again = api.post(f"/api/dataset/{colour_dataset.pk}/health/")
    assert again.status_code == 200 and again.json()["id"] == check_id
    assert api.get(f"/api/healthcheck/{check_id}/").json()["report"] == {}

    job_execute(kind="health", job_id=check_id, worker="test:1")

    polled = api.get(f"/api/healthcheck/{check_id}/").json()
    assert polled["status"] == "succeeded" and polled["progress"] == 1.0
    first = DataSetItem.objects.filter(dataset=colour_dataset).order_by("id").first()
    assert polled["report"]["label_issues"][0]["item"] == first.pk
    assert polled["report"]["label_issues"][0]["image"].startswith("/media/")
    assert api.get(f"/api/dataset/{colour_dataset.pk}/health/").json()["id"] == check_id


def test_kept_and_relabelled_findings_leave_the_report(api, colour_dataset, computed):
    check_id = api.post(f"/api/dataset/{colour_dataset.pk}/health/").json()["id"]
    job_execute(kind="health", job_id=check_id, worker="test:1")
    report = api.get(f"/api/healthcheck/{check_id}/").json()["report"]
    suspect = report["label_issues"][0]["item"]
    second, third = (member["item"] for member in report["duplicates"][0]["items"])

    # Relabelling is the item endpoint's.
    assert api.patch(f"/api/datasetitem/{suspect}/", {"label": "red"}, format="json").status_code == 200
    kept = api.post(f"/api/dataset/{colour_dataset.pk}/health/keep_one/", {"keep": second, "items": [second, third]})
    assert kept.status_code == 200 and kept.json() == {"deleted": 1}

    report = api.get(f"/api/healthcheck/{check_id}/").json()["report"]
    assert report["label_issues"] == [] and report["duplicates"] == []
    assert DataSetItem.objects.filter(pk=second).exists() and not DataSetItem.objects.filter(pk=third).exists()


def test_keeping_an_image_of_another_dataset_or_no_image_is_a_400_naming_the_field(api, colour_dataset):
    response = api.post(f"/api/dataset/{colour_dataset.pk}/health/keep/", {"items": [999999], "kind": "label"})
    assert response.status_code == 400 and "items" in response.json()
    huge = 10**30  # beyond what SQLite can compare
    response = api.post(f"/api/dataset/{colour_dataset.pk}/health/keep_one/", {"keep": huge, "items": [huge]})
    assert response.status_code == 400 and "keep" in response.json()


def test_a_viewer_reads_but_cannot_start_or_delete(api_as, api, colour_dataset):
    viewer = api_as("view_dataset", "view_datasetitem")
    assert viewer.get(f"/api/dataset/{colour_dataset.pk}/health/").status_code == 404  # never checked
    assert viewer.post(f"/api/dataset/{colour_dataset.pk}/health/").status_code == 403
    items = list(DataSetItem.objects.filter(dataset=colour_dataset).values_list("pk", flat=True)[:2])
    refused = viewer.post(f"/api/dataset/{colour_dataset.pk}/health/keep_one/", {"keep": items[0], "items": items})
    assert refused.status_code == 403 and DataSetItem.objects.filter(pk=items[1]).exists()
    assert not HealthCheck.objects.exists()


def test_cancel_a_queued_check_then_it_is_409(api, colour_dataset):
    check_id = api.post(f"/api/dataset/{colour_dataset.pk}/health/").json()["id"]
    assert api.post(f"/api/healthcheck/{check_id}/cancel/").json()["status"] == "cancelled"
    assert api.post(f"/api/healthcheck/{check_id}/cancel/").status_code == 409
    with pytest.raises(NotRunnable, match="is cancelled, not queued"):
        job_execute(kind="health", job_id=check_id, worker="test:1")
