"""Celery tasks: a worker trains the run whose id it receives (KERASUI_TRAINING_BACKEND=celery).

Each worker also watches for runs whose training process stopped beating (a worker or machine
that died mid-run) and marks them interrupted, so no run stays "running" forever.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_ready
from django.conf import settings
from django.db import connection

from management import supervisor
from management.models import TrainingRun
from management.services import runs

logger = logging.getLogger(__name__)


@shared_task(bind=True, name="management.tasks.train_run", max_retries=0)
def train_run(self, run_id: int) -> str:
    """Train queued run `run_id` on this worker; do nothing if it is no longer queued."""
    return celery_execute(run_id=run_id, node=self.request.hostname)


def celery_execute(*, run_id: int, node: str) -> str:
    """What a Celery worker does with a run's id: claim it, train it in a subprocess, watch it.

    A run that is no longer queued is not trained again (a cancelled run never starts; a message
    delivered twice, or again after its worker died, finds its run running or ended): the run is
    left alone, or marked interrupted when its training process stopped beating.
    """
    run = runs.run_claim(run_id=run_id, worker=f"{node}:{os.getpid()}")
    if run is None:
        runs.runs_fail_interrupted()
        runs.runs_fail_stale()
        status = TrainingRun.objects.filter(pk=run_id).values_list("status", flat=True).first()
        logger.info("run %s is %s, not queued: not trained again", run_id, status or "deleted")
        return f"skipped: {status or 'deleted'}"
    try:
        # The training process dies with this worker process (time limit, worker killed), so a
        # lost worker never leaves a run training unsupervised.
        process = supervisor.start_training_process(run, worker=node, die_with_parent=True)
    except OSError as error:
        runs.run_fail(run_id=run_id, message=f"cannot start the training process: {error}")
        return "failed"
    child = supervisor.Child(run_id=run_id, process=process)
    try:
        while True:
            try:
                code = process.wait(timeout=supervisor.POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                supervisor.stop_if_cancelled(child)
    except SoftTimeLimitExceeded:
        process.terminate()
        try:
            process.wait(timeout=supervisor.CANCEL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
        runs.run_fail(
            run_id=run_id,
            message=(
                f"interrupted: the run took longer than KERASUI_TRAINING_TIME_LIMIT "
                f"({settings.KERASUI_TRAINING_TIME_LIMIT} s) and was stopped. {runs.INTERRUPTED_HINT}"
            ),
            interrupted=True,
        )
        return "time limit"
    supervisor.training_process_ended(run_id=run_id, code=code)
    return TrainingRun.objects.filter(pk=run_id).values_list("status", flat=True).first() or "deleted"


def _watchdog(stop: threading.Event) -> None:
    interval = max(1.0, min(supervisor.WATCHDOG_SECONDS, settings.KERASUI_HEARTBEAT_TIMEOUT / 3))
    while True:
        try:
            runs.runs_fail_interrupted()
            failed = runs.runs_fail_stale()
            if failed:
                logger.warning("%s run(s) without a heartbeat marked interrupted", failed)
        except Exception:  # noqa: BLE001 - the database may be away for a moment; try again
            logger.warning("the training watchdog's check failed", exc_info=True)
        finally:
            # No connection is kept open between checks: the pool's processes are forked from this one.
            connection.close()
        if stop.wait(interval):
            return


@worker_ready.connect
def start_watchdog(sender=None, **kwargs) -> None:
    """In the worker's main process: check at once (runs of this host's dead processes), then regularly."""
    threading.Thread(target=_watchdog, args=(threading.Event(),), name="kerasui-watchdog", daemon=True).start()


@shared_task(bind=True, name="management.tasks.check_health", max_retries=0)
def check_health(self, check_id: int) -> str:
    """Compute queued health check `check_id` in a subprocess of this worker (health_runner.py)."""
    from management import health_runner

    return health_runner.supervise(check_id, die_with_parent=True)
