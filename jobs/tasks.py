"""Celery tasks (KERASUI_TRAINING_BACKEND=celery): a worker runs the job whose kind and id it receives.

Each worker also runs the watchdog, so a job whose worker or machine died never stays "running".
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

from jobs import lifecycle, runner, watchdog
from jobs.registry import kind_get

logger = logging.getLogger(__name__)


@shared_task(bind=True, name="jobs.run", max_retries=0)
def run_job(self, kind: str, job_id: int) -> str:
    """Run queued job `kind` `job_id` on this worker; do nothing if it is no longer queued."""
    return job_celery_execute(kind=kind, job_id=job_id, node=self.request.hostname)


def job_celery_execute(*, kind: str, job_id: int, node: str) -> str:
    """What a Celery worker does with a job: claim it, run its process, watch it.

    A job that is no longer queued is not run again (a cancelled job never starts; a message
    delivered twice, or again after its worker died, finds its job running or ended): it is left
    alone, or failed by the watchdog when its process stopped beating.
    """
    job = lifecycle.job_claim(kind=kind, job_id=job_id, worker=f"{node}:{os.getpid()}")
    if job is None:
        watchdog.jobs_watch(requeued=runner.enqueue)
        status = lifecycle.job_status(kind=kind, job_id=job_id)
        logger.info("%s job %s is %s, not queued: not run again", kind, job_id, status or "deleted")
        return f"skipped: {status or 'deleted'}"
    try:
        # The job's process dies with this worker process (time limit, worker killed), so a lost
        # worker never leaves a job running unsupervised.
        child = runner.job_process_start(job=job, worker=node, die_with_parent=True)
    except OSError as error:
        lifecycle.job_fail(kind=kind, job_id=job_id, message=f"cannot start its process: {error}")
        return "failed"
    try:
        while True:
            try:
                code = child.process.wait(timeout=runner.POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                runner.stop_if_cancelled(child)
                runner.job_log_keep_now_and_then(child)
    except SoftTimeLimitExceeded:
        child.process.terminate()
        try:
            child.process.wait(timeout=runner.CANCEL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            child.process.kill()
        child.log_kept_at = 0.0
        runner.job_log_keep_now_and_then(child)
        lost = lifecycle.job_fail(
            kind=kind,
            job_id=job_id,
            message=(
                f"interrupted: it took longer than KERASUI_TRAINING_TIME_LIMIT "
                f"({settings.KERASUI_TRAINING_TIME_LIMIT} s) and was stopped. {kind_get(kind).lost_hint}"
            ),
            lost=True,
        )
        if lost and lifecycle.job_lost_is_queued_again(kind=kind):
            runner.enqueue(kind, job_id)
        return "time limit"
    runner.job_process_ended(child=child, code=code)
    return lifecycle.job_status(kind=kind, job_id=job_id) or "deleted"


def _watchdog(stop: threading.Event) -> None:
    interval = max(1.0, min(runner.WATCHDOG_SECONDS, settings.KERASUI_HEARTBEAT_TIMEOUT / 3))
    while True:
        try:
            failed = watchdog.jobs_watch(requeued=runner.enqueue)
            if failed:
                logger.warning("%s job(s) without a heartbeat marked failed", failed)
        except Exception:  # noqa: BLE001 - the database may be away for a moment; try again
            logger.warning("the job watchdog's check failed", exc_info=True)
        finally:
            # No connection is kept open between checks: the pool's processes are forked from this one.
            connection.close()
        if stop.wait(interval):
            return


@worker_ready.connect
def start_watchdog(sender=None, **kwargs) -> None:
    """In the worker's main process: check at once (jobs of this host's dead processes), then regularly."""
    threading.Thread(target=_watchdog, args=(threading.Event(),), name="kerasui-watchdog", daemon=True).start()
