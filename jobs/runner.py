"""How queued jobs of every kind get executed (KERASUI_TRAINING_BACKEND): each in its own process,
`manage.py job KIND ID`, with its output in the job's log file.

thread (the embedded default): one daemon thread of the web process claims queued jobs in order, at
most each kind's budget (jobs/budgets.py) at a time, starts their processes and watches them (a
cancelled one is terminated after a grace period; one that ends leaving its job active lost it), and
runs the watchdog. celery: the job's kind and id go to the `training` queue; the worker's task
(jobs/tasks.py) claims it and supervises the very same process. none: jobs stay queued (tests, or
deployments that run `manage.py job` themselves).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, connection, transaction

from jobs import lifecycle, watchdog
from jobs.budgets import job_budget
from jobs.models import Job
from jobs.registry import KINDS, kind_get

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
# A cancelled job's process gets this long to stop by itself before it is terminated.
CANCEL_GRACE_SECONDS = 15.0
# How often jobs whose process stopped beating are looked for.
WATCHDOG_SECONDS = 5.0
# How often the log of a running job is put in the bucket, for the pages of other machines.
LOG_KEEP_SECONDS = 10.0


@dataclass
class Child:
    """A started job process and the job it runs."""

    kind: str
    job_id: int
    process: subprocess.Popen
    worker: str
    cancelled_at: float | None = None
    log_kept_at: float = 0.0


def job_environment() -> dict[str, str]:
    """The environment of a job's process: the same database, media and caches as this process (media
    is KERASUI_MEDIA_ROOT on this disk, or the bucket of the AWS_* variables it inherits)."""
    environment = dict(os.environ)
    environment["KERASUI_DATABASE_NAME"] = str(connection.settings_dict["NAME"])
    environment["KERASUI_MEDIA_ROOT"] = str(settings.MEDIA_ROOT)
    environment["KERASUI_CACHE_DIR"] = str(settings.KERASUI_CACHE_DIR)
    environment["DJANGO_SETTINGS_MODULE"] = os.environ.get("DJANGO_SETTINGS_MODULE", "kerasui.settings")
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    environment["PYTHONUNBUFFERED"] = "1"
    # The web workers' metrics folder is theirs: a job's process adds nothing to it.
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return environment


def _die_with_parent() -> None:
    """In the child, before exec: be killed when the process that started it dies (Linux only)."""
    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (AttributeError, OSError):
        pass


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def job_process_start(*, job: Job, worker: str | None = None, die_with_parent: bool = False) -> Child:
    """Start `manage.py job KIND ID` for a claimed job, its output in the job's log file.

    The job's `worker` becomes `worker` (default: this host) followed by the process id.
    """
    kind = job.KIND
    log_path = lifecycle.job_log_path(job=job)
    manage = Path(settings.BASE_DIR) / "manage.py"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, str(manage), "job", kind, str(job.pk)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=job_environment(),
            cwd=settings.BASE_DIR,
            preexec_fn=_die_with_parent if die_with_parent and sys.platform == "linux" else None,
        )
    name = f"{worker}:{process.pid}" if worker else lifecycle.this_worker(process.pid)
    lifecycle.job_start(kind=kind, job_id=job.pk, worker=name)
    return Child(kind=kind, job_id=job.pk, process=process, worker=name)


def job_log_keep_now_and_then(child: Child) -> None:
    """While a job runs, its log goes to a bucket every LOG_KEEP_SECONDS (nothing to do on this disk)."""
    if time.monotonic() - child.log_kept_at >= LOG_KEEP_SECONDS:
        child.log_kept_at = time.monotonic()
        try:
            lifecycle.job_log_keep(kind=child.kind, job_id=child.job_id)
        except Exception:  # noqa: BLE001 - the bucket away for a moment: the next try, or the end, keeps it
            logger.warning("the log of %s job %s could not be kept", child.kind, child.job_id, exc_info=True)


def job_process_ended(*, child: Child, code: int) -> None:
    """After a job's process exits: its log is kept whole, and a job it left active lost its process
    (only if it was still this process's: another may have taken the job meanwhile)."""
    child.log_kept_at = 0.0
    job_log_keep_now_and_then(child)
    if code < 0:
        cause = f"was killed by signal {_signal_name(-code)}"
    else:
        cause = f"exited with code {code}" if code else "ended without finishing its job"
    kind = kind_get(child.kind)
    lost = lifecycle.job_fail(
        kind=child.kind,
        job_id=child.job_id,
        message=f"interrupted: the {kind.noun} {cause}; see its log. {kind.lost_hint}",
        lost=True,
        narrow=lambda jobs: jobs.filter(worker=child.worker),
    )
    if lost and lifecycle.job_lost_is_queued_again(kind=child.kind):
        enqueue(child.kind, child.job_id)


def stop_if_cancelled(child: Child) -> None:
    """A cancelled job's process stops by itself at its next progress write; terminated after a grace period."""
    status = lifecycle.job_status(kind=child.kind, job_id=child.job_id)
    if status not in {lifecycle.CANCELLED, None}:
        return
    if child.cancelled_at is None:
        child.cancelled_at = time.monotonic()
    elif time.monotonic() - child.cancelled_at > CANCEL_GRACE_SECONDS:
        child.process.terminate()


class ThreadRunner:
    """Runs queued jobs of every kind as subprocesses, from one daemon thread of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._children: list[Child] = []
        self._stopping = threading.Event()
        self._last_watchdog = 0.0

    def enqueue(self, kind: str | None = None, job_id: int | None = None) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="kerasui-runner", daemon=True)
                self._thread.start()
        self._wake.set()

    def _loop(self) -> None:
        watchdog.jobs_fail_interrupted()
        while not self._stopping.is_set():
            try:
                self.step()
            except Exception:  # noqa: BLE001 - the runner must outlive any single failure
                logger.exception("job runner step failed")
            finally:
                close_old_connections()
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (not the processes it started): for tests and shutdown."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def step(self) -> None:
        """One round: the watchdog now and then, the children, then claim what each kind's budget allows."""
        if time.monotonic() - self._last_watchdog >= WATCHDOG_SECONDS:
            # Jobs of other machines (or of a process that stopped beating) end up here.
            watchdog.jobs_fail_stale()
            self._last_watchdog = time.monotonic()
        for child in list(self._children):
            self._watch(child)
        for kind in KINDS:
            budget = job_budget(kind=kind)
            while sum(child.kind == kind for child in self._children) < budget:
                job = lifecycle.job_claim_next(kind=kind, worker=lifecycle.this_worker(), max_running=budget)
                if job is None:
                    break
                try:
                    self._children.append(job_process_start(job=job))
                except OSError as error:
                    lifecycle.job_fail(kind=kind, job_id=job.pk, message=f"cannot start its process: {error}")

    def _watch(self, child: Child) -> None:
        code = child.process.poll()
        if code is None:
            stop_if_cancelled(child)
            job_log_keep_now_and_then(child)
            return
        self._children.remove(child)
        # A process that exited 0 has recorded its own end; a job still active lost its process.
        job_process_ended(child=child, code=code)
        after = kind_get(child.kind).after_success
        if code == 0 and after:
            try:
                kind_get(child.kind).function("after_success")(job_id=child.job_id)
            except Exception:  # noqa: BLE001 - e.g. a model that cannot load says so when used
                logger.warning("after %s job %s: %s failed", child.kind, child.job_id, after, exc_info=True)


class NoRunner:
    """Leaves queued jobs queued: for tests and for deployments that run `manage.py job` themselves."""

    def enqueue(self, kind: str | None = None, job_id: int | None = None) -> None:
        pass

    def stop(self, timeout: float = 0) -> None:
        pass


class CeleryRunner:
    """Sends each queued job's kind and id to the `training` queue, for a Celery worker on any machine."""

    def enqueue(self, kind: str | None = None, job_id: int | None = None) -> None:
        if job_id is None:
            # Queued jobs were sent when they were queued; the broker keeps them.
            return
        from kerasui.celery import app

        try:
            # By name: the task module (jobs/tasks.py) imports this one, not the other way round.
            app.send_task("jobs.run", args=[kind, job_id], queue="training")
        except Exception as error:  # noqa: BLE001 - the job must not wait for a message never sent
            logger.exception("%s job %s could not be sent to the task queue", kind, job_id)
            lifecycle.job_fail(
                kind=kind,
                job_id=job_id,
                message=(
                    f"not started: the task queue (CELERY_BROKER_URL) cannot be reached "
                    f"({type(error).__name__}: {error}); try again when it is back"
                ),
            )

    def stop(self, timeout: float = 0) -> None:
        pass


_runner: ThreadRunner | CeleryRunner | NoRunner | None = None


def get_runner() -> ThreadRunner | CeleryRunner | NoRunner:
    global _runner
    if _runner is None:
        backend = settings.KERASUI_TRAINING_BACKEND
        _runner = ThreadRunner() if backend == "thread" else CeleryRunner() if backend == "celery" else NoRunner()
    return _runner


def reset() -> None:
    """Stop and forget this process's runner: the next job queued finds one from the settings (tests)."""
    global _runner
    if _runner is not None:
        _runner.stop()
    _runner = None


def enqueue(kind: str | None = None, job_id: int | None = None) -> None:
    """Hand a queued job to the runner."""
    get_runner().enqueue(kind, job_id)


def enqueue_on_commit(*, kind: str, job_id: int) -> None:
    """Hand a queued job to the runner once the transaction that queued it commits."""
    transaction.on_commit(lambda: enqueue(kind, job_id))


def start() -> None:
    """At server start: fail jobs a dead process left running, then execute what is queued."""
    backend = settings.KERASUI_TRAINING_BACKEND
    if backend not in {"thread", "celery"}:
        return
    try:
        if backend == "celery":
            watchdog.jobs_fail_stale(requeued=enqueue)
        elif any(kind_get(name).model_class.objects.filter(status__in=Job.ACTIVE).exists() for name in KINDS):
            enqueue()
    except Exception:  # noqa: BLE001 - e.g. the database is not migrated yet; serving comes first
        logger.warning("queued jobs were not resumed", exc_info=True)
