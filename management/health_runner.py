"""How queued health checks get executed, beside the training runners (KERASUI_TRAINING_BACKEND).

thread: a daemon thread of the web process starts `manage.py health --check ID` as a subprocess,
one check at a time per process, and watches it (cancelled: terminated after a grace period; ended
while still active: failed). celery: the check's id goes to the `training` queue, and the worker's
task (tasks.py) supervises the same subprocess. none: checks stay queued (tests; run the command by hand).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections

from management import supervisor
from management.models import HealthCheck
from management.services import health_lifecycle as health

logger = logging.getLogger(__name__)

# One check at a time in this process: features and K folds use every core.
_one_at_a_time = threading.Semaphore(1)


def health_log_path(check_id: int) -> Path:
    folder = Path(settings.MEDIA_ROOT) / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"health_{check_id}.log"


def start_health_process(check_id: int, *, die_with_parent: bool = False) -> subprocess.Popen:
    """Start `manage.py health --check ID` with its output in the check's log file."""
    manage = Path(settings.BASE_DIR) / "manage.py"
    with health_log_path(check_id).open("ab") as log:
        return subprocess.Popen(
            [sys.executable, str(manage), "health", "--check", str(check_id)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=supervisor.training_environment(),
            cwd=settings.BASE_DIR,
            preexec_fn=supervisor._die_with_parent if die_with_parent and sys.platform == "linux" else None,
        )


def supervise(check_id: int, *, die_with_parent: bool = False) -> str:
    """Run a queued check's process to its end; a check it leaves active failed. Returns its status."""
    try:
        process = start_health_process(check_id, die_with_parent=die_with_parent)
    except OSError as error:
        health.health_check_fail(check_id=check_id, message=f"cannot start the health check's process: {error}")
        return HealthCheck.Status.FAILED
    cancelled_at = None
    while True:
        try:
            code = process.wait(timeout=supervisor.POLL_SECONDS)
            break
        except subprocess.TimeoutExpired:
            status = HealthCheck.objects.filter(pk=check_id).values_list("status", flat=True).first()
            if status in {HealthCheck.Status.CANCELLED, None}:
                cancelled_at = cancelled_at or time.monotonic()
                if time.monotonic() - cancelled_at > supervisor.CANCEL_GRACE_SECONDS:
                    process.terminate()
    # Only a check this process left active failed with it: another process may have taken it meanwhile.
    check = HealthCheck.objects.filter(pk=check_id).first()
    if check is None:
        return "deleted"
    ours = check.status == HealthCheck.Status.QUEUED or check.worker.endswith(f":{process.pid}")
    if check.is_active and ours:
        cause = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        health.health_check_fail(
            check_id=check_id, message=f"interrupted: the health check's process {cause}; see its log and check again"
        )
        check.refresh_from_db()
    return check.status


def _thread(check_id: int) -> None:
    with _one_at_a_time:
        try:
            supervise(check_id)
        except Exception:  # noqa: BLE001 - the thread must not die with a check left running unseen
            logger.exception("health check %s could not be supervised", check_id)
            health.health_check_fail(check_id=check_id, message="interrupted: its supervisor failed; check again")
        finally:
            close_old_connections()


def enqueue(check_id: int) -> None:
    """Hand a queued check to the backend (called after its transaction commits)."""
    backend = settings.KERASUI_TRAINING_BACKEND
    if backend == "thread":
        threading.Thread(target=_thread, args=(check_id,), name=f"kerasui-health-{check_id}", daemon=True).start()
    elif backend == "celery":
        from kerasui.celery import app

        try:
            # By name: tasks.py imports this module, not the other way round.
            app.send_task("management.tasks.check_health", args=[check_id], queue="training")
        except Exception as error:  # noqa: BLE001 - the check must not wait for a message never sent
            logger.exception("health check %s could not be sent to the task queue", check_id)
            health.health_check_fail(
                check_id=check_id,
                message=f"not started: the task queue cannot be reached ({type(error).__name__}); check again later",
            )
