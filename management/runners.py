"""How queued runs get executed.

The thread runner (the embedded default) is a daemon thread in the web process: it claims queued
runs in order, at most KERASUI_MAX_CONCURRENT_RUNS at a time, and starts each as a
`manage.py train --run ID` subprocess whose output goes to the run's log file. TensorFlow's memory
and the model code thus stay out of the web process.
"""

from __future__ import annotations

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
    return environment


def start_training_process(run: TrainingRun) -> subprocess.Popen:
    """Start `manage.py train --run ID` with its output in the run's log file."""
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
        )
    TrainingRun.objects.filter(pk=run.pk).update(worker=training.this_worker(process.pid))
    return process


class ThreadRunner:
    """Runs queued runs as subprocesses from one daemon thread of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._children: list[_Child] = []
        self._stopping = threading.Event()

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
        if code is not None:
            self._children.remove(child)
            # A process that exited 0 has recorded its own end; a run still active lost its process.
            if code < 0:
                cause = f"was killed by signal {_signal_name(-code)}"
            else:
                cause = f"exited with code {code}" if code else "ended without finishing the run"
            training.training_run_fail(
                run_id=child.run_id,
                message=f"interrupted: the training process {cause}; see the run's log. {training.INTERRUPTED_HINT}",
                interrupted=True,
            )
            if code == 0:
                # Load the new model now, so this process's first prediction with it is not slow.
                try:
                    prediction.prediction_warm(run_id=child.run_id)
                except Exception:  # noqa: BLE001 - a model that cannot load says so when used
                    logger.warning("the model of run %s was not preloaded", child.run_id, exc_info=True)
            return
        status = TrainingRun.objects.filter(pk=child.run_id).values_list("status", flat=True).first()
        if status == TrainingRun.Status.CANCELLED:
            if child.cancelled_at is None:
                child.cancelled_at = time.monotonic()
            elif time.monotonic() - child.cancelled_at > CANCEL_GRACE_SECONDS:
                child.process.terminate()


class NoRunner:
    """Leaves queued runs queued: for tests and for deployments that run `train --run` themselves."""

    def enqueue(self, run_id: int | None = None) -> None:
        pass

    def stop(self, timeout: float = 0) -> None:
        pass


_runner: ThreadRunner | NoRunner | None = None


def get_runner() -> ThreadRunner | NoRunner:
    global _runner
    if _runner is None:
        _runner = ThreadRunner() if settings.KERASUI_TRAINING_RUNNER == "thread" else NoRunner()
    return _runner


def enqueue(run_id: int | None = None) -> None:
    """Make the runner pick up queued runs (called after the run's transaction commits)."""
    get_runner().enqueue(run_id)


def start() -> None:
    """At server start: fail runs a dead process left running, then execute what is queued."""
    if settings.KERASUI_TRAINING_RUNNER != "thread":
        return
    try:
        if TrainingRun.objects.filter(status__in=TrainingRun.ACTIVE).exists():
            enqueue()
    except Exception:  # noqa: BLE001 - e.g. the database is not migrated yet; serving comes first
        logger.warning("queued training runs were not resumed", exc_info=True)
