"""Exports and zip imports through the API are jobs: answered at once with the job to follow, read and
cancelled at its URL, one at a time per dataset, and seen only by those who may use them."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from datasets.models import ImportJob
from jobs.process import NotRunnable, job_execute
from serving import exports
from serving.models import ExportJob
from tests.images import colour_zip, png, zip_of


def test_an_export_is_answered_at_once_with_its_job_and_another_format_meanwhile_is_409(
    api, trained_dataset, monkeypatch
):
    monkeypatch.setattr(exports, "export_in_child", lambda *args, **kwargs: pytest.fail("exported in the request"))
    run_id = trained_dataset.current_run_id
    response = api.get(f"/api/trainingrun/{run_id}/model/?format=tflite&bundle=1")
    assert response.status_code == 202
    job = response.json()
    assert (job["run"], job["format"], job["precision"], job["bundle"], job["status"]) == (
        run_id, "tflite", "float32", True, "queued"
    )  # fmt: skip
    assert job["download"].endswith(f"/api/trainingrun/{run_id}/model/?format=tflite&precision=float32&bundle=1")
    assert api.get(job["url"]).json()["status"] == "queued"
    other = api.get(f"/api/trainingrun/{run_id}/model/?format=h5")
    assert other.status_code == 409 and f"export {job['id']} (tflite of run {run_id})" in other.json()["format"][0]
    assert api.get(f"/api/trainingrun/{run_id}/model/").status_code == 200  # keras: the original, at once

    cancelled = api.post(f"{job['url']}cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    with pytest.raises(NotRunnable):
        job_execute(kind="export", job_id=job["id"])  # a cancelled export never starts
    assert api.get(f"/api/trainingrun/{run_id}/model/?format=h5").status_code == 202  # the dataset is free again


def test_export_jobs_are_seen_only_by_those_who_may_download_models(api_as, trained_dataset):
    job = ExportJob.objects.create(dataset=trained_dataset, run=trained_dataset.current_run, format="onnx")
    assert api_as("view_dataset").get(f"/api/exportjob/{job.pk}/").status_code == 403
    assert api_as("view_trainingrun").get(f"/api/exportjob/{job.pk}/").status_code == 200
    assert api_as("view_trainingrun").put(f"/api/exportjob/{job.pk}/", {}).status_code in {403, 405}


def test_a_zip_is_answered_at_once_a_second_one_waits_for_the_first_and_a_cancelled_one_imports_nothing(
    api, colour_dataset
):
    before = colour_dataset.items.count()
    upload = api.post(f"/api/dataset/{colour_dataset.pk}/upload/", {"file": SimpleUploadedFile("c.zip", colour_zip(3))})
    assert upload.status_code == 202 and upload.json()["progress"] == 0
    second = api.post(f"/api/dataset/{colour_dataset.pk}/upload/", {"file": SimpleUploadedFile("d.zip", colour_zip(1))})
    assert second.status_code == 409 and "one zip at a time" in second.json()["file"][0]
    assert api.post(f"{upload.json()['url']}cancel/").json()["status"] == "cancelled"
    with pytest.raises(NotRunnable):
        job_execute(kind="import", job_id=upload.json()["id"])
    assert colour_dataset.items.count() == before


def test_a_bad_zip_is_refused_in_the_request_naming_the_field_and_keeps_nothing(api, colour_dataset, settings):
    settings.KERASUI_MAX_ZIP_ENTRIES = 2
    many = zip_of({f"red/{n}.png": png() for n in range(3)})
    refused = api.post(f"/api/dataset/{colour_dataset.pk}/upload/", {"file": SimpleUploadedFile("m.zip", many)})
    assert refused.status_code == 400 and "at most 2 are accepted" in refused.json()["file"][0]
    assert not ImportJob.objects.exists()


def test_import_jobs_are_seen_only_by_those_who_may_add_images(api_as, colour_dataset):
    job = ImportJob.objects.create(dataset=colour_dataset)
    assert api_as("view_dataset").get(f"/api/importjob/{job.pk}/").status_code == 403
    assert api_as("add_datasetitem").get(f"/api/importjob/{job.pk}/").status_code == 200
