"""A cap on the model jobs run in child processes beside the web server: validating model code,
inspecting an imported model, exporting. Each starts TensorFlow and loads a model (memory, cores), so
at most KERASUI_MAX_CONCURRENT_JOBS run at once on this machine, counted across all its processes
by file locks (released by the operating system if a process dies); beyond that the request is
refused with 429 and asked to come back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from filelock import FileLock, Timeout

from management.services.errors import ServiceError

# A validation takes a few seconds, an export up to a minute: a client asked to wait this long
# mostly finds a free slot.
RETRY_AFTER_SECONDS = 10


class TooManyJobs(ServiceError):
    """Every slot for model jobs is taken: try again later."""

    status = 429

    def __init__(self, message: str, *, field: str = "detail", retry_after: int = RETRY_AFTER_SECONDS):
        super().__init__(message, field=field)
        self.retry_after = retry_after


@contextmanager
def model_job_slot(*, what: str) -> Iterator[None]:
    """Hold one of the KERASUI_MAX_CONCURRENT_JOBS slots while the block runs (0: no cap).

    `what` names the job in the refusal ("validating the model", "exporting to onnx").
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
