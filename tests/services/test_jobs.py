"""At most KERASUI_MAX_CONCURRENT_JOBS model validations, imports and exports at once, counted across
processes; beyond that a 429 that says when to come back (a request), or a wait (an export job)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from rest_framework.test import APIClient

from jobs.budgets import TooManyJobs, model_job_slot
from jobs.process import job_execute
from training.services import dataset_model_validate

ROOT = Path(django_settings.BASE_DIR)
HOLDER = """
import sys
from contextlib import ExitStack

import django

django.setup()
from jobs.budgets import model_job_slot

with ExitStack() as stack:
    for _ in range(int(sys.argv[1])):
        stack.enter_context(model_job_slot(what="holding a slot"))
    print("holding", flush=True)
    sys.stdin.read()
"""


class SlotHolder:
    """Another process holding `count` slots until it is closed."""

    def __init__(self, count: int, lock_dir: Path):
        environment = {**os.environ, "KERASUI_LOCK_DIR": str(lock_dir), "DJANGO_SETTINGS_MODULE": "kerasui.settings"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(count)],
            cwd=ROOT,
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline()
        assert line.strip() == "holding", line

    def close(self) -> None:
        self.process.stdin.close()
        assert self.process.wait(60) == 0


@pytest.fixture
def lock_dir(settings, tmp_path):
    settings.KERASUI_MAX_CONCURRENT_JOBS = 2
    settings.KERASUI_LOCK_DIR = tmp_path / "locks"
    return settings.KERASUI_LOCK_DIR


def test_a_job_beyond_the_cap_is_refused_and_a_freed_slot_is_taken(lock_dir):
    with model_job_slot(what="one"), model_job_slot(what="two"):
        with pytest.raises(TooManyJobs) as refused:
            with model_job_slot(what="exporting to onnx"):
                pass
    assert refused.value.status == 429 and refused.value.retry_after > 0
    assert "2 model jobs are running" in refused.value.message and "exporting to onnx" in refused.value.message
    with model_job_slot(what="three"):
        pass


def test_the_cap_holds_across_processes(lock_dir, colour_dataset):
    holder = SlotHolder(2, lock_dir)
    try:
        with pytest.raises(TooManyJobs):
            dataset_model_validate(dataset=colour_dataset)
    finally:
        holder.close()
    with model_job_slot(what="after the other process ended"):
        pass


def test_the_api_answers_429_for_validations_beyond_the_cap_and_an_export_job_waits_for_a_slot(
    lock_dir, trained_dataset, admin_user, admin_client
):
    api = APIClient()
    api.force_authenticate(admin_user)
    run = trained_dataset.current_run
    holder = SlotHolder(2, lock_dir)
    try:
        validation = api.post(f"/api/dataset/{trained_dataset.pk}/validate/", {}, format="json")
        assert validation.status_code == 429, validation.content[:300]
        assert int(validation["Retry-After"]) > 0
        assert "validating the model" in validation.json()["detail"][0]
        # An export is a job: asked for now, it is queued, never refused.
        export = api.get(f"/api/trainingrun/{run.pk}/model/?format=h5")
        assert export.status_code == 202 and export.json()["status"] == "queued"
        # The model itself needs no job: it still downloads.
        assert api.get(f"/api/trainingrun/{run.pk}/model/").status_code == 200
        page = admin_client.get(f"/admin/management/dataset/{trained_dataset.pk}/validate/", follow=True)
        assert page.status_code == 200 and "validating the model has to wait" in page.content.decode()
    finally:
        holder.close()
    job_execute(kind="export", job_id=export.json()["id"])  # the slots are free again
    assert api.get(f"/api/trainingrun/{run.pk}/model/?format=h5").status_code == 200
