"""Runs enqueued through the API, trained by two real Celery workers over Redis and PostgreSQL."""

import io
import time
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from datasets.models import DataSet
from datasets.services import dataset_import_zip
from tests.images import colour_zip
from tests.integration.conftest import HEARTBEAT_TIMEOUT
from training.models import TrainingRun

pytestmark = pytest.mark.django_db(transaction=True)


def colour_dataset(name: str, epochs: int) -> DataSet:
    dataset = DataSet.objects.create(name=name, image_size=16, epochs=epochs, batch_size=8, early_stopping_patience=0)
    dataset_import_zip(dataset=dataset, file=io.BytesIO(colour_zip(10)))
    return dataset


@pytest.fixture
def client(admin_user):
    client = APIClient()
    client.force_authenticate(admin_user)
    return client


def train(client: APIClient, dataset: DataSet) -> int:
    response = client.post(f"/api/dataset/{dataset.pk}/train/")
    assert response.status_code == 202, response.content
    return response.json()["id"]


def wait_until(condition, timeout: float, what: str, workers=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    logs = "" if workers is None else "\n".join(workers.log(name)[-2000:] for name in workers.processes)
    raise AssertionError(f"not within {timeout} s: {what}\n{logs}")


def ended(run_id: int) -> TrainingRun | None:
    run = TrainingRun.objects.get(pk=run_id)
    return None if run.is_active else run


def test_two_runs_train_at_once_on_two_workers_and_each_records_its_worker(client, celery_backend):
    first, second = colour_dataset("First", 40), colour_dataset("Second", 40)
    run_ids = [train(client, first), train(client, second)]

    def both_running():
        runs = list(TrainingRun.objects.filter(pk__in=run_ids, status="running", epoch__gte=1))
        return runs if len(runs) == 2 else None

    running = wait_until(both_running, 120, "both runs training at the same time", celery_backend)
    nodes = {run.worker.rsplit(":", 1)[0] for run in running}
    assert nodes == {"w1@machine-1", "w2@machine-2"}

    runs = [wait_until(lambda run_id=run_id: ended(run_id), 300, f"run {run_id} ends") for run_id in run_ids]
    for run in runs:
        assert run.status == "succeeded", run.error
        assert run.metrics["val_accuracy"] >= 0.9
        assert "Epoch 40/40" in Path(run.log_file.path).read_text()
        detail = client.get(f"/api/trainingrun/{run.pk}/").json()
        assert detail["worker"] == run.worker and detail["worker"].startswith(("w1@machine-1:", "w2@machine-2:"))


def test_cancelling_a_run_on_a_worker_stops_it_and_the_worker_takes_the_next_runs(client, celery_backend):
    dataset = colour_dataset("Long", 5000)
    run_id = train(client, dataset)
    wait_until(lambda: TrainingRun.objects.get(pk=run_id).epoch >= 1, 120, "the run trains", celery_backend)
    node = TrainingRun.objects.get(pk=run_id).worker.rsplit(":", 1)[0]
    name = node.split("@")[0]

    response = client.post(f"/api/trainingrun/{run_id}/cancel/")
    assert response.status_code == 200, response.content
    run = TrainingRun.objects.get(pk=run_id)
    log = Path(run.log_file.path)
    wait_until(lambda: "was cancelled" in log.read_text(), 30, "the training process stops", celery_backend)
    # The task ends with its training process; the worker itself goes on.
    wait_until(lambda: "succeeded in" in celery_backend.log(name), 30, "the task ends", celery_backend)
    run.refresh_from_db()
    assert run.status == "cancelled" and run.epoch < 5000 and not run.model_file
    assert celery_backend.processes[name].poll() is None

    # Two runs at once take both workers, so the one that cancelled takes one of them.
    next_ids = [train(client, colour_dataset("Next 1", 3)), train(client, colour_dataset("Next 2", 3))]
    runs = [wait_until(lambda run_id=run_id: ended(run_id), 300, f"run {run_id} ends") for run_id in next_ids]
    assert all(run.status == "succeeded" for run in runs), [run.error for run in runs]
    assert node in {run.worker.rsplit(":", 1)[0] for run in runs}


def test_a_killed_worker_leaves_its_run_interrupted_and_the_run_resumes_on_another(client, celery_backend):
    dataset = colour_dataset("Killed", 60)
    run_id = train(client, dataset)
    wait_until(lambda: len(TrainingRun.objects.get(pk=run_id).history) >= 2, 120, "epoch 2", celery_backend)
    node = TrainingRun.objects.get(pk=run_id).worker.rsplit(":", 1)[0]
    celery_backend.kill(node.split("@")[0])
    killed_at = time.monotonic()

    run = wait_until(lambda: ended(run_id), HEARTBEAT_TIMEOUT + 20, "the run is marked interrupted", celery_backend)
    assert time.monotonic() - killed_at >= HEARTBEAT_TIMEOUT - 2  # found by its heartbeat, not sooner
    assert run.status == "failed" and run.interrupted and run.resumable, run.error
    assert run.error.startswith(f"interrupted: no sign of life from its training process ({node}:")
    completed = len(run.history)
    assert 2 <= completed < 60
    assert client.get(f"/api/trainingrun/{run_id}/").json()["interrupted"] is True

    response = client.post(f"/api/trainingrun/{run_id}/resume/")
    assert response.status_code == 202, response.content
    run = wait_until(lambda: ended(run_id), 300, "the resumed run ends", celery_backend)
    assert run.status == "succeeded", run.error
    assert run.worker.rsplit(":", 1)[0] != node  # the other worker: the killed one is gone
    assert [row["epoch"] for row in run.history] == list(range(1, 61))
    assert "Resuming from the checkpoint of epoch" in Path(run.log_file.path).read_text()
