"""The watchdog of every job kind: a running job whose process is lost is failed with a reason.

Lost means: no heartbeat for KERASUI_HEARTBEAT_TIMEOUT seconds by the database's clock (which every
machine shares), or its worker is a process of this host that no longer exists. The runners call it
every few seconds; a job's end then frees its dataset for the next one.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db.models import DateTimeField, ExpressionWrapper, Q
from django.db.models.functions import Coalesce, Now

from jobs import lifecycle
from jobs.registry import KINDS, kind_get
from management.processes import pid_alive

# Called with (kind, job id) for a lost job its kind queues again (a dataset deletion): the runner's
# `enqueue`, passed by the caller (this module cannot import the runner, which imports it).
Requeued = Callable[[str, int], None] | None


def _lost(name: str, job_id: int, requeued: Requeued, **arguments) -> int:
    moved = lifecycle.job_fail(kind=name, job_id=job_id, lost=True, **arguments)
    if moved and requeued is not None and lifecycle.job_lost_is_queued_again(kind=name):
        requeued(name, job_id)
    return int(moved)


def jobs_fail_stale(*, timeout: int | None = None, kinds: list[str] | None = None, requeued: Requeued = None) -> int:
    """Fail running jobs whose last sign of life is older than `timeout` seconds (the database's clock);
    a kind that queues a lost job again does so, and `requeued` hears of it."""
    timeout = settings.KERASUI_HEARTBEAT_TIMEOUT if timeout is None else timeout
    limit = ExpressionWrapper(Now() - timedelta(seconds=timeout), output_field=DateTimeField())

    def stale(jobs):
        return jobs.alias(last_sign=Coalesce("heartbeat_at", "started_at")).filter(last_sign__lt=limit)

    failed = 0
    for name in kinds or KINDS:
        kind = kind_get(name)
        for job in stale(kind.model_class.objects.filter(status=lifecycle.RUNNING)).only("pk", "worker"):
            failed += _lost(
                name,
                job.pk,
                requeued,
                message=(
                    f"interrupted: no sign of life from its {kind.noun} ({job.worker or 'unknown worker'}) "
                    f"for more than {timeout} s: the process, its worker or its machine stopped. {kind.lost_hint}"
                ),
                narrow=stale,  # it may have beaten meanwhile
            )
    return failed


def jobs_fail_interrupted(*, kinds: list[str] | None = None, requeued: Requeued = None) -> int:
    """Fail running jobs whose process was one of this host's and no longer exists.

    `worker` is `host:pid` (thread runner, commands) or `node@host:pid` (a Celery worker's).
    """
    host = socket.gethostname()
    failed = 0
    for name in kinds or KINDS:
        kind = kind_get(name)
        candidates = kind.model_class.objects.filter(status=lifecycle.RUNNING).filter(
            Q(worker__startswith=f"{host}:") | Q(worker__contains=f"@{host}:")
        )
        for job in candidates.only("pk", "worker"):
            where, _, pid = job.worker.rpartition(":")
            if where.rpartition("@")[2] == host and pid.isdigit() and not pid_alive(int(pid)):
                failed += _lost(
                    name,
                    job.pk,
                    requeued,
                    message=f"interrupted: the {kind.noun} stopped before it finished "
                    f"(was it killed, or the server restarted?). {kind.lost_hint}",
                    narrow=lambda jobs, worker=job.worker: jobs.filter(worker=worker),
                )
    return failed


def jobs_watch(*, kinds: list[str] | None = None, requeued: Requeued = None) -> int:
    """One round of the watchdog over every kind: this host's dead processes, then stale heartbeats."""
    return jobs_fail_interrupted(kinds=kinds, requeued=requeued) + jobs_fail_stale(kinds=kinds, requeued=requeued)
