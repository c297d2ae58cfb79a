"""The real thing: the `train` command in a real subprocess, and the thread runner started by the API."""

import base64
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection
from rest_framework.test import APIClient

from datasets.models import DataSet
from datasets.services import dataset_import_zip
from tests.images import COLOURS, colour_image, colour_zip
from training.models import TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(django_settings.BASE_DIR)


def manage(*args: str) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "KERASUI_DATABASE_NAME": str(connection.settings_dict["NAME"]),
        "KERASUI_MEDIA_ROOT": str(django_settings.MEDIA_ROOT),
        "KERASUI_CACHE_DIR": str(django_settings.KERASUI_CACHE_DIR),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


def colour_dataset(name: str = "Colours") -> DataSet:
    dataset = DataSet.objects.create(name=name, image_size=16, epochs=5, batch_size=8)
    dataset_import_zip(dataset=dataset, file=io.BytesIO(colour_zip(10)))
    return dataset


def test_train_command_trains_in_the_foreground_and_the_model_predicts_correctly(admin_user):
    dataset = colour_dataset()
    completed = manage("train", str(dataset.pk))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "succeeded" in completed.stdout and "Epoch 5/5" in completed.stdout

    run = TrainingRun.objects.get(dataset=dataset)
    assert run.status == "succeeded" and run.progress == 1.0 and len(run.history) == 5
    assert Path(run.model_file.path).exists() and "Epoch 5/5" in Path(run.log_file.path).read_text()
    client = APIClient()
    client.force_authenticate(admin_user)
    for label in COLOURS:
        image = base64.b64encode(colour_image(label, seed=123_456)).decode()
        response = client.post("/api/test/", {"image": image, "dataset": dataset.pk}, format="json")
        assert response.json()["result"] == label


def test_train_command_failure_exits_non_zero_with_one_line():
    dataset = DataSet.objects.create(name="Empty")
    completed = manage("train", str(dataset.pk))
    assert completed.returncode == 1
    run = TrainingRun.objects.get(dataset=dataset)
    assert completed.stderr.strip().splitlines() == [
        f"CommandError: run {run.pk} failed: the dataset has no images: add labelled images before training"
    ]
    assert "Traceback" not in completed.stderr
    missing = manage("train", "424242")
    assert missing.returncode == 1 and missing.stderr.strip() == "CommandError: dataset 424242 does not exist"
    not_resumable = manage("train", "--resume", str(run.pk))
    assert not_resumable.returncode == 1
    assert not_resumable.stderr.strip() == (
        f"CommandError: run {run.pk} cannot be resumed: it failed by itself (see its error); train again instead"
    )
    assert manage("train", "--resume", "424242").stderr.strip() == "CommandError: training run 424242 does not exist"


def wait_for(run_id: int, timeout: float = 300) -> TrainingRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = TrainingRun.objects.get(pk=run_id)
        if not run.is_active:
            return run
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} still {run.status} after {timeout} s")


def test_train_through_the_api_runs_in_a_background_process_one_at_a_time(admin_user, settings):
    settings.KERASUI_TRAINING_BACKEND = "thread"
    first, second = colour_dataset("First"), colour_dataset("Second")
    second.process = "model.add(Flatten())\nmodel.add(Dense('oops'))"
    second.save()
    client = APIClient()
    client.force_authenticate(admin_user)

    first_run = client.post(f"/api/dataset/{first.pk}/train/").json()
    second_run = client.post(f"/api/dataset/{second.pk}/train/").json()
    assert first_run["status"] == "queued"

    seen_progress = set()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        runs = {run.pk: run for run in TrainingRun.objects.all()}
        running = [run for run in runs.values() if run.status == "running"]
        assert len(running) <= 1  # one at a time by default
        seen_progress.add(runs[first_run["id"]].progress)
        if not runs[second_run["id"]].is_active:
            break
        time.sleep(0.2)

    done = wait_for(first_run["id"])
    failed = wait_for(second_run["id"])
    assert done.status == "succeeded", done.error
    assert done.worker and done.started_at < done.finished_at
    assert len(seen_progress) > 2  # progress was visible while it trained
    assert failed.status == "failed" and failed.error.startswith("model code: line 2:")
    assert failed.started_at >= done.finished_at  # the second waited for the first
    assert "model code" in Path(failed.log_file.path).read_text()
    detail = client.get(f"/api/trainingrun/{done.pk}/").json()
    assert detail["status"] == "succeeded" and detail["metrics"]["val_accuracy"] >= 0.9
    image = base64.b64encode(colour_image("blue", seed=8)).decode()
    assert client.post("/api/test/", {"image": image, "dataset": first.pk}, format="json").json()["result"] == "blue"


def test_cancelling_a_running_run_stops_its_process(admin_user, settings):
    settings.KERASUI_TRAINING_BACKEND = "thread"
    dataset = colour_dataset()
    dataset.epochs = 500
    dataset.save()
    client = APIClient()
    client.force_authenticate(admin_user)
    run_id = client.post(f"/api/dataset/{dataset.pk}/train/").json()["id"]
    deadline = time.monotonic() + 120
    while TrainingRun.objects.get(pk=run_id).epoch < 1:
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.2)
    from training.services import training_run_cancel

    training_run_cancel(run=TrainingRun.objects.get(pk=run_id))
    time.sleep(3)
    run = TrainingRun.objects.get(pk=run_id)
    assert run.status == "cancelled" and run.epoch < 500 and not run.model_file
    log = Path(run.log_file.path).read_text()
    deadline = time.monotonic() + 30
    while "was cancelled" not in log and time.monotonic() < deadline:
        time.sleep(0.5)
        log = Path(run.log_file.path).read_text()
    assert "was cancelled" in log


def test_a_killed_training_process_leaves_the_run_interrupted_and_it_resumes_where_it_stopped(admin_user, settings):
    import signal

    settings.KERASUI_TRAINING_BACKEND = "thread"
    dataset = colour_dataset()
    dataset.epochs = 40
    dataset.early_stopping_patience = 0
    dataset.save()
    client = APIClient()
    client.force_authenticate(admin_user)
    run_id = client.post(f"/api/dataset/{dataset.pk}/train/").json()["id"]
    deadline = time.monotonic() + 120
    while len(TrainingRun.objects.get(pk=run_id).history) < 2:
        assert time.monotonic() < deadline, "training never got to epoch 2"
        time.sleep(0.1)
    pid = int(TrainingRun.objects.get(pk=run_id).worker.rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)

    run = wait_for(run_id, timeout=30)
    assert run.status == "failed" and run.interrupted and run.resumable
    assert run.error.startswith("interrupted: the training process was killed by signal SIGKILL")
    completed = len(run.history)
    assert 2 <= completed < 40

    dataset.epochs = 3  # the run keeps its own snapshot: editing the dataset changes nothing
    dataset.save()
    resumed = client.post(f"/api/trainingrun/{run_id}/resume/")
    assert resumed.status_code == 202, resumed.content
    run = wait_for(run_id, timeout=300)
    assert run.status == "succeeded", run.error
    assert [row["epoch"] for row in run.history] == list(range(1, 41))
    log = Path(run.log_file.path).read_text()
    assert "Resuming from the checkpoint of epoch" in log
    # The checkpoints are deleted once "succeeded" is committed, so they may outlive the status briefly.
    folder = Path(django_settings.MEDIA_ROOT) / f"checkpoints/run_{run_id}"
    deadline = time.monotonic() + 30
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not folder.exists()


def test_train_command_resumes_a_cancelled_run_in_the_foreground():
    from training import services as training

    dataset = colour_dataset()
    dataset.epochs = 2
    dataset.save()
    run = training.training_run_create(dataset=dataset, enqueue=False)
    TrainingRun.objects.filter(pk=run.pk).update(status="cancelled", checkpoint=f"checkpoints/run_{run.pk}")
    completed = manage("train", "--resume", str(run.pk))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert f"run {run.pk} succeeded" in completed.stdout
    run.refresh_from_db()
    assert run.status == "succeeded" and len(run.history) == 2
