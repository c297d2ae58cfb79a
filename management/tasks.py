"""Celery tasks: a worker trains the run whose id it receives (KERASUI_TRAINING_BACKEND=celery).

Each worker also watches for runs whose training process stopped beating (a worker or machine
that died mid-run) and marks them interrupted, so no run stays "running" forever.
"""

from __future__ import annotations

import logging
import threading

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings
from django.db import connection

from management import runners
from management.services import training

logger = logging.getLogger(__name__)


@shared_task(bind=True, name="management.tasks.train_run", max_retries=0)
def train_run(self, run_id: int) -> str:
    """Train queued run `run_id` on this worker; do nothing if it is no longer queued."""
    return runners.celery_execute(run_id=run_id, node=self.request.hostname)


def _watchdog(stop: threading.Event) -> None:
    interval = max(1.0, min(runners.WATCHDOG_SECONDS, settings.KERASUI_HEARTBEAT_TIMEOUT / 3))
    while True:
        try:
            training.training_runs_fail_interrupted()
            failed = training.training_runs_fail_stale()
            if failed:
                logger.warning("%s run(s) without a heartbeat marked interrupted", failed)
        except Exception:  # noqa: BLE001 - the database may be away for a moment; try again
            logger.warning("the training watchdog's check failed", exc_info=True)
        finally:
            # No connection is kept open between checks: the pool's processes are forked from this one.
            connection.close()
        if stop.wait(interval):
            return


@worker_ready.connect
def start_watchdog(sender=None, **kwargs) -> None:
    """In the worker's main process: check at once (runs of this host's dead processes), then regularly."""
    threading.Thread(target=_watchdog, args=(threading.Event(),), name="kerasui-watchdog", daemon=True).start()
