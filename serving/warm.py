"""Warm web workers: load the current models when a worker starts, and a newly current run as soon
as it is current, so that no request pays for loading a model.

Each web process (a gunicorn worker, runserver) starts one `ServingWatcher` from kerasui/wsgi.py. It
loads the current models of up to KERASUI_MODEL_CACHE_SIZE datasets before the process serves its
first request; then a daemon thread reads the datasets' current runs (one small query, whatever
the traffic) every KERASUI_SERVING_POLL_SECONDS and loads the newly current run of each dataset this
process serves. Until that load is done, the version it replaces answers (each answer names its
run) - TF Serving's availability-preserving policy.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import DatabaseError, close_old_connections

from datasets.models import DataSet
from jobs.budgets import TooManyJobs
from management import metrics
from serving.prediction import model_cache
from training.models import TrainingRun

log = logging.getLogger(__name__)

# How long a superseded model stays loaded after its successor, for requests already using it.
RETIRE_SECONDS = 5.0


class ServingWatcher:
    """Keeps this process's model cache on the datasets' current runs, off the request path."""

    def __init__(self, *, interval: float) -> None:
        self.interval = interval
        # dataset id -> current run id, as last read from the database
        self.seen: dict[int, int] = {}
        # run id -> why its model could not be loaded (a request then loads it and gets the error)
        self.failed: dict[int, str] = {}
        self._wanted: set[int] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _current_runs(self) -> dict[int, int]:
        return dict(DataSet.objects.filter(current_run__isnull=False).values_list("id", "current_run_id"))

    def preload(self) -> list[int]:
        """Load the current models of the datasets trained last, up to the cache's size; the runs loaded.

        A version whose engine is not decided yet (an imported one) is left to the thread: deciding
        makes and proves its ONNX export, which takes seconds.
        """
        current = self._current_runs()
        self.seen = dict(current)
        newest = sorted(current.values(), reverse=True)[: max(1, settings.KERASUI_MODEL_CACHE_SIZE)]
        runs = TrainingRun.objects.filter(pk__in=newest).select_related("dataset").order_by("pk")
        loaded = []
        for run in runs:
            if not run.serving_engine:
                self.want(run.pk)
            elif self._load(run, trigger="start"):
                loaded.append(run.pk)
        return loaded

    def poll(self) -> list[int]:
        """Load the newly current runs of the datasets this process serves (or has room for); the runs loaded."""
        # Superseded models were kept a moment for requests that had picked them as stand-ins.
        model_cache.drop_retired(older_than=RETIRE_SECONDS)
        current = self._current_runs()
        with self._lock:
            wanted, self._wanted = self._wanted, set()
        rolled_back = []

        def to_load(dataset_id: int, run_id: int) -> bool:
            if run_id in model_cache:
                if self.seen.get(dataset_id) != run_id:
                    rolled_back.append(run_id)
                return False
            if run_id in wanted:
                return True
            newly_current = self.seen.get(dataset_id) != run_id and run_id not in self.failed
            return newly_current and (model_cache.serves(dataset_id) or model_cache.has_room())

        changed = [run_id for dataset_id, run_id in current.items() if to_load(dataset_id, run_id)]
        self.seen = dict(current)
        for run in TrainingRun.objects.filter(pk__in=rolled_back).only("id", "dataset_id"):
            model_cache.mark_current(run)
        loaded = []
        for run in TrainingRun.objects.filter(pk__in=changed).select_related("dataset").order_by("pk"):
            if self._load(run, trigger="watch"):
                loaded.append(run.pk)
        return loaded

    def _load(self, run: TrainingRun, *, trigger: str) -> bool:
        if run.status != TrainingRun.Status.SUCCEEDED or not run.model_file:
            return False
        try:
            model_cache.get(run, current=True, trigger=trigger)
        except TooManyJobs:
            # Its ONNX export waits for a slot for model jobs: tried again at the next poll.
            with self._lock:
                self._wanted.add(run.pk)
            return False
        except Exception as error:  # noqa: BLE001 - a model that cannot load says so to the request asking for it
            self.failed[run.pk] = str(error)
            log.warning("the model of run %s was not preloaded: %s", run.pk, error)
            return False
        self.failed.pop(run.pk, None)
        return True

    def want(self, run_id: int) -> None:
        """Ask the thread to load this run now (a request found it current and not loaded)."""
        with self._lock:
            self._wanted.add(run_id)
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="kerasui-serving-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the watcher must outlive a database hiccup
                log.warning("looking for newly current runs failed", exc_info=True)
            finally:
                close_old_connections()


watcher: ServingWatcher | None = None


def serving_workers_start() -> ServingWatcher | None:
    """In a web process: load the current models now, then follow newly current runs in a thread."""
    global watcher
    if watcher is not None or not settings.KERASUI_WARM_WORKERS:
        return watcher
    watcher = ServingWatcher(interval=settings.KERASUI_SERVING_POLL_SECONDS)
    try:
        watcher.preload()
    except DatabaseError:
        log.warning("no model was preloaded (is the database migrated?)", exc_info=True)
    finally:
        close_old_connections()
    model_cache.watcher = watcher
    watcher.start()
    metrics.record_process(cached_models=len(model_cache))
    return watcher
