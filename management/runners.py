"""How queued runs get executed (KERASUI_TRAINING_BACKEND).

The thread runner (the embedded default) is a daemon thread in the web process: it claims queued
runs in order, at most KERASUI_MAX_CONCURRENT_RUNS at a time, and starts each as a
`manage.py train --run ID` subprocess whose output goes to the run's log file. TensorFlow's memory
and the model code thus stay out of the web process.

The Celery runner sends the run's id to the `training` queue; the worker's task (tasks.py) claims it
and supervises the very same `train --run ID` subprocess on the worker's machine.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections

from management import supervisor
from management.models import TrainingRun
from management.services import prediction, runs
from management.tasks import train_run

logger = logging.getLogger(__name__)


class ThreadRunner:
    """Runs queued runs as subprocesses from one daemon thread of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._children: list[supervisor.Child] = []
        self._stopping = threading.Event()
        self._last_watchdog = 0.0

    def enqueue(self, run_id: int | None = None) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="kerasui-runner", daemon=True)
                self._thread.start()
        self._wake.set()

    def _loop(self) -> None:
        runs.runs_fail_interrupted()
        while not self._stopping.is_set():
            try:
                self._step()
            except Exception:  # noqa: BLE001 - the runner must outlive any single failure
                logger.exception("training runner step failed")
            finally:
                close_old_connections()
            self._wake.wait(supervisor.POLL_SECONDS)
            self._wake.clear()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (not the training processes it started): for tests and shutdown."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _step(self) -> None:
        if time.monotonic() - self._last_watchdog >= supervisor.WATCHDOG_SECONDS:
            # Runs of other machines (or of a process that stopped beating) end up here.
            runs.runs_fail_stale()
            self._last_watchdog = time.monotonic()
        for child in list(self._children):
            self._watch(child)
        while len(self._children) < settings.KERASUI_MAX_CONCURRENT_RUNS:
            run = runs.run_claim_next(worker=runs.this_worker(), max_running=settings.KERASUI_MAX_CONCURRENT_RUNS)
            if run is None:
                return
            try:
                process = supervisor.start_training_process(run)
            except OSError as error:
                runs.run_fail(run_id=run.pk, message=f"cannot start the training process: {error}")
                continue
            self._children.append(supervisor.Child(run_id=run.pk, process=process))

    def _watch(self, child: supervisor.Child) -> None:
        code = child.process.poll()
        if code is None:
            supervisor.stop_if_cancelled(child)
            return
        self._children.remove(child)
        # A process that exited 0 has recorded its own end; a run still active lost its process.
        supervisor.training_process_ended(run_id=child.run_id, code=code)
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
        try:
            train_run.apply_async(args=[run_id])
        except Exception as error:  # noqa: BLE001 - the run must not wait for a message never sent
            logger.exception("run %s could not be sent to the training queue", run_id)
            runs.run_fail(
                run_id=run_id,
                message=(
                    f"not started: the task queue (CELERY_BROKER_URL) cannot be reached "
                    f"({type(error).__name__}: {error}); train again when it is back"
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
    """Stop and forget this process's runner: the next run queued finds one from the settings (tests)."""
    global _runner
    if _runner is not None:
        _runner.stop()
    _runner = None


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
            runs.runs_fail_stale()
        elif TrainingRun.objects.filter(status__in=TrainingRun.ACTIVE).exists():
            enqueue()
    except Exception:  # noqa: BLE001 - e.g. the database is not migrated yet; serving comes first
        logger.warning("queued training runs were not resumed", exc_info=True)
