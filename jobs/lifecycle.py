"""The job lifecycle: every change of a job's status, for every kind, by one transition table per kind.

The only module that writes a job's `status`. Each move is a compare-and-set on the status in the
database, so processes racing for one job (a cancel during a claim, the watchdog and a finishing
process) settle there. The common moves are COMMON; a kind adds its own in its registry entry.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import QuerySet
from django.db.models.functions import Now
from django.utils import timezone

from jobs.models import Job, JobStatus
from jobs.registry import kind_get
from management.errors import Conflict

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = JobStatus.values

# event: (the statuses a job may make it from, the status it leaves the job in). No source: a new job.
# An event whose source is its target records something about a job in that status (progress, a beat).
COMMON: dict[str, tuple[tuple[str, ...], str]] = {
    "queue": ((), QUEUED),  # a person (or the system) asks for it
    "claim": ((QUEUED,), RUNNING),  # a runner, a worker or the command itself takes it
    "start": ((RUNNING,), RUNNING),  # its process started: which one
    "progress": ((RUNNING,), RUNNING),  # phase, progress, heartbeat, partial results
    "succeed": ((RUNNING,), SUCCEEDED),  # its result is written
    "fail": ((QUEUED, RUNNING), FAILED),  # it cannot go on (its own error)
    "interrupt": ((QUEUED, RUNNING), FAILED),  # its process was lost
    "cancel": ((QUEUED, RUNNING), CANCELLED),  # a person stopped it
}


def transitions(kind: str) -> dict[str, tuple[tuple[str, ...], str]]:
    """The table of `kind`: the common moves and its own."""
    return COMMON | kind_get(kind).transitions


class IllegalTransition(Conflict):
    """A job asked to make a move its kind's table does not allow from its status."""

    def __init__(self, kind: str, job_id: int, event: str, status: str | None):
        noun = "run" if kind == "training" else f"{kind} job"
        field = "run" if kind == "training" else "job"
        super().__init__(f"{noun} {job_id} cannot {event}: it is {status or 'deleted'}", field=field)
        self.kind, self.job_id, self.event, self.status = kind, job_id, event, status


def _model(kind: str):
    return kind_get(kind).model_class


def job_status(*, kind: str, job_id: int) -> str | None:
    return _model(kind).objects.filter(pk=job_id).values_list("status", flat=True).first()


def job_move(
    *,
    kind: str,
    job_id: int,
    event: str,
    fields: dict | None = None,
    narrow: Callable[[QuerySet], QuerySet] | None = None,
) -> bool:
    """The one write of a status: compare-and-set from the event's sources; True when it happened."""
    sources, target = transitions(kind)[event]
    if not sources:
        raise ValueError(f"'{event}' makes a new {kind} job; it is not a move of job {job_id}")
    jobs = _model(kind).objects.filter(pk=job_id, status__in=sources)
    if narrow is not None:
        jobs = narrow(jobs)
    return bool(jobs.update(status=target, **(fields or {})))


def job_transition(*, kind: str, job_id: int, event: str, **fields) -> None:
    """Move a job by `event`, writing `fields` with it; IllegalTransition when its status forbids it."""
    if not job_move(kind=kind, job_id=job_id, event=event, fields=fields):
        raise IllegalTransition(kind, job_id, event, job_status(kind=kind, job_id=job_id))


def job_create(*, kind: str, fields: dict, event: str = "queue") -> Job:
    """A new job of `kind` in the status `event` makes (the database's one-active-per-dataset
    constraint raises IntegrityError for a second active one: callers say so in their words)."""
    sources, target = transitions(kind)[event]
    if sources:
        raise ValueError(f"'{event}' moves an existing {kind} job; it does not make one")
    with transaction.atomic():
        return _model(kind).objects.create(**fields, status=target)


def this_worker(pid: int | None = None) -> str:
    return f"{socket.gethostname()}:{pid or os.getpid()}"


def job_claim(*, kind: str, job_id: int, worker: str, **fields) -> Job | None:
    """Move a queued job to running for `worker`; None when it was not queued any more (a cancelled
    job is never claimed, so its process never starts)."""
    fields = dict(started_at=timezone.now(), heartbeat_at=Now(), worker=worker, progress=0, phase="") | fields
    if not job_move(kind=kind, job_id=job_id, event="claim", fields=fields):
        return None
    return _model(kind).objects.get(pk=job_id)


def job_claim_next(*, kind: str, worker: str, max_running: int) -> Job | None:
    """Claim the oldest queued job of `kind` if fewer than `max_running` of them run (every machine's)."""
    model = _model(kind)
    with transaction.atomic():
        if model.objects.filter(status=RUNNING).count() >= max_running:
            return None
        job = model.objects.filter(status=QUEUED).order_by("created_at", "id").first()
        if job is None:
            return None
        return job_claim(kind=kind, job_id=job.pk, worker=worker)


def job_start(*, kind: str, job_id: int, worker: str) -> bool:
    """Record which process runs the job (`host:pid`, or a Celery node's); False once it is not running."""
    return job_move(kind=kind, job_id=job_id, event="start", fields={"worker": worker})


def job_progress(*, kind: str, job_id: int, **fields) -> bool:
    """Write what the job does now (phase, progress 0–1, partial results) and a sign of life; False once
    it is not running (cancelled, or lost and failed by the watchdog)."""
    if "progress" in fields:
        fields["progress"] = min(1.0, max(0.0, round(float(fields["progress"]), 4)))
    return job_move(kind=kind, job_id=job_id, event="progress", fields={"heartbeat_at": Now(), **fields})


def job_heartbeat(*, kind: str, job_id: int) -> bool:
    """Record that the job's process is alive (the database's clock); False once it is not running."""
    return job_move(kind=kind, job_id=job_id, event="progress", fields={"heartbeat_at": Now()})


def job_succeed(*, kind: str, job_id: int, narrow=None, **fields) -> bool:
    """End a running job as succeeded with its results; False when it was not running any more."""
    fields = dict(progress=1.0, phase="", finished_at=timezone.now()) | fields
    return job_move(kind=kind, job_id=job_id, event="succeed", fields=fields, narrow=narrow)


def job_fail(*, kind: str, job_id: int, message: str, lost: bool = False, narrow=None, **fields) -> bool:
    """End an active job as failed with a readable message; False if it had already ended.

    `lost`: its process stopped without ending it (the kind's lost event and fields, e.g. a training
    run is interrupted and resumable).
    """
    definition = kind_get(kind)
    event = definition.lost_event if lost else "fail"
    fields = {"error": message, "finished_at": timezone.now(), **(definition.lost_fields if lost else {}), **fields}
    return job_move(kind=kind, job_id=job_id, event=event, fields=fields, narrow=narrow)


def job_lost_is_queued_again(*, kind: str) -> bool:
    """Whether a lost job of `kind` is queued again rather than failed (a dataset deletion): whoever
    noticed the loss then hands it to the runner (a Celery worker needs a message for it)."""
    return transitions(kind)[kind_get(kind).lost_event][1] == QUEUED


def job_cancel(*, kind: str, job_id: int) -> bool:
    """Cancel a queued or running job; a running one stops at its next progress write."""
    return job_move(kind=kind, job_id=job_id, event="cancel", fields={"finished_at": timezone.now()})


def job_log_name(*, kind: str, job_id: int) -> str:
    """The name in media storage of a job's log."""
    return f"logs/{kind_get(kind).log_prefix}_{job_id}.log"


def _log_on_this_disk() -> bool:
    try:
        default_storage.path("")
    except NotImplementedError:  # a bucket
        return False
    return True


def _log_local_path(name: str) -> Path:
    """Where this machine writes a log: the file itself on this disk; with a bucket, its copy in this
    machine's cache (KERASUI_CACHE_DIR/media, where management/files.py's media_local_copy looks too)."""
    if _log_on_this_disk():
        path = Path(default_storage.path(name))
    else:
        path = Path(settings.KERASUI_CACHE_DIR) / "media" / PurePosixPath(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def job_log_path(*, job: Job) -> Path:
    """Give the job its log file in media storage (logs/<kind>_<id>.log) and return where this machine
    writes it: the file itself on this disk; with a bucket, a local copy that `job_log_keep` uploads."""
    name = job_log_name(kind=job.KIND, job_id=job.pk)
    path = _log_local_path(name)
    if not _log_on_this_disk() and default_storage.exists(name):
        # A job run again (a resumed training run) goes on with the log the bucket has, wherever it ran.
        with default_storage.open(name, "rb") as kept:
            path.write_bytes(kept.read())
    type(job).objects.filter(pk=job.pk).update(log_file=name)
    job.log_file.name = name
    return path


def job_log_keep(*, kind: str, job_id: int) -> None:
    """With a bucket, put the log this machine has written so far into it (whole: logs are small), so
    every web machine shows it; on this disk the log is kept where it is written."""
    if _log_on_this_disk():
        return
    name = job_log_name(kind=kind, job_id=job_id)
    path = _log_local_path(name)
    if path.is_file():
        # Read once: the job's process may be appending to it meanwhile. The bucket replaces it whole.
        default_storage.save(name, ContentFile(path.read_bytes()))
