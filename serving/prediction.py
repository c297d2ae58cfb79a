"""Predict labels for images with a dataset's current model.

Images are prepared exactly as the run behind the model was trained (that run's image size and
colour mode, not the dataset's current fields). Models are loaded once per process and kept in a
small least-recently-used cache keyed by run, so a newer current run is simply a new key. Each is
served by the engine its run records (serving/services.py): ONNX Runtime, or Keras as the fallback.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection

from datasets.models import DataSet
from datasets.services import image_size_check
from jobs.budgets import TooManyJobs
from management import metrics
from management.budgets import pixel_budget_charge
from management.errors import Conflict, ServiceError
from ml.images import channels_for, load_image
from serving.services import serving_engine, serving_predictor
from training.models import TrainingRun

UNKNOWN = "unknown"
TOP_LABELS = 3


@dataclass(frozen=True)
class Prediction:
    """The most probable label, its probability, and every label's probability.

    `unknown` when the confidence is below the dataset's `unknown_below`: the answer (`result`) is
    then "unknown", the most probable labels still listed.
    """

    label: str
    confidence: float
    probabilities: dict[str, float]
    run_id: int
    unknown_below: float = 0.0

    @property
    def unknown(self) -> bool:
        return self.confidence < self.unknown_below

    @property
    def answer(self) -> str:
        return UNKNOWN if self.unknown else self.label

    def top(self, count: int = TOP_LABELS) -> list[dict]:
        ranked = sorted(self.probabilities.items(), key=lambda pair: pair[1], reverse=True)[:count]
        return [{"label": label, "probability": probability} for label, probability in ranked]

    def as_dict(self) -> dict:
        return {
            "result": self.answer,
            "label": self.label,
            "confidence": self.confidence,
            "unknown": self.unknown,
            "unknown_below": self.unknown_below,
            "top": self.top(),
            "probabilities": self.probabilities,
            "run": self.run_id,
        }


class ModelCache:
    """Loaded predictors by run id, least recently used evicted, safe under threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loading: dict[int, threading.Lock] = {}
        # run id -> (dataset id, predictor, run)
        self._predictors: OrderedDict[int, tuple[int, object, TrainingRun]] = OrderedDict()
        # dataset id -> the run id of its current model as loaded in this process
        self._current: dict[int, int] = {}
        # run id -> when a newly current model superseded it (kept a moment for requests already using it)
        self._retired: dict[int, float] = {}
        self.loads = 0
        self.loads_by_trigger: Counter[str] = Counter()
        # This process's warm-worker watcher (serving.warm), when one runs: it loads newly current runs.
        self.watcher = None

    def get(self, run: TrainingRun, *, current: bool = True, trigger: str = "request"):
        """The run's predictor, loaded once. Loading a dataset's current model drops its other
        models (superseded); loading a version asked for by id keeps them (LRU still applies).

        `trigger` says who pays for a load: a request, or a worker warming itself ("start", "watch").
        A worker warming itself keeps the superseded models a moment (`drop_retired`), since a
        request may have just picked one as the stand-in for the model being loaded.
        """
        with self._lock:
            if run.pk in self._predictors:
                self._predictors.move_to_end(run.pk)
                return self._predictors[run.pk][1]
            loading = self._loading.setdefault(run.pk, threading.Lock())
        # One thread loads a given model; others asking for it meanwhile wait for that load.
        with loading:
            with self._lock:
                if run.pk in self._predictors:
                    return self._predictors[run.pk][1]
            started = time.perf_counter()
            try:
                predictor = serving_predictor(run=run)
            except TooManyJobs:
                # Proving its ONNX export waits for a slot for model jobs: 429, try again.
                with self._lock:
                    self._loading.pop(run.pk, None)
                raise
            except Exception as error:  # noqa: BLE001 - a missing or unloadable file is the user's answer
                with self._lock:
                    self._loading.pop(run.pk, None)
                raise Conflict(
                    f"the model of run {run.pk} cannot be loaded ({type(error).__name__}: {error}); train again",
                    field="dataset",
                ) from None
            with self._lock:
                self.loads += 1
                self.loads_by_trigger[trigger] += 1
                self._predictors[run.pk] = (run.dataset_id, predictor, run)
                if current:
                    self._make_current(run.dataset_id, run.pk, at_once=trigger == "request")
                while len(self._predictors) > max(1, settings.KERASUI_MODEL_CACHE_SIZE):
                    evicted, _ = self._predictors.popitem(last=False)
                    self._retired.pop(evicted, None)
                self._loading.pop(run.pk, None)
                cached = len(self._predictors)
            engine = metrics.engine_label(predictor)
            metrics.MODEL_LOADS.labels(engine, trigger).inc()
            metrics.MODEL_LOAD_SECONDS.labels(engine).observe(time.perf_counter() - started)
            metrics.record_process(cached_models=cached)
            return predictor

    def _make_current(self, dataset_id: int, run_id: int, *, at_once: bool) -> None:
        """Under the lock: `run_id` answers for its dataset; the dataset's other models are dropped
        now (`at_once`) or retired, to be dropped by `drop_retired`."""
        self._current[dataset_id] = run_id
        self._retired.pop(run_id, None)
        for stale in [key for key, entry in self._predictors.items() if entry[0] == dataset_id and key != run_id]:
            if at_once:
                del self._predictors[stale]
                self._retired.pop(stale, None)
            else:
                self._retired.setdefault(stale, time.monotonic())

    def mark_current(self, run: TrainingRun) -> bool:
        """A loaded model became its dataset's current one again (a rollback); False if it is not loaded."""
        with self._lock:
            if run.pk not in self._predictors:
                return False
            if self._current.get(run.dataset_id) != run.pk:
                self._make_current(run.dataset_id, run.pk, at_once=False)
            return True

    def drop_retired(self, *, older_than: float) -> list[int]:
        """Drop the superseded models retired more than `older_than` seconds ago; their run ids."""
        limit = time.monotonic() - older_than
        with self._lock:
            dropped = [run_id for run_id, since in self._retired.items() if since <= limit]
            for run_id in dropped:
                del self._retired[run_id]
                self._predictors.pop(run_id, None)
            cached = len(self._predictors)
        if dropped:
            metrics.record_process(cached_models=cached)
        return dropped

    def run(self, run_id: int) -> TrainingRun | None:
        """The run of a loaded model (a succeeded run's snapshot never changes), or None."""
        with self._lock:
            entry = self._predictors.get(run_id)
            return entry[2] if entry else None

    def standby(self, run: TrainingRun) -> TrainingRun | None:
        """The version a dataset's newly current `run` replaces, while this process's watcher loads it.

        None when no watcher runs (the request loads `run` itself), when the watcher could not load
        `run`, or when no earlier current model of the dataset is loaded here.
        """
        watcher = self.watcher
        if watcher is None or not watcher.alive or run.pk in watcher.failed:
            return None
        with self._lock:
            entry = self._predictors.get(self._current.get(run.dataset_id))
        if entry is None:
            return None
        watcher.want(run.pk)
        return entry[2]

    def serves(self, dataset_id: int) -> bool:
        """Whether a model of the dataset is loaded in this process."""
        with self._lock:
            return any(entry[0] == dataset_id for entry in self._predictors.values())

    def has_room(self) -> bool:
        with self._lock:
            return len(self._predictors) < max(1, settings.KERASUI_MODEL_CACHE_SIZE)

    def __len__(self) -> int:
        return len(self._predictors)

    def clear(self) -> None:
        """Drop every model and start counting loads afresh."""
        with self._lock:
            self._predictors.clear()
            self._current.clear()
            self._retired.clear()
            self.loads_by_trigger.clear()

    def __contains__(self, run_id: int) -> bool:
        return run_id in self._predictors


model_cache = ModelCache()


def _has_model(run: TrainingRun | None) -> bool:
    return run is not None and run.status == TrainingRun.Status.SUCCEEDED and bool(run.model_file)


def _no_model(dataset_name: str) -> Conflict:
    return Conflict(f"dataset '{dataset_name}' has no trained model yet: train it first", field="dataset")


def prediction_run_for(*, dataset: DataSet) -> TrainingRun:
    """The run whose model answers for this dataset, or a Conflict saying why there is none."""
    if not _has_model(dataset.current_run):
        raise _no_model(dataset.name)
    return dataset.current_run


RUN_FIELDS_FOR_PREDICTION = (
    "id",
    "dataset_id",
    "status",
    "labels",
    "image_size",
    "color_mode",
    "model_file",
    "serving_engine",
)


# A dataset being deleted answers no more (its `deleting` column compared with a parameter: False).
CURRENT_RUN_SQL = 'SELECT "{}", "{}" FROM "{}" WHERE "{}" = %s AND "{}" = %s'.format(
    DataSet._meta.get_field("name").column,
    DataSet._meta.get_field("current_run").column,
    DataSet._meta.db_table,
    DataSet._meta.pk.column,
    DataSet._meta.get_field("deleting").column,
)
MAX_ID = 2**63 - 1  # the largest primary key; a larger number is no dataset (and no query)


def prediction_current_run(*, dataset_id: int) -> TrainingRun:
    """The run answering for a dataset id, with as little database work as the hot path allows.

    One small query for the dataset's current run id; the run itself comes from the model cache
    when its model is loaded (a succeeded run's snapshot never changes), else one query. A newly
    current run that this process's watcher is still loading is stood in for by the version it
    replaces (the answer names its run), so no request waits for a load.
    """
    row = None
    if 0 < dataset_id <= MAX_ID:
        with connection.cursor() as cursor:
            # The hot path's one lookup, by primary key: the ORM would spend ten times the query compiling it.
            cursor.execute(CURRENT_RUN_SQL, [dataset_id, False])
            row = cursor.fetchone()
    if row is None:
        raise ServiceError(f"there is no dataset with id {dataset_id}", field="dataset")
    name, run_id = row
    run = model_cache.run(run_id) if run_id else None
    if run is not None:
        return run
    if run_id:
        run = TrainingRun.objects.only(*RUN_FIELDS_FOR_PREDICTION).filter(pk=run_id).first()
    if not _has_model(run):
        raise _no_model(name)
    return model_cache.standby(run) or run


def prediction_version_run(*, run_id: int, dataset_id: int | None = None) -> TrainingRun:
    """A given version (run) to predict with; when a dataset is named too, the run must be one of its."""
    run = model_cache.run(run_id) or TrainingRun.objects.only(*RUN_FIELDS_FOR_PREDICTION).filter(pk=run_id).first()
    if run is None or DataSet.all_objects.filter(pk=run.dataset_id, deleting=True).exists():
        raise ServiceError(f"there is no training run with id {run_id}", field="run")
    if dataset_id is not None and run.dataset_id != dataset_id:
        raise ServiceError(
            f"run {run_id} is a version of dataset {run.dataset_id}, not of dataset {dataset_id}", field="run"
        )
    if not _has_model(run):
        raise Conflict(f"run {run_id} is {run.status} and has no model: choose a succeeded run", field="run")
    return run


def prediction_warm(*, run_id: int) -> bool:
    """Load a run's model into this process's cache if it is its dataset's current model."""
    run = TrainingRun.objects.filter(pk=run_id).select_related("dataset").first()
    if not _has_model(run) or run.dataset.current_run_id != run.pk:
        return False
    model_cache.get(run, trigger="watch")
    return True


@dataclass(frozen=True)
class ModelMetadata:
    """What a client needs to know to use a dataset's current model."""

    run: TrainingRun
    engine: str
    engine_note: str

    def as_dict(self) -> dict:
        run = self.run
        return {
            "dataset": run.dataset_id,
            "run": run.pk,
            "labels": run.labels,
            "image_size": run.image_size,
            "color_mode": run.color_mode,
            "input_shape": [run.image_size, run.image_size, channels_for(run.color_mode)],
            "input_dtype": "float32 (pixel values 0..255, as in labels.json; the model scales them to 0..1 itself)",
            "metrics": run.metrics,
            "accuracy": run.accuracy,
            "trained_at": run.finished_at.isoformat() if run.finished_at else None,
            "engine": self.engine,
            "engine_note": self.engine_note,
        }


def prediction_metadata(*, dataset: DataSet) -> ModelMetadata:
    """The current model's labels, input, metrics and the inference engine that serves it, and why."""
    run = prediction_run_for(dataset=dataset)
    if not run.serving_engine:
        model_cache.get(run)  # an imported or older version: its engine is decided when first used
    engine, note = serving_engine(run=run)
    return ModelMetadata(run=run, engine=engine, engine_note=note)


def prediction_predict(
    *,
    images: list[tuple[str, bytes]],
    dataset: DataSet | None = None,
    run: TrainingRun | None = None,
    field_name: str = "image",
    current: bool | None = None,
    user_id: int | None = None,
) -> list[Prediction]:
    """Predict each (name, bytes) image with a run's model (the dataset's current one by default), in order.

    `current` says whether `run` is its dataset's current model (by default: when no run is given).
    The images are held to the pixel budgets (management/budgets.py) before any is decoded, the user's
    minute counted when `user_id` is given.
    """
    current = run is None if current is None else current
    if run is None:
        run = prediction_run_for(dataset=dataset)
    for name, data in images:
        image_size_check(data, name=name, field_name=field_name)
    pixel_budget_charge(images=images, user_id=user_id, field_name=field_name, side=run.image_size)
    arrays = []
    for name, data in images:
        # load_image decodes the whole image and says why it cannot; no separate verification pass.
        try:
            arrays.append(
                load_image(
                    data,
                    image_size=run.image_size,
                    color_mode=run.color_mode,
                    max_pixels=settings.KERASUI_MAX_IMAGE_PIXELS,
                )
            )
        except ValueError as error:
            raise ServiceError(f"{name}: {error}", field=field_name) from None
    predictor = model_cache.get(run, current=current)
    started = time.perf_counter()
    probabilities = predictor.predict(np.stack(arrays))
    engine = metrics.engine_label(predictor)
    metrics.PREDICTION_SECONDS.labels(engine).observe(time.perf_counter() - started)
    metrics.PREDICTED_IMAGES.labels(engine).inc(len(arrays))
    # Read from the dataset, not the run: a threshold changed after training applies at once.
    unknown_below = DataSet.objects.filter(pk=run.dataset_id).values_list("unknown_below", flat=True).first() or 0.0
    predictions = []
    for row in probabilities:
        best = int(np.argmax(row))
        predictions.append(
            Prediction(
                label=run.labels[best],
                confidence=round(float(row[best]), 6),
                probabilities={label: round(float(p), 6) for label, p in zip(run.labels, row, strict=True)},
                run_id=run.pk,
                unknown_below=float(unknown_below),
            )
        )
    return predictions


def prediction_predict_one(
    *, dataset: DataSet, name: str, data: bytes, run_id: int | None = None, user_id: int | None = None
) -> Prediction:
    """One image with the dataset's current model, or with its version `run_id`."""
    if run_id is None:
        return prediction_predict(dataset=dataset, images=[(name, data)], user_id=user_id)[0]
    run = prediction_version_run(run_id=run_id, dataset_id=dataset.pk)
    return prediction_predict(run=run, images=[(name, data)], current=False, user_id=user_id)[0]
