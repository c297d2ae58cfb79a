"""A training process seen from outside: how it is started, watched, stopped and what its end means.

What the thread runner (runners.py) and a Celery worker (tasks.py) share. The process itself is
`manage.py train --run ID`, writing to the run's log file; the run's state changes go through the
lifecycle (services/runs.py).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection

from management.models import TrainingRun
from management.services import runs

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
class Child:
    """A started training process and the run it trains."""

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
    log_path = runs.run_log_path(run=run)
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
    runs.run_start(run_id=run.pk, worker=f"{worker}:{process.pid}" if worker else runs.this_worker(process.pid))
    return process


def training_process_ended(*, run_id: int, code: int) -> None:
    """After a training process exits: a run it left active lost its process and is interrupted."""
    if code < 0:
        cause = f"was killed by signal {_signal_name(-code)}"
    else:
        cause = f"exited with code {code}" if code else "ended without finishing the run"
    runs.run_fail(
        run_id=run_id,
        message=f"interrupted: the training process {cause}; see the run's log. {runs.INTERRUPTED_HINT}",
        interrupted=True,
    )


def stop_if_cancelled(child: Child) -> None:
    """A cancelled run's process stops by itself within a second; terminate it after a grace period."""
    status = TrainingRun.objects.filter(pk=child.run_id).values_list("status", flat=True).first()
    if status != TrainingRun.Status.CANCELLED:
        return
    if child.cancelled_at is None:
        child.cancelled_at = time.monotonic()
    elif time.monotonic() - child.cancelled_at > CANCEL_GRACE_SECONDS:
        child.process.terminate()
