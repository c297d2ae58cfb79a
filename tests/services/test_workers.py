"""Jobs on other machines: heartbeats, the watchdog, and what a Celery task does with a job's kind and id
(shown with training runs, the kind with the most moves)."""

import socket
import time
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from datasets.models import DataSet
from jobs import runner as runners
from jobs import watchdog
from jobs.process import job_heartbeat
from jobs.tasks import job_celery_execute
from training import runs
from training import services as training
from training.models import TrainingRun

Status = TrainingRun.Status
DEAD_PID = 2**22 + 12345


def running(name: str, worker: str) -> TrainingRun:
    run = training.training_run_create(dataset=DataSet.objects.create(name=name), enqueue=False)
    return runs.run_claim(run_id=run.pk, worker=worker)


def test_a_run_whose_heartbeat_is_older_than_the_timeout_is_marked_interrupted_and_resumable(db):
    lost = running("Lost", "w1@far-away:4242")
    alive = running("Alive", "w2@far-away:4343")
    TrainingRun.objects.filter(pk=lost.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=90), checkpoint=f"checkpoints/run_{lost.pk}"
    )
    assert watchdog.jobs_fail_stale(timeout=60) == 1
    lost.refresh_from_db()
    alive.refresh_from_db()
    assert lost.status == Status.FAILED and lost.interrupted and lost.resumable
    assert "no sign of life from its training process (w1@far-away:4242) for more than 60 s" in lost.error
    assert alive.status == Status.RUNNING


def test_a_claimed_run_counts_as_alive_until_its_process_beats(db):
    run = running("Starting", "w1@far-away:1")
    assert run.heartbeat_at is not None
    assert watchdog.jobs_fail_stale(timeout=60) == 0


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_thread_beats_while_the_run_runs_and_stops_when_it_ends():
    run = running("Beating", "here:1")
    old = timezone.now() - timedelta(seconds=300)
    TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at=old)
    with job_heartbeat(kind="training", job_id=run.pk, interval=0.1):
        time.sleep(0.6)
        run.refresh_from_db()
        assert run.heartbeat_at > old + timedelta(seconds=200)
        training.training_run_cancel(run=run)
    assert not runs.run_heartbeat(run_id=run.pk)


def test_runs_of_dead_celery_worker_processes_on_this_host_are_marked_interrupted(db):
    host = socket.gethostname()
    dead = running("Dead", f"w1@{host}:{DEAD_PID}")
    elsewhere = running("Elsewhere", f"w1@other-{host}:{DEAD_PID}")
    assert watchdog.jobs_fail_interrupted() == 1
    dead.refresh_from_db()
    elsewhere.refresh_from_db()
    assert dead.status == Status.FAILED and dead.interrupted
    assert elsewhere.status == Status.RUNNING  # another machine's process: the heartbeat decides


def test_a_task_for_a_run_that_is_no_longer_queued_trains_nothing(db):
    cancelled = training.training_run_create(dataset=DataSet.objects.create(name="Cancelled"), enqueue=False)
    training.training_run_cancel(run=cancelled)
    assert job_celery_execute(kind="training", job_id=cancelled.pk, node="w1@here") == "skipped: cancelled"

    # Delivered again while another worker trains it: left alone.
    busy = running("Busy", "w2@far-away:77")
    assert job_celery_execute(kind="training", job_id=busy.pk, node="w1@here") == "skipped: running"
    busy.refresh_from_db()
    assert busy.status == Status.RUNNING and busy.worker == "w2@far-away:77"

    # Delivered again after its worker died: marked interrupted, never trained twice.
    TrainingRun.objects.filter(pk=busy.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=3600))
    assert job_celery_execute(kind="training", job_id=busy.pk, node="w1@here") == "skipped: failed"
    busy.refresh_from_db()
    assert busy.interrupted and busy.worker == "w2@far-away:77"
    assert job_celery_execute(kind="training", job_id=424242, node="w1@here") == "skipped: deleted"


def test_the_celery_backend_sends_only_the_run_id_after_commit(
    colour_dataset, settings, monkeypatch, django_capture_on_commit_callbacks
):
    from kerasui.celery import app

    sent = []
    monkeypatch.setattr(app, "send_task", lambda name, args, queue: sent.append((name, args, queue)))
    settings.KERASUI_TRAINING_BACKEND = "celery"
    runners.reset()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError), transaction.atomic():
            training.training_run_create(dataset=colour_dataset)
            raise RuntimeError("rolled back: nothing is sent")
    assert callbacks == [] and sent == []
    with django_capture_on_commit_callbacks(execute=True):
        run = training.training_run_create(dataset=colour_dataset)
        assert sent == []
    assert sent == [("jobs.run", ["training", run.pk], "training")]


def test_an_unreachable_broker_fails_the_run_with_a_readable_message(
    colour_dataset, settings, monkeypatch, django_capture_on_commit_callbacks
):
    from kerasui.celery import app

    def refuse(name, args, queue):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(app, "send_task", refuse)
    settings.KERASUI_TRAINING_BACKEND = "celery"
    runners.reset()
    with django_capture_on_commit_callbacks(execute=True):
        run = training.training_run_create(dataset=colour_dataset)
    run.refresh_from_db()
    assert run.status == Status.FAILED and not run.interrupted
    assert run.error.startswith("not started: the task queue (CELERY_BROKER_URL) cannot be reached")


def test_the_celery_app_is_configured_for_long_trainings(settings):
    from kerasui.celery import app

    conf = app.conf
    assert conf.task_acks_late is True and conf.worker_prefetch_multiplier == 1
    assert conf.task_reject_on_worker_lost is False  # a lost worker's run is not trained again
    assert conf.task_time_limit > conf.task_soft_time_limit >= settings.KERASUI_TRAINING_TIME_LIMIT
    assert conf.task_routes["jobs.run"] == {"queue": "training"}
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
    import management.tasks  # noqa: F401 - what the worker's autodiscovery imports

    assert app.tasks["jobs.run"].max_retries == 0
