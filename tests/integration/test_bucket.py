"""Two machines that share only PostgreSQL, Redis and an S3 bucket (moto's server on loopback).

The test process is the web machine; a real Celery worker runs in another folder, with its own
KERASUI_DATA_DIR, media and cache. A zip goes in through the web, the worker imports and trains it, the
web predicts and downloads from the bucket, and deleting the dataset empties the bucket of it. Needs
KERASUI_TEST_S3_ENDPOINT (as .ci/run sets: `moto_server -H 127.0.0.1 -p 5000`) besides the integration
suite's servers.
"""

import base64
import io
import os
import uuid
import zipfile
from pathlib import Path

import boto3
import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from management.models import DataSet, DataSetDeletion, TrainingRun
from tests.images import colour_image, colour_zip
from tests.integration.conftest import HEARTBEAT_TIMEOUT, Workers
from tests.integration.test_celery_workers import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

ENDPOINT = os.environ.get("KERASUI_TEST_S3_ENDPOINT", "")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_S3_REGION_NAME": "us-east-1"}


@pytest.fixture(scope="module")
def bucket():
    """A new bucket on the S3 endpoint; fail (never skip) when it was not given or does not answer."""
    if not ENDPOINT:
        pytest.fail("KERASUI_INTEGRATION is set but KERASUI_TEST_S3_ENDPOINT is not: start moto_server (see .ci/run)")
    client = boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        region_name=CREDENTIALS["AWS_S3_REGION_NAME"],
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    name = f"kerasui-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    yield client, name
    for entry in client.list_objects_v2(Bucket=name).get("Contents", []):
        client.delete_object(Bucket=name, Key=entry["Key"])
    client.delete_bucket(Bucket=name)


def keys(bucket) -> set[str]:
    client, name = bucket
    return {entry["Key"] for entry in client.list_objects_v2(Bucket=name).get("Contents", [])}


@pytest.fixture(scope="module")
def worker_machine(servers, bucket, tmp_path_factory, django_db_blocker):
    """A Celery worker in its own folder: its own data folder (media, cache, locks), nothing shared but
    the database, the broker and the bucket."""
    from django.db import connection

    with django_db_blocker.unblock():
        database_name = connection.settings_dict["NAME"]
    folder = tmp_path_factory.mktemp("worker-machine")
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in {"KERASUI_MEDIA_ROOT", "KERASUI_CACHE_DIR", "KERASUI_LOCK_DIR", "KERASUI_WEIGHTS_DIR"}
    }
    environment.update(
        {
            **CREDENTIALS,
            "DJANGO_SETTINGS_MODULE": "kerasui.settings",
            "KERASUI_DATA_DIR": str(folder / "data"),
            "KERASUI_DATABASE_NAME": str(database_name),
            "AWS_STORAGE_BUCKET_NAME": bucket[1],
            "AWS_S3_ENDPOINT_URL": ENDPOINT,
            "KERASUI_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
            "KERASUI_PREPROCESS_WORKERS": "1",
            "CELERY_BROKER_URL": django_settings.CELERY_BROKER_URL,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONUNBUFFERED": "1",
        }
    )
    pool = Workers(folder, environment)
    try:
        pool.ensure("w3")
        yield pool, folder / "data"
    finally:
        pool.stop_all()


@pytest.fixture
def web_machine(settings, bucket, worker_machine, tmp_path):
    """This process as a web machine on the bucket, with a data folder of its own."""
    from jobs import runner as runners

    for name, value in CREDENTIALS.items():
        setattr(settings, name, value)
    settings.AWS_STORAGE_BUCKET_NAME = bucket[1]
    settings.AWS_S3_ENDPOINT_URL = ENDPOINT
    settings.AWS_DEFAULT_ACL = None
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "kerasui.storage.BucketStorage"}}
    settings.MEDIA_ROOT = tmp_path / "web" / "media"
    settings.KERASUI_CACHE_DIR = tmp_path / "web" / "cache"
    settings.KERASUI_LOCK_DIR = tmp_path / "web" / "locks"
    settings.KERASUI_TRAINING_BACKEND = "celery"
    settings.KERASUI_HEARTBEAT_TIMEOUT = HEARTBEAT_TIMEOUT
    runners.reset()
    yield tmp_path / "web"
    runners.reset()


def files_under(folder: Path) -> list[str]:
    return (
        sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()) if folder.exists() else []
    )


def test_a_worker_sharing_no_folder_trains_from_the_bucket_and_the_web_serves_from_it(
    admin_user, bucket, worker_machine, web_machine
):
    workers, worker_data = worker_machine
    api = APIClient()
    api.force_authenticate(admin_user)
    dataset = DataSet.objects.create(
        name="Colours", image_size=16, epochs=1, batch_size=8, early_stopping_patience=0, architecture="code"
    )

    upload = api.post(f"/api/dataset/{dataset.pk}/upload/", {"file": SimpleUploadedFile("c.zip", colour_zip(6))})
    assert upload.status_code == 202, upload.content
    imported = wait_until(
        lambda: api.get(upload["Location"]).json()["status"] in {"succeeded", "failed"}, 120, "the import", workers
    )
    assert imported and api.get(upload["Location"]).json()["status"] == "succeeded", api.get(upload["Location"]).json()
    assert dataset.items.count() == 18
    assert all(item.image.name in keys(bucket) for item in dataset.items.all())

    started = api.post(f"/api/dataset/{dataset.pk}/train/")
    assert started.status_code == 202, started.content
    run_id = started.json()["id"]
    wait_until(lambda: not TrainingRun.objects.get(pk=run_id).is_active, 300, f"run {run_id} ends", workers)
    run = TrainingRun.objects.get(pk=run_id)
    assert run.status == "succeeded", run.error
    assert run.worker.startswith("w3@machine-3:")
    kept = keys(bucket)
    assert {run.model_file.name, run.log_file.name, f"exports/run_{run.pk}/model.onnx"} <= kept, kept
    assert not any(key.startswith("checkpoints/") for key in kept), "a succeeded run's checkpoints are deleted"
    # The worker puts the log in the bucket while the run goes on and once more when its process ends.
    wait_until(
        lambda: f"Run {run.pk} finished" in api.get(f"/media/{run.log_file.name}").getvalue().decode(),
        30,
        "the whole log in the bucket",
        workers,
    )

    # The web machine predicts with the model the worker put in the bucket, and downloads it.
    image = base64.b64encode(colour_image("red", seed=99)).decode()
    answer = api.post("/api/test/", {"dataset": dataset.pk, "image": image}, format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json()["run"] == run.pk and answer.json()["label"] == "red", answer.json()
    assert TrainingRun.objects.get(pk=run.pk).serving_engine == "onnxruntime"
    assert (web_machine / "cache" / "media" / f"exports/run_{run.pk}/model.onnx").is_file()  # fetched from the bucket
    onnx = api.get(f"/api/dataset/{dataset.pk}/model/?format=onnx")
    assert onnx.status_code == 200, onnx.content
    assert (
        onnx.getvalue() == bucket[0].get_object(Bucket=bucket[1], Key=f"exports/run_{run.pk}/model.onnx")["Body"].read()
    )
    bundle = api.get(f"/api/dataset/{dataset.pk}/model/?bundle=true")
    assert bundle.status_code == 200, bundle.content
    assert "labels.json" in zipfile.ZipFile(io.BytesIO(bundle.getvalue())).namelist()

    # Neither machine kept a file in its own media folder: all of them are in the bucket.
    assert files_under(web_machine / "media") == []
    assert files_under(worker_data / "media") == []

    # Deleting it is a job too (the request only marks it): once it ends, the bucket keeps nothing of the
    # dataset but the deletion's own log.
    assert api.delete(f"/api/dataset/{dataset.pk}/").status_code == 204
    deletion = DataSetDeletion.objects.get(dataset_number=dataset.pk)
    wait_until(lambda: not DataSetDeletion.objects.get(pk=deletion.pk).is_active, 120, "the deletion", workers)
    deletion.refresh_from_db()
    assert deletion.status == "succeeded", deletion.error
    assert keys(bucket) <= {f"logs/deletion_{deletion.pk}.log"}, keys(bucket)
