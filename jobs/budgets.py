"""How much long work runs at once: one budget, with a setting per job kind, counted in the database
(every machine's jobs of the kind), plus the per-user rate of starts a kind may have.

Beside it, the slots of short model work a request waits for (validating model code, inspecting an
imported model): KERASUI_MAX_CONCURRENT_JOBS child processes on this machine, counted across its
processes by file locks (released by the operating system if a process dies); beyond that, 429.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone
from filelock import FileLock, Timeout

from jobs.registry import kind_get
from management.errors import ServiceError

# A validation takes a few seconds: a client asked to wait this long mostly finds a free slot.
RETRY_AFTER_SECONDS = 10


class TooManyJobs(ServiceError):
    """Every slot is taken, or the user started too many jobs of a kind lately: try again later."""

    status = 429

    def __init__(self, message: str, *, field: str = "detail", retry_after: int = RETRY_AFTER_SECONDS):
        super().__init__(message, field=field)
        self.retry_after = retry_after


def job_budget(*, kind: str) -> int:
    """How many jobs of `kind` may run at once (its setting; at least 1)."""
    return max(1, int(getattr(settings, kind_get(kind).budget_setting)))


def job_rate_check(*, kind: str, user, setting: str) -> None:
    """Refuse (429) a user's start of a `kind` job beyond `setting` starts per minute (0: no limit).

    Counted from the jobs themselves (created_by, created_at), so every web worker sees the same count.
    """
    limit = int(getattr(settings, setting))
    if limit <= 0 or user is None or not getattr(user, "pk", None):
        return
    model = kind_get(kind).model_class
    since = timezone.now() - timedelta(seconds=60)
    if model.objects.filter(created_by=user, created_at__gte=since).count() >= limit:
        raise TooManyJobs(
            f"at most {limit} {kind} jobs a minute per user ({setting}): try again in a minute",
            retry_after=60,
        )


@contextmanager
def model_job_slot(*, what: str) -> Iterator[None]:
    """Hold one of the KERASUI_MAX_CONCURRENT_JOBS slots while the block runs (0: no cap).

    `what` names the work in the refusal ("validating the model", "checking the imported model").
    """
    limit = settings.KERASUI_MAX_CONCURRENT_JOBS
    if limit <= 0:
        yield
        return
    folder = Path(settings.KERASUI_LOCK_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(limit):
        slot = FileLock(folder / f"model-job-{number}.lock", timeout=0)
        try:
            slot.acquire()
        except Timeout:
            continue
        try:
            yield
        finally:
            slot.release()
        return
    jobs = "job is" if limit == 1 else "jobs are"
    raise TooManyJobs(
        f"{limit} model {jobs} running (validations, imports and exports; at most KERASUI_MAX_CONCURRENT_JOBS "
        f"at once): {what} has to wait; try again in {RETRY_AFTER_SECONDS} seconds"
    )
