"""Kept files in an S3 bucket (moto's S3 API in-process): items stored there, served through the media view
after its check, and folders deleted there."""

import io
import socket
import subprocess
import sys

import boto3
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from moto import mock_aws
from rest_framework.test import APIClient

from datasets.services import dataset_import_zip, storage_folder_delete
from jobs.lifecycle import job_log_keep, job_log_path
from management.files import media_folder_fetch, media_folder_keep, media_local_copy, media_response, media_write_bytes
from management.journal import media_journals_recover
from management.models import DataSet, HealthCheck
from ml import fit as ml_fit
from tests.images import png, zip_of

BUCKET = "kerasui-test"


@pytest.fixture
def bucket(settings, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        settings.AWS_STORAGE_BUCKET_NAME = BUCKET
        settings.AWS_S3_REGION_NAME = "us-east-1"
        settings.AWS_DEFAULT_ACL = None
        settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "kerasui.storage.BucketStorage"}}
        yield client


def keys(client) -> set[str]:
    return {entry["Key"] for entry in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


def test_an_uploaded_item_lives_in_the_bucket_and_is_served_by_the_media_view(bucket, admin_user, db):
    dataset = DataSet.objects.create(name="Pets")
    api = APIClient()
    api.force_authenticate(admin_user)
    image = png((200, 10, 10))

    made = api.post(
        "/api/datasetitem/",
        {
            "dataset": dataset.pk,
            "label": "cat",
            "image": SimpleUploadedFile("cat.png", image, content_type="image/png"),
        },
    )

    assert made.status_code == 201, made.content
    name = made.json()["image"].split("/media/", 1)[1]
    assert name in keys(bucket)
    assert made.json()["image"].endswith(f"/media/{name}")  # the media view's URL, not the bucket's
    served = api.get(f"/media/{name}")
    assert served.status_code == 200
    assert served["Content-Type"] == "image/png"
    assert served["Cache-Control"] == "private, no-store"
    assert b"".join(served.streaming_content) == image
    assert APIClient().get(f"/media/{name}").status_code in {401, 403}


def test_a_zip_import_puts_images_and_thumbnails_in_the_bucket_and_a_small_image_is_its_own(bucket, admin_user, db):
    dataset = DataSet.objects.create(name="Sizes")
    small, wide = png(size=(28, 28)), png(size=(300, 20))
    report = dataset_import_zip(dataset=dataset, file=io.BytesIO(zip_of({"a/small.png": small, "a/wide.png": wide})))
    assert report.added == 2
    items = {item.original_name: item for item in dataset.items.all()}
    stored = keys(bucket)
    assert {items["small.png"].image.name, items["wide.png"].image.name, items["wide.png"].thumbnail_name} <= stored
    assert items["small.png"].thumbnail_name == items["small.png"].image.name  # its own thumbnail: no WebP made
    assert not any(key.startswith(f"datasets/{dataset.pk}/thumbnails/") and "-t" in key for key in stored)
    assert sum(key.startswith(f"datasets/{dataset.pk}/thumbnails/") for key in stored) == 1  # the wide one's
    assert not any(key.startswith("journal/") for key in stored)  # a process's own journal stays on its disk
    api = APIClient()
    api.force_authenticate(admin_user)
    served = api.get(items["small.png"].thumbnail_url)
    assert served.status_code == 200 and served["Content-Type"] == "image/png"
    assert b"".join(served.streaming_content) == small
    thumbnail = api.get(items["wide.png"].thumbnail_url)
    assert thumbnail.status_code == 200 and thumbnail["Content-Type"] == "image/webp"


def test_a_bucket_file_is_streamed_even_when_a_front_server_sends_local_files(bucket, settings):
    settings.KERASUI_MEDIA_SERVER = "nginx"
    default_storage.save("logs/run_1.log", ContentFile(b"epoch 1\n"))

    response = media_response("logs/run_1.log")

    assert "X-Accel-Redirect" not in response
    assert b"".join(response.streaming_content) == b"epoch 1\n"


def test_deleting_a_folder_deletes_its_objects_and_no_other(bucket):
    for name in ("exports/run_1/model.onnx", "exports/run_1/deep/model.tflite", "exports/run_2/model.onnx"):
        default_storage.save(name, ContentFile(b"bytes"))

    storage_folder_delete(storage=default_storage, name="exports/run_1")

    assert keys(bucket) == {"exports/run_2/model.onnx"}


def test_deleting_a_folder_spares_a_longer_named_one_and_the_files_it_is_told_to_keep(bucket):
    names = ("datasets/1/a.png", "datasets/1/thumbnails/a.webp", "datasets/1/b.png", "datasets/10/c.png")
    for name in names:
        default_storage.save(name, ContentFile(b"bytes"))

    storage_folder_delete(storage=default_storage, name="datasets/1", keep={"datasets/1/b.png"})
    assert keys(bucket) == {"datasets/1/b.png", "datasets/10/c.png"}
    storage_folder_delete(storage=default_storage, name="datasets/1")
    assert keys(bucket) == {"datasets/10/c.png"}


def test_a_deletion_job_empties_the_bucket_of_its_dataset(bucket, db):
    from datasets.services import dataset_delete, dataset_import_zip
    from jobs.process import job_execute
    from tests.images import zip_of

    dataset, other = DataSet.objects.create(name="Gone"), DataSet.objects.create(name="Kept")
    for each in (dataset, other):
        dataset_import_zip(
            dataset=each,
            file=io.BytesIO(zip_of({"a/1.png": png(size=(300, 20)), "b/2.png": png((0, 9, 0), size=(300, 20))})),
        )
    assert len(keys(bucket)) == 8  # two images and their thumbnails each (wider than a thumbnail: WebPs)

    job = dataset_delete(dataset=dataset)
    assert job_execute(kind="deletion", job_id=job.pk).status == "succeeded"

    assert keys(bucket) and all(key.startswith(f"datasets/{other.pk}/") for key in keys(bucket))
    assert len(keys(bucket)) == 4


def test_a_kept_file_is_written_to_the_bucket_and_replaced_whole(bucket):
    media_write_bytes(name="explanations/run_1/item_2-abc.png", data=b"first")
    media_write_bytes(name="explanations/run_1/item_2-abc.png", data=b"second")

    assert keys(bucket) == {"explanations/run_1/item_2-abc.png"}
    assert bucket.get_object(Bucket=BUCKET, Key="explanations/run_1/item_2-abc.png")["Body"].read() == b"second"


def test_a_model_in_the_bucket_is_read_from_a_copy_in_this_machines_cache(bucket, settings, tmp_path):
    settings.KERASUI_CACHE_DIR = tmp_path / "cache"
    default_storage.save("models/run_3.keras", ContentFile(b"weights"))

    copy = media_local_copy(name="models/run_3.keras")

    assert copy.is_relative_to(tmp_path / "cache") and copy.read_bytes() == b"weights"
    bucket.put_object(Bucket=BUCKET, Key="models/run_3.keras", Body=b"new weights")
    assert media_local_copy(name="models/run_3.keras").read_bytes() == b"new weights"


def test_crash_recovery_deletes_an_interrupted_uploads_objects_in_the_bucket(bucket, settings, tmp_path, db):
    settings.MEDIA_ROOT = tmp_path / "media"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    default_storage.save("datasets/1/orphan.png", ContentFile(b"half"))
    default_storage.save("datasets/1/kept.png", ContentFile(b"other"))
    journal = tmp_path / "media" / "journal" / f"{socket.gethostname()}-{dead.pid}-abcd1234.txt"
    journal.parent.mkdir(parents=True)
    journal.write_text("datasets/1/orphan.png\n../datasets/1/kept.png\n")

    assert media_journals_recover() == ["datasets/1/orphan.png"]
    assert keys(bucket) == {"datasets/1/kept.png"}
    assert not journal.exists()


def test_a_checkpoint_kept_on_one_machine_is_where_another_resumes_from(bucket, settings, tmp_path):
    settings.KERASUI_CACHE_DIR = tmp_path / "machine-1"
    folder = media_folder_fetch(name="checkpoints/run_4")
    assert folder.is_relative_to(tmp_path / "machine-1") and list(folder.iterdir()) == []
    (folder / "epoch-0001.keras").write_bytes(b"epoch 1")
    (folder / "best.weights.h5").write_bytes(b"best of 1")
    media_folder_keep(name="checkpoints/run_4", folder=folder)
    (folder / "epoch-0001.keras").unlink()
    (folder / "epoch-0002.keras").write_bytes(b"epoch 2")
    (folder / "best.weights.h5").write_bytes(b"best of 2")  # the same size: still uploaded again
    media_folder_keep(name="checkpoints/run_4", folder=folder)
    assert keys(bucket) == {"checkpoints/run_4/epoch-0002.keras", "checkpoints/run_4/best.weights.h5"}

    settings.KERASUI_CACHE_DIR = tmp_path / "machine-2"
    elsewhere = media_folder_fetch(name="checkpoints/run_4")

    assert elsewhere.is_relative_to(tmp_path / "machine-2")
    assert {path.name: path.read_bytes() for path in elsewhere.iterdir()} == {
        "epoch-0002.keras": b"epoch 2",
        "best.weights.h5": b"best of 2",
    }
    assert ml_fit.last_checkpoint(elsewhere) == (2, elsewhere / "epoch-0002.keras")


def test_a_stale_local_checkpoint_gives_way_to_the_buckets(bucket, settings, tmp_path):
    settings.KERASUI_CACHE_DIR = tmp_path / "cache"
    folder = media_folder_fetch(name="checkpoints/run_5")
    (folder / "epoch-0003.keras").write_bytes(b"this machine's epoch 3")
    default_storage.save("checkpoints/run_5/epoch-0006.keras", ContentFile(b"another machine's epoch 6"))

    again = media_folder_fetch(name="checkpoints/run_5")

    assert [path.name for path in again.iterdir()] == ["epoch-0006.keras"]


def test_a_jobs_log_goes_to_the_bucket_and_a_job_run_again_elsewhere_goes_on_with_it(bucket, settings, tmp_path, db):
    settings.KERASUI_CACHE_DIR = tmp_path / "machine-1"
    run = HealthCheck.objects.create(dataset=DataSet.objects.create(name="Logs"))
    path = job_log_path(job=run)
    assert path.is_relative_to(tmp_path / "machine-1")
    path.write_text("Epoch 1/2\n")
    job_log_keep(kind=HealthCheck.KIND, job_id=run.pk)
    name = f"logs/health_{run.pk}.log"
    assert HealthCheck.objects.get(pk=run.pk).log_file.name == name
    assert bucket.get_object(Bucket=BUCKET, Key=name)["Body"].read() == b"Epoch 1/2\n"

    settings.KERASUI_CACHE_DIR = tmp_path / "machine-2"
    resumed = job_log_path(job=run)
    with resumed.open("a") as log:
        log.write("Epoch 2/2\n")
    job_log_keep(kind=HealthCheck.KIND, job_id=run.pk)

    assert bucket.get_object(Bucket=BUCKET, Key=name)["Body"].read() == b"Epoch 1/2\nEpoch 2/2\n"


def test_a_name_sent_again_replaces_its_object_even_with_overwrite_turned_off(settings):
    """A job's log is sent whole every few seconds under the same name: a deployment's
    AWS_S3_FILE_OVERWRITE=False must not make a new object each time."""
    from kerasui.storage import BucketStorage

    settings.AWS_S3_FILE_OVERWRITE = False
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="overwrite-test")
        storage = BucketStorage(bucket_name="overwrite-test", region_name="us-east-1")
        assert storage.save("logs/job_1.log", ContentFile(b"one\n")) == "logs/job_1.log"
        assert storage.save("logs/job_1.log", ContentFile(b"one\ntwo\n")) == "logs/job_1.log"
        assert storage.open("logs/job_1.log").read() == b"one\ntwo\n"
