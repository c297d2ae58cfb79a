"""The health-check lifecycle: every change of a HealthCheck's status, by the table TRANSITIONS.

The only module that writes `HealthCheck.status` (compare-and-set in the database, as runs.py does for
runs). The web's use cases (health.py), the runner (health_runner.py) and the check's process
(health_job.py) call it; it imports none of them.
"""

from __future__ import annotations

from django.db.models.functions import Now
from django.utils import timezone

from management.models import HealthCheck

Status = HealthCheck.Status

# event: (the statuses a check may make it from, the status it leaves the check in).
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "claim": ((Status.QUEUED,), Status.RUNNING),  # its process started working on it
    "progress": ((Status.RUNNING,), Status.RUNNING),  # phase and progress, a sign of life
    "finish": ((Status.RUNNING,), Status.DONE),  # its report is written
    "fail": ((Status.QUEUED, Status.RUNNING), Status.FAILED),  # it cannot go on, or its process was lost
    "cancel": ((Status.QUEUED, Status.RUNNING), Status.CANCELLED),  # a person stopped it
}


def _move(check_id: int, event: str, **fields) -> bool:
    sources, target = TRANSITIONS[event]
    return bool(HealthCheck.objects.filter(pk=check_id, status__in=sources).update(status=target, **fields))


def health_check_cancel_move(*, check_id: int) -> bool:
    return _move(check_id, "cancel", finished_at=timezone.now())


def health_check_claim(*, check_id: int, worker: str) -> HealthCheck | None:
    if not _move(check_id, "claim", worker=worker, started_at=timezone.now(), heartbeat_at=Now()):
        return None
    return HealthCheck.objects.get(pk=check_id)


def health_check_progress(*, check_id: int, phase: str, progress: float) -> bool:
    """Show what the check does now; False once it is not running (cancelled)."""
    progress = min(1.0, max(0.0, round(progress, 4)))
    return _move(check_id, "progress", phase=phase, progress=progress, heartbeat_at=Now())


def health_check_heartbeat(*, check_id: int) -> bool:
    """Record that the check's process is alive; False once the check is not running."""
    return _move(check_id, "progress", heartbeat_at=Now())


def health_check_finish(*, check_id: int, report: dict) -> bool:
    return _move(check_id, "finish", report=report, progress=1.0, phase="", finished_at=timezone.now())


def health_check_fail(*, check_id: int, message: str) -> bool:
    return _move(check_id, "fail", error=message, finished_at=timezone.now())
