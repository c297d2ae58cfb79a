"""The one runner and watchdog for every job kind: what starts a process, what a lost process leaves."""

import subprocess
import sys

import pytest

from datasets.models import DataSet
from health import services as health
from health.models import HealthCheck
from jobs import lifecycle, runner, watchdog
from jobs.budgets import TooManyJobs
from tests.images import colour_image
from training import services as training
from training.models import TrainingRun


@pytest.fixture
def dataset(db):
    from django.core.files.base import ContentFile

    from datasets.services import dataset_item_create

    dataset = DataSet.objects.create(name="Jobs", image_size=16)
    for label in ("red", "blue"):
        dataset_item_create(dataset=dataset, label=label, file=ContentFile(colour_image(label, seed=1)))
    return dataset


class Started(list):
    """Records the jobs whose process the runner would start, and starts a harmless one instead."""

    def __call__(self, *, job, worker=None, die_with_parent=False):
        self.append((job.KIND, job.pk))
        process = subprocess.Popen([sys.executable, "-c", "pass"])
        name = lifecycle.this_worker(process.pid)
        lifecycle.job_start(kind=job.KIND, job_id=job.pk, worker=name)
        return runner.Child(kind=job.KIND, job_id=job.pk, process=process, worker=name)


def test_a_cancelled_health_check_never_starts_its_process(dataset, monkeypatch):
    started = Started()
    monkeypatch.setattr(runner, "job_process_start", started)
    check, _ = health.health_check_start(dataset=dataset, enqueue=False)
    health.health_check_cancel(check=check)
    runner.ThreadRunner().step()
    assert started == []
    check.refresh_from_db()
    assert check.status == "cancelled" and check.started_at is None and check.worker == ""


def test_the_runner_starts_every_kind_within_its_budget_and_a_process_that_ends_early_fails_its_job(
    dataset, monkeypatch, settings
):
    settings.KERASUI_MAX_CONCURRENT_RUNS = 1
    settings.KERASUI_MAX_CONCURRENT_HEALTH_CHECKS = 1
    other = DataSet.objects.create(name="Other")
    run = training.training_run_create(dataset=dataset, enqueue=False)
    waiting = training.training_run_create(dataset=other, enqueue=False)
    check, _ = health.health_check_start(dataset=dataset, enqueue=False)
    started = Started()
    monkeypatch.setattr(runner, "job_process_start", started)
    threads = runner.ThreadRunner()
    threads.step()
    assert started == [("training", run.pk), ("health", check.pk)]  # the second run waits for the budget
    assert TrainingRun.objects.get(pk=waiting.pk).status == "queued"
    for child in threads._children:
        child.process.wait()
    threads.step()  # the processes exited 0 without ending their jobs: lost
    run.refresh_from_db()
    check.refresh_from_db()
    assert run.status == "failed" and run.interrupted and "training process ended without finishing" in run.error
    assert check.status == "failed" and "health check's process ended without finishing" in check.error
    assert started[-1] == ("training", waiting.pk)  # its slot was free again


def test_a_lost_health_check_whose_process_was_killed_is_failed_by_the_watchdog_and_a_new_one_can_start(dataset):
    check, _ = health.health_check_start(dataset=dataset, enqueue=False)
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    lifecycle.job_claim(kind="health", job_id=check.pk, worker=lifecycle.this_worker(process.pid))
    assert watchdog.jobs_watch() == 0  # alive, and beating (claimed just now)
    process.kill()
    process.wait()
    assert watchdog.jobs_watch() == 1
    check.refresh_from_db()
    assert check.status == "failed"
    assert check.error.startswith("interrupted: the health check's process stopped before it finished")
    new, created = health.health_check_start(dataset=dataset, enqueue=False)
    assert created and new.pk != check.pk and new.status == "queued"


def test_a_check_of_another_machine_that_stopped_beating_is_failed_on_the_databases_clock(dataset):
    from datetime import timedelta

    from django.utils import timezone

    check, _ = health.health_check_start(dataset=dataset, enqueue=False)
    lifecycle.job_claim(kind="health", job_id=check.pk, worker="w1@far-away:42")
    assert watchdog.jobs_fail_stale(timeout=60) == 0
    HealthCheck.objects.filter(pk=check.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=90))
    assert watchdog.jobs_fail_stale(timeout=60) == 1
    check.refresh_from_db()
    assert check.status == "failed"
    assert "no sign of life from its health check's process (w1@far-away:42)" in check.error


def test_health_check_starts_count_against_a_per_user_rate(dataset, settings, django_user_model):
    settings.KERASUI_HEALTH_STARTS_PER_MINUTE = 2
    user = django_user_model.objects.create_user("checker")
    for _ in range(2):
        check, created = health.health_check_start(dataset=dataset, user=user, enqueue=False)
        assert created
        health.health_check_cancel(check=check)
    with pytest.raises(TooManyJobs, match="KERASUI_HEALTH_STARTS_PER_MINUTE"):
        health.health_check_start(dataset=dataset, user=user, enqueue=False)
    # A queued check is answered as before, without counting a start.
    other = django_user_model.objects.create_user("other")
    queued, _ = health.health_check_start(dataset=dataset, user=other, enqueue=False)
    again, created = health.health_check_start(dataset=dataset, user=user, enqueue=False)
    assert again.pk == queued.pk and not created
