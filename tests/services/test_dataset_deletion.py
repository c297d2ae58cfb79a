"""Deleting a dataset (issue 24): the request marks it, in constant work, and it is gone from every list
at once with its name free; a job of kind "deletion" deletes its rows in batches, then its files and
folder, then its row, and a deletion killed midway is queued again and finishes."""

import io
import socket
from collections import Counter
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from datasets import services
from datasets.services import dataset_delete, dataset_import_request, dataset_import_zip, dataset_item_update
from jobs import watchdog
from jobs.process import job_execute
from management.errors import Conflict, NotFound
from management.models import DataSet, DataSetDeletion, DataSetItem, ImportJob, LabelCount, TrainingRun
from tests.images import png, zip_of
from tests.test_scale_queries import add_images
from training.services import training_run_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(admin_user) -> APIClient:
    client = APIClient()
    client.force_authenticate(admin_user)
    return client


def media(settings) -> Path:
    return Path(settings.MEDIA_ROOT)


def files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()] if folder.exists() else []


def imported(name: str = "Shapes", count: int = 3) -> DataSet:
    dataset = DataSet.objects.create(name=name, image_size=16)
    entries = {f"{'ab'[n % 2]}/{n}.png": png((n * 40 % 256, 0, 0), size=(300, 20)) for n in range(count)}
    dataset_import_zip(dataset=dataset, file=io.BytesIO(zip_of(entries)))
    return dataset


def delete_queries(api, dataset) -> int:
    with CaptureQueriesContext(connection) as queries:
        answer = api.delete(f"/api/dataset/{dataset.pk}/")
    assert answer.status_code == 204, answer.content
    return len(queries)


def test_the_delete_request_runs_as_many_queries_on_thousands_of_images_as_on_a_few(api, django_assert_max_num_queries):
    small = DataSet.objects.create(name="Small")
    add_images(small, 10)
    large = DataSet.objects.create(name="Large")
    add_images(large, 3000)
    few = delete_queries(api, small)
    with django_assert_max_num_queries(few):
        answer = api.delete(f"/api/dataset/{large.pk}/")
    assert answer.status_code == 204
    # Nothing was deleted by the request: the job does it.
    assert DataSetItem.objects.filter(dataset_id=large.pk).count() == 3000
    assert DataSetDeletion.objects.get(dataset_number=large.pk).images == 3000


def test_the_admins_confirmation_and_delete_run_as_many_queries_on_thousands_of_images_as_on_a_few(admin_client):
    def counted(dataset) -> tuple[int, int]:
        with CaptureQueriesContext(connection) as shown:
            page = admin_client.get(f"/admin/management/dataset/{dataset.pk}/delete/")
        assert page.status_code == 200 and "in the background" in page.content.decode()
        with CaptureQueriesContext(connection) as deleted:
            assert (
                admin_client.post(f"/admin/management/dataset/{dataset.pk}/delete/", {"post": "yes"}).status_code == 302
            )
        return len(shown), len(deleted)

    small, large = DataSet.objects.create(name="Small"), DataSet.objects.create(name="Large")
    add_images(small, 10)
    add_images(large, 3000)
    few, many = counted(small), counted(large)
    assert many[0] <= few[0] and many[1] <= few[1], (few, many)
    assert DataSetItem.objects.filter(dataset_id=large.pk).count() == 3000  # the job deletes them


def test_a_deleted_dataset_is_gone_from_every_list_at_once_and_its_name_is_free(api, admin_client):
    dataset = imported()
    kept = imported("Kept", 2)
    run = training_run_create(dataset=kept, enqueue=False)
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.SUCCEEDED)
    assert api.delete(f"/api/dataset/{dataset.pk}/").status_code == 204

    assert [row["name"] for row in api.get("/api/dataset/").json()["results"]] == ["Kept"]
    assert api.get(f"/api/dataset/{dataset.pk}/").status_code == 404
    items = api.get("/api/datasetitem/").json()
    assert {row["dataset"] for row in items["results"]} == {kept.pk} and items["count"] == 2
    assert api.get(f"/api/datasetitem/?dataset={dataset.pk}").status_code in {200, 400}
    assert admin_client.get(f"/admin/management/dataset/{dataset.pk}/change/", follow=True).status_code == 200
    page = admin_client.get("/admin/management/dataset/").content.decode()
    assert "Shapes" not in page and "Kept" in page
    assert "Shapes" not in admin_client.get("/admin/").content.decode()
    assert admin_client.get("/admin/management/datasetitem/").context["cl"].result_count == 2
    # The name can be used again at once, through the API and the admin's form.
    again = api.post("/api/dataset/", {"name": "Shapes"}, format="json")
    assert again.status_code == 201, again.content
    assert api.post("/api/dataset/", {"name": "Shapes"}, format="json").status_code == 400
    # The marked row's own name is one nobody can give (a control character): never a 500.
    marked = DataSet.all_objects.get(pk=dataset.pk)
    assert marked.deleting and marked.name != "Shapes"
    refused = api.post("/api/dataset/", {"name": marked.name}, format="json")
    assert refused.status_code == 400 and "control" in str(refused.json()), refused.content


def test_deleting_it_again_answers_404_and_the_service_says_why(api):
    dataset = imported()
    assert api.delete(f"/api/dataset/{dataset.pk}/").status_code == 204
    again = api.delete(f"/api/dataset/{dataset.pk}/")
    assert again.status_code == 404
    with pytest.raises(NotFound, match="already being deleted"):
        dataset_delete(dataset=dataset)
    assert DataSetDeletion.objects.count() == 1


def test_a_dataset_being_trained_is_not_marked(db):
    dataset = imported()
    training_run_create(dataset=dataset, enqueue=False)
    with pytest.raises(Conflict, match="being trained"):
        dataset_delete(dataset=dataset)
    assert DataSet.objects.filter(pk=dataset.pk).exists() and not DataSetDeletion.objects.exists()


def test_the_job_deletes_the_rows_counts_files_and_folder(settings):
    dataset = imported(count=4)
    run = training_run_create(dataset=dataset, enqueue=False)
    (media(settings) / "models").mkdir(parents=True, exist_ok=True)
    (media(settings) / "models" / f"run_{run.pk}.keras").write_bytes(b"model")
    (media(settings) / "exports" / f"run_{run.pk}").mkdir(parents=True)
    (media(settings) / "exports" / f"run_{run.pk}" / "model.onnx").write_bytes(b"onnx")
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.SUCCEEDED, model_file=f"models/run_{run.pk}.keras"
    )
    DataSet.objects.filter(pk=dataset.pk).update(current_run=run)
    other = imported("Other", 2)
    folder = media(settings) / "datasets" / str(dataset.pk)
    assert len(files_under(folder)) == 8  # 4 images, 4 thumbnails (wider than a thumbnail: each has a WebP)

    job = dataset_delete(dataset=dataset)
    ended = job_execute(kind="deletion", job_id=job.pk)

    assert ended.status == "succeeded" and ended.images == 4 and ended.images_deleted == 4
    assert ended.dataset_id is None and ended.dataset_name == "Shapes"
    assert not DataSet.all_objects.filter(pk=dataset.pk).exists()
    assert not DataSetItem.objects.filter(dataset_id=dataset.pk).exists()
    assert not LabelCount.objects.filter(dataset_id=dataset.pk).exists()
    assert not TrainingRun.objects.filter(dataset_id=dataset.pk).exists()
    assert not folder.exists()
    assert not (media(settings) / "models" / f"run_{run.pk}.keras").exists()
    assert not (media(settings) / "exports" / f"run_{run.pk}").exists()
    # The other dataset is untouched.
    assert other.items.count() == 2 and len(files_under(media(settings) / "datasets" / str(other.pk))) == 4


def test_an_image_moved_to_another_dataset_keeps_its_file(settings):
    dataset = imported(count=3)
    other = imported("Other", 1)
    moved = dataset.items.order_by("id").first()
    dataset_item_update(item=moved, dataset=other)
    job = dataset_delete(dataset=dataset)
    assert job_execute(kind="deletion", job_id=job.pk).status == "succeeded"
    moved.refresh_from_db()
    assert Path(moved.image.path).is_file()
    assert (media(settings) / moved.thumbnail_name).is_file()
    assert len(files_under(media(settings) / "datasets" / str(dataset.pk))) == 2  # the moved image's only


def test_a_deletion_killed_midway_is_queued_again_and_finishes(monkeypatch, settings):
    settings.KERASUI_TRAINING_BACKEND = "none"
    dataset = DataSet.objects.create(name="Rows")
    add_images(dataset, 25)
    monkeypatch.setattr(services, "DELETION_BATCH", 10)
    job = dataset_delete(dataset=dataset)
    real_progress = services.lifecycle.job_progress
    calls = Counter()

    def killed_after_one_batch(**fields):
        calls[fields.get("phase")] += 1
        if fields.get("phase") == "images" and calls["images"] == 2:
            raise KeyboardInterrupt  # the process dies: nothing catches it, the job stays running
        return real_progress(**fields)

    monkeypatch.setattr(services.lifecycle, "job_progress", killed_after_one_batch)
    dead = f"{socket.gethostname()}:{2**22 + 12345}"
    with pytest.raises(KeyboardInterrupt):
        job_execute(kind="deletion", job_id=job.pk, worker=dead)
    job.refresh_from_db()
    assert job.status == "running" and 0 < DataSetItem.objects.filter(dataset_id=dataset.pk).count() < 25
    assert not DataSet.objects.filter(pk=dataset.pk).exists()  # never half visible

    # The watchdog (what a runner does at start and every few seconds) finds its process gone, queues
    # the job again and tells the runner (a Celery worker sends it as a message).
    heard = []
    assert watchdog.jobs_fail_interrupted(kinds=["deletion"], requeued=lambda *job: heard.append(job)) == 1
    job.refresh_from_db()
    assert job.status == "queued" and "queued again" in job.error and heard == [("deletion", job.pk)]

    monkeypatch.setattr(services.lifecycle, "job_progress", real_progress)
    ended = job_execute(kind="deletion", job_id=job.pk)
    assert ended.status == "succeeded" and ended.images_deleted == 25
    assert not DataSet.all_objects.filter(pk=dataset.pk).exists()
    assert not DataSetItem.objects.filter(dataset_id=dataset.pk).exists()


def test_an_import_of_a_dataset_being_deleted_fails_with_a_readable_message(db):
    dataset = imported()
    queued = dataset_import_request(dataset=dataset, file=io.BytesIO(zip_of({"a/9.png": png()})))
    # The import's job had been claimed by a worker just before the mark: it starts after it.
    ImportJob.objects.filter(pk=queued.pk).update(status="running")
    dataset_delete(dataset=dataset)
    queued.refresh_from_db()
    assert queued.status == "failed" and "was deleted" in queued.error

    late = ImportJob.objects.create(dataset=dataset, upload="imports/late.zip", status="queued")
    ended = job_execute(kind="import", job_id=late.pk)
    assert ended.status == "failed" and ended.error == "its dataset is being deleted: nothing was imported"
    assert DataSetItem.objects.filter(dataset_id=dataset.pk).count() == 3


def test_the_admin_says_the_dataset_is_going_and_the_bulk_action_too(admin_client):
    one, two, three = imported("One", 1), imported("Two", 2), imported("Three", 1)
    answer = admin_client.post(f"/admin/management/dataset/{one.pk}/delete/", {"post": "yes"}, follow=True)
    text = [str(message) for message in answer.context["messages"]]
    assert answer.status_code == 200 and any("'One' is gone from every list now" in line for line in text), text
    assert any("deletion job" in line for line in text)

    answer = admin_client.post(
        "/admin/management/dataset/",
        {"action": "delete_selected", "_selected_action": [two.pk, three.pk], "post": "yes"},
        follow=True,
    )
    text = " ".join(str(message) for message in answer.context["messages"])
    assert "'Three', 'Two' are gone from every list now" in text or "'Two', 'Three' are gone" in text, text
    assert "3 images" in text
    assert "Successfully deleted" not in text  # Django's own line would say it twice
    assert not DataSet.objects.exists() and DataSetDeletion.objects.count() == 3


def test_the_bulk_action_says_which_dataset_it_refused_and_not_that_all_were_deleted(admin_client):
    from training.services import training_run_create

    busy, idle = imported("Busy", 1), DataSet.objects.create(name="Idle")
    training_run_create(dataset=busy, enqueue=False)
    page = admin_client.post(
        "/admin/management/dataset/", {"action": "delete_selected", "_selected_action": [busy.pk, idle.pk]}
    ).content.decode()
    assert "0 images" not in page and "0 training runs" not in page  # an empty dataset lists nothing it lacks
    answer = admin_client.post(
        "/admin/management/dataset/",
        {"action": "delete_selected", "_selected_action": [busy.pk, idle.pk], "post": "yes"},
        follow=True,
    )
    text = [str(message) for message in answer.context["messages"]]
    assert any("'Busy' is being trained" in line for line in text), text
    job = DataSetDeletion.objects.get()
    said = f"'Idle' is gone from every list now, and its name can be used again (deletion job {job.pk})."
    assert said in text, text
    assert not any("Successfully deleted" in line for line in text), text
    assert list(DataSet.objects.values_list("name", flat=True)) == ["Busy"]


def test_a_dataset_being_deleted_answers_no_predictions(db):
    from management.errors import ServiceError
    from serving.prediction import prediction_current_run

    dataset = imported()
    dataset_delete(dataset=dataset)
    with pytest.raises(ServiceError, match=f"no dataset with id {dataset.pk}"):
        prediction_current_run(dataset_id=dataset.pk)


def test_a_run_queued_just_before_the_mark_fails_with_a_readable_message(db):
    from training.services import training_run_problem

    dataset = imported()
    run = training_run_create(dataset=dataset, enqueue=False)
    # It was queued in the instant before the mark (which refuses a dataset with an active run).
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.CANCELLED)
    dataset_delete(dataset=dataset)
    assert training_run_problem(run=run) == "its dataset is being deleted: nothing was trained"


def test_the_command_deletes_a_dataset_and_runs_a_failed_deletion_again(monkeypatch, settings):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    dataset = imported()
    job = dataset_delete(dataset=dataset)

    def broken(**fields):
        raise OSError("the bucket is away")

    monkeypatch.setattr(services, "storage_folder_delete", broken)
    failed = job_execute(kind="deletion", job_id=job.pk)
    assert failed.status == "failed" and "the bucket is away" in failed.error
    assert DataSet.all_objects.filter(pk=dataset.pk).exists() and not DataSet.objects.filter(pk=dataset.pk).exists()

    monkeypatch.undo()
    call_command("delete_dataset", str(dataset.pk))
    job.refresh_from_db()
    assert job.status == "succeeded" and not DataSet.all_objects.filter(pk=dataset.pk).exists()
    assert not (media(settings) / "datasets" / str(dataset.pk)).exists()

    other = imported("Other", 1)
    call_command("delete_dataset", str(other.pk))
    assert not DataSet.all_objects.filter(pk=other.pk).exists()
    with pytest.raises(CommandError, match="does not exist"):
        call_command("delete_dataset", str(other.pk))
