"""The admin's versions: the dataset page lists and promotes them, the run page downloads each format, import."""

import io
import zipfile

from datasets.models import DataSet
from jobs.process import job_execute
from serving.models import ExportJob
from tests.runs import install_model
from training.models import TrainingRun


def test_the_dataset_page_marks_the_current_version_and_promotes_another(
    admin_client, trained_dataset, colour_model_file
):
    older = trained_dataset.current_run
    newer = install_model(trained_dataset, colour_model_file)
    page = admin_client.get(f"/admin/management/dataset/{trained_dataset.pk}/change/").content.decode()
    assert "✔ current" in page and f"/admin/management/trainingrun/{older.pk}/promote/" in page
    assert f"/admin/management/trainingrun/{newer.pk}/promote/" not in page
    response = admin_client.post(f"/admin/management/trainingrun/{older.pk}/promote/")
    assert response.status_code == 302
    assert DataSet.objects.get(pk=trained_dataset.pk).current_run_id == older.pk


def test_the_run_page_downloads_a_format_and_then_shows_its_difference(admin_client, trained_dataset):
    run = trained_dataset.current_run
    response = admin_client.get(f"/admin/management/trainingrun/{run.pk}/export/onnx/")
    assert response.status_code == 200 and f"run{run.pk}.onnx" in response["Content-Disposition"]
    # The bundle is not made yet: an export job makes it; the page says so, and then it downloads.
    queued = admin_client.get(f"/admin/management/trainingrun/{run.pk}/export/onnx/?bundle=1", follow=True)
    job = ExportJob.objects.get(run=run)
    assert f"Onnx: export {job.pk} is queued" in queued.content.decode()
    job_execute(kind="export", job_id=job.pk)
    bundle = admin_client.get(f"/admin/management/trainingrun/{run.pk}/export/onnx/?bundle=1")
    names = zipfile.ZipFile(io.BytesIO(b"".join(bundle.streaming_content))).namelist()
    assert {"labels.json", "README.txt"} <= set(names)
    page = admin_client.get(f"/admin/management/trainingrun/{run.pk}/change/").content.decode()
    difference = TrainingRun.objects.get(pk=run.pk).exports["onnx"]["max_difference"]
    assert f"{difference:.2g} on 16 images" in page
    # A format not made yet: the run's page shows its job being made, and follows it.
    page = admin_client.get(f"/admin/management/trainingrun/{run.pk}/export/h5/", follow=True).content.decode()
    h5 = ExportJob.objects.get(run=run, format="h5")
    assert f"being made (export {h5.pk}): queued" in page and '<meta http-equiv="refresh" content="3">' in page


def test_a_refused_format_sends_back_to_the_run_page_with_the_reason(admin_client, trained_dataset):
    run = trained_dataset.current_run
    TrainingRun.objects.filter(pk=run.pk).update(exports={"h5": {"status": "failed", "error": "too different"}})
    response = admin_client.get(f"/admin/management/trainingrun/{run.pk}/export/h5/", follow=True)
    assert "too different" in response.content.decode()


def test_the_import_page_adds_a_version_or_says_why_not(admin_client, colour_dataset, colour_model_file):
    url = f"/admin/management/dataset/{colour_dataset.pk}/import_model/"
    assert admin_client.get(url).status_code == 200
    with open(colour_model_file, "rb") as file:
        refused = admin_client.post(url, {"file": file, "labels": "red,blue"})
    assert "2 labels were given" in refused.content.decode()
    with open(colour_model_file, "rb") as file:
        response = admin_client.post(url, {"file": file, "labels": "blue,green,red"})
    assert response.status_code == 302
    run = DataSet.objects.get(pk=colour_dataset.pk).current_run
    assert run.imported and run.labels == ["blue", "green", "red"]
