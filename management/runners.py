"""How queued runs get executed (KERASUI_TRAINING_BACKEND).

The thread runner (the embedded default) is a daemon thread in the web process: it claims queued
runs in order, at most KERASUI_MAX_CONCURRENT_RUNS at a time, and starts each as a
`manage.py train --run ID` subprocess whose output goes to the run's log file. TensorFlow's memory
and the model code thus stay out of the web process.

The Celery runner sends the run's id to the `training` queue; the worker's task (`celery_execute`)
claims it and supervises the very same `train --run ID` subprocess on the worker's machine.
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
from django.db import close_old_connections, connection

from management.models import TrainingRun
from management.services import prediction, training

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
# A cancelled run's process gets this long to stop by itself before it is terminated.
CANCEL_GRACE_SECONDS = 15.0
# How often runs whose training process stopped beating are looked for.
WATCHDOG_SECONDS = 5.0


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


@dataclass
class _Child:
    run_id: int
    process: subprocess.Popen
    cancelled_at: float | None = None


def training_environment() -> dict[str, str]:
    """The environment of a training process: the same database and media as this process."""
    environment = dict(os.environ)
    environment["KERASUI_DATABASE_NAME"] = str(connection.settings_dict["NAME"])
    environment["KERASUI_MEDIA_ROOT"] = str(settings.MEDIA_ROOT)
    environment["KERASUI_CACHE_DIR"] = str(settings.KERASUI_CACHE_DIR)
    environment["DJANGO_SETTINGS_MODULE"] = os.environ.get("DJANGO_SETTINGS_MODULE", "kerasui.settings")
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    environment["PYTHONUNBUFFERED"] = "1"
    # The web workers' metrics folder is theirs: a training process adds nothing to it.
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return environment


def _die_with_parent() -> None:
    """In the child, before exec: be killed when the process that started it dies (Linux only)."""
    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (AttributeError, OSError):
        pass


def start_training_process(run: TrainingRun, *, worker: str | None = None, die_with_parent: bool = False):
    """Start `manage.py train --run ID` with its output in the run's log file.

    The run's `worker` becomes `worker` (default: this host) followed by the process id.
    """
    log_path = training.training_run_log_path(run=run)
    manage = Path(settings.BASE_DIR) / "manage.py"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, str(manage), "train", "--run", str(run.pk)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=training_environment(),
            cwd=settings.BASE_DIR,
            preexec_fn=_die_with_parent if die_with_parent and sys.platform == "linux" else None,
        )
    name = f"{worker}:{process.pid}" if worker else training.this_worker(process.pid)
    TrainingRun.objects.filter(pk=run.pk).update(worker=name)
    return process


def training_process_ended(*, run_id: int, code: int) -> None:
    """After a training process exits: a run it left active lost its process and is interrupted."""
    if code < 0:
        cause = f"was killed by signal {_signal_name(-code)}"
    else:
        cause = f"exited with code {code}" if code else "ended without finishing the run"
    training.training_run_fail(
        run_id=run_id,
        message=f"interrupted: the training process {cause}; see the run's log. {training.INTERRUPTED_HINT}",
        interrupted=True,
    )


def _stop_if_cancelled(child: _Child) -> None:
    """A cancelled run's process stops by itself within a second; terminate it after a grace period."""
    status = TrainingRun.objects.filter(pk=child.run_id).values_list("status", flat=True).first()
    if status != TrainingRun.Status.CANCELLED:
        return
    if child.cancelled_at is None:
        child.cancelled_at = time.monotonic()
    elif time.monotonic() - child.cancelled_at > CANCEL_GRACE_SECONDS:
        child.process.terminate()


class ThreadRunner:
    """Runs queued runs as subprocesses from one daemon thread of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._children: list[_Child] = []
        self._stopping = threading.Event()
        self._last_watchdog = 0.0

    def enqueue(self, run_id: int | None = None) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="kerasui-runner", daemon=True)
                self._thread.start()
        self._wake.set()

    def _loop(self) -> None:
        training.training_runs_fail_interrupted()
        while not self._stopping.is_set():
            try:
                self._step()
            except Exception:  # noqa: BLE001 - the runner must outlive any single failure
                logger.exception("training runner step failed")
            finally:
                close_old_connections()
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (not the training processes it started): for tests and shutdown."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _step(self) -> None:
        if time.monotonic() - self._last_watchdog >= WATCHDOG_SECONDS:
            # Runs of other machines (or of a process that stopped beating) end up here.
            training.training_runs_fail_stale()
            self._last_watchdog = time.monotonic()
        for child in list(self._children):
            self._watch(child)
        while len(self._children) < settings.KERASUI_MAX_CONCURRENT_RUNS:
            run = training.training_run_claim_next(
                worker=training.this_worker(), max_running=settings.KERASUI_MAX_CONCURRENT_RUNS
            )
            if run is None:
                return
            try:
                process = start_training_process(run)
            except OSError as error:
                training.training_run_fail(run_id=run.pk, message=f"cannot start the training process: {error}")
                continue
            self._children.append(_Child(run_id=run.pk, process=process))

    def _watch(self, child: _Child) -> None:
        code = child.process.poll()
        if code is None:
            _stop_if_cancelled(child)
            return
        self._children.remove(child)
        # A process that exited 0 has recorded its own end; a run still active lost its process.
        training_process_ended(run_id=child.run_id, code=code)
        if code == 0:
            # Load the new model now, so this process's first prediction with it is not slow.
            try:
                prediction.prediction_warm(run_id=child.run_id)
            except Exception:  # noqa: BLE001 - a model that cannot load says so when used
                logger.warning("the model of run %s was not preloaded", child.run_id, exc_info=True)


class NoRunner:
    """Leaves queued runs queued: for tests and for deployments that run `train --run` themselves."""

    def enqueue(self, run_id: int | None = None) -> None:
        pass

    def stop(self, timeout: float = 0) -> None:
        pass


class CeleryRunner:
    """Sends each queued run's id to the `training` queue, for a Celery worker on any machine."""

    def enqueue(self, run_id: int | None = None) -> None:
        if run_id is None:
            # Queued runs were sent when they were queued; the broker keeps them.
            return
        from management.tasks import train_run

        try:
            train_run.apply_async(args=[run_id])
        except Exception as error:  # noqa: BLE001 - the run must not wait for a message never sent
            logger.exception("run %s could not be sent to the training queue", run_id)
            training.training_run_fail(
                run_id=run_id,
                message=(
                    f"not started: the task queue (CELERY_BROKER_URL) cannot be reached "
                    f"({type(error).__name__}: {error}); train again when it is back"
                ),
            )

    def stop(self, timeout: float = 0) -> None:
        pass


def celery_execute(*, run_id: int, node: str) -> str:
    """What a Celery worker does with a run's id: claim it, train it in a subprocess, watch it.

    A run that is no longer queued is not trained again (a cancelled run never starts; a message
    delivered twice, or again after its worker died, finds its run running or ended): the run is
    left alone, or marked interrupted when its training process stopped beating.
    """
    run = training.training_run_claim(run_id=run_id, worker=f"{node}:{os.getpid()}")
    if run is None:
        training.training_runs_fail_interrupted()
        training.training_runs_fail_stale()
        status = TrainingRun.objects.filter(pk=run_id).values_list("status", flat=True).first()
        logger.info("run %s is %s, not queued: not trained again", run_id, status or "deleted")
        return f"skipped: {status or 'deleted'}"
    try:
        # The training process dies with this worker process (time limit, worker killed), so a
        # lost worker never leaves a run training unsupervised.
        process = start_training_process(run, worker=node, die_with_parent=True)
    except OSError as error:
        training.training_run_fail(run_id=run_id, message=f"cannot start the training process: {error}")
        return "failed"
    child = _Child(run_id=run_id, process=process)
    from celery.exceptions import SoftTimeLimitExceeded

    try:
        while True:
            try:
                code = process.wait(timeout=POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                _stop_if_cancelled(child)
    except SoftTimeLimitExceeded:
        process.terminate()
        try:
            process.wait(timeout=CANCEL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
        training.training_run_fail(
            run_id=run_id,
            message=(
                f"interrupted: the run took longer than KERASUI_TRAINING_TIME_LIMIT "
                f"({settings.KERASUI_TRAINING_TIME_LIMIT} s) and was stopped. {training.INTERRUPTED_HINT}"
            ),
            interrupted=True,
        )
        return "time limit"
    training_process_ended(run_id=run_id, code=code)
    return TrainingRun.objects.filter(pk=run_id).values_list("status", flat=True).first() or "deleted"


_runner: ThreadRunner | CeleryRunner | NoRunner | None = None


def get_runner() -> ThreadRunner | CeleryRunner | NoRunner:
    global _runner
    if _runner is None:
        backend = settings.KERASUI_TRAINING_BACKEND
        _runner = ThreadRunner() if backend == "thread" else CeleryRunner() if backend == "celery" else NoRunner()
    return _runner


def enqueue(run_id: int | None = None) -> None:
    """Hand a queued run to the runner (called after the run's transaction commits)."""
    get_runner().enqueue(run_id)


def start() -> None:
    """At server start: fail runs a dead process left running, then execute what is queued."""
    backend = settings.KERASUI_TRAINING_BACKEND
    if backend not in {"thread", "celery"}:
        return
    try:
        if backend == "celery":
            training.training_runs_fail_stale()
        elif TrainingRun.objects.filter(status__in=TrainingRun.ACTIVE).exists():
            enqueue()
    except Exception:  # noqa: BLE001 - e.g. the database is not migrated yet; serving comes first
        logger.warning("queued training runs were not resumed", exc_info=True)
