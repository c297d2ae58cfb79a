"""What a job's own process does (`manage.py job KIND ID`): claim the job if it is still queued, beat
while it works, and run its kind's `execute(job=...)`, which ends the job through the lifecycle.

Whatever the kind's code raises, the job does not stay "running": it fails with the error's words.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.db import connection

from jobs import lifecycle
from jobs.models import Job
from jobs.registry import kind_get

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 1.0


class Heartbeat:
    """Calls `beat()` every `interval` seconds in a daemon thread until the block ends or `beat()`
    returns False: long phases (building a backbone, saving a large model) write no progress, and the
    watchdog tells a dead process from a slow one by this beat."""

    def __init__(self, beat: Callable[[], bool | None], *, interval: float = HEARTBEAT_SECONDS, name: str) -> None:
        self.beat, self.interval = beat, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    if self.beat() is False:
                        return
                except Exception:  # noqa: BLE001 - a missed beat is retried; the job goes on
                    continue
        finally:
            connection.close()


def job_heartbeat(*, kind: str, job_id: int, interval: float = HEARTBEAT_SECONDS) -> Heartbeat:
    return Heartbeat(
        lambda: lifecycle.job_heartbeat(kind=kind, job_id=job_id), interval=interval, name=f"heartbeat-{kind}-{job_id}"
    )


class NotRunnable(Exception):
    """The job does not exist, or is neither queued nor running (cancelled before it started, ended)."""


def job_execute(*, kind: str, job_id: int, worker: str | None = None) -> Job:
    """Run job `kind` `job_id` in this process to its end; the job as it ended.

    A queued job is claimed here (run by hand, or by a deployment's own scheduler); a running one was
    claimed by the runner that started this process. NotRunnable for any other, before any work.
    """
    definition = kind_get(kind)
    model = definition.model_class
    worker = worker or lifecycle.this_worker()
    status = lifecycle.job_status(kind=kind, job_id=job_id)
    if status == lifecycle.QUEUED:
        lifecycle.job_claim(kind=kind, job_id=job_id, worker=worker)
    job = model.objects.filter(pk=job_id).first()
    if job is None or job.status != lifecycle.RUNNING:
        raise NotRunnable(f"{kind} job {job_id} is {getattr(job, 'status', None) or 'deleted'}, not queued")
    with job_heartbeat(kind=kind, job_id=job_id):
        try:
            definition.function("execute")(job=job)
        except Exception as error:  # noqa: BLE001 - whatever happens, the job must not stay "running"
            logger.exception("%s job %s failed unexpectedly", kind, job_id)
            lifecycle.job_fail(kind=kind, job_id=job_id, message=f"unexpected error: {type(error).__name__}: {error}")
    job.refresh_from_db()
    return job
