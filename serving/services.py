"""Which engine serves a version's predictions in the web process, and the predictor that does.

A trained run's ONNX export is made and proven against the Keras model on the run's own images
before the run becomes current (`serving_prepare_run`, called by the training process); an imported
version, or one trained before this existed, is prepared the first time it is used. The web process
then predicts with ONNX Runtime and never imports TensorFlow. A version whose export is refused, or
differs from Keras by more than KERASUI_SERVING_TOLERANCE, is served by Keras (imported then, in
that process only), and `TrainingRun.serving_note` says why.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.core.files.storage import default_storage

from jobs.budgets import TooManyJobs
from management.errors import ServiceError
from management.files import media_local_copy
from ml.engines import KERAS, ONNXRUNTIME, load_predictor
from ml.export import file_name
from serving.exports import export_folder, training_run_export
from training.models import TrainingRun

log = logging.getLogger(__name__)


def onnx_name(run: TrainingRun) -> str:
    """The name in media storage of the run's proven ONNX export."""
    return f"{export_folder(run)}/{file_name('onnx')}"


def _decide(run: TrainingRun, model_path: str | None, model=None) -> tuple[str, str]:
    """The engine for the run and why: ONNX Runtime when its export is proven close enough to Keras."""
    if settings.KERASUI_SERVING_ENGINE == KERAS:
        return KERAS, KERAS_EVERYWHERE
    tolerance = settings.KERASUI_SERVING_TOLERANCE
    try:
        training_run_export(run=run, format="onnx", model_path=model_path, model=model)
    except TooManyJobs:
        raise  # every slot for model jobs is taken: nothing is decided about the export yet
    except ServiceError as error:
        return KERAS, f"served by Keras: {error.message}"
    except Exception as error:  # noqa: BLE001 - whatever stops the export, the model is still served
        log.warning("the ONNX export of run %s could not be made", run.pk, exc_info=True)
        return KERAS, f"served by Keras: the ONNX export could not be made ({type(error).__name__}: {error})"
    entry = run.exports.get("onnx", {})
    difference, samples = entry.get("max_difference"), entry.get("samples")
    if difference is None:
        return KERAS, "served by Keras: the ONNX export's check recorded no difference"
    if not difference <= tolerance:
        return KERAS, (
            f"served by Keras: the ONNX export differs from the Keras model by up to {difference:.2g} on "
            f"{samples} images of the run, more than the serving tolerance {tolerance:g}"
        )
    return ONNXRUNTIME, (
        f"ONNX Runtime: its ONNX export was proven against the Keras model on {samples} images of the run "
        f"(largest difference of a probability {difference:.2g}, tolerance {tolerance:g})"
    )


def serving_prepare_run(
    *, run: TrainingRun, model_path: str | None = None, wait_for_slot: float | None = None, model=None
) -> TrainingRun:
    """Decide (and record on the run) which engine serves its model; make and prove its ONNX export.

    The export runs in a child process with a time limit, one per run at a time across processes,
    in one of the KERASUI_MAX_CONCURRENT_JOBS slots for model jobs. When every slot is taken:
    TooManyJobs (429) if `wait_for_slot` is None (a request), else after waiting that many seconds
    the version is left undecided, to be decided when first used (the training process). `model_path`
    is the model file of a run that is not a version yet (the training process calls this before the
    run succeeds and becomes current), and `model` that file's model when it is loaded in this process
    (the export is then made here, without a child process loading it again).
    """
    deadline = time.monotonic() + (wait_for_slot or 0.0)
    while True:
        try:
            engine, note = _decide(run, model_path, model)
            break
        except TooManyJobs as busy:
            if wait_for_slot is None:
                raise
            if time.monotonic() >= deadline:
                log.warning("run %s: its serving engine is decided when first used (%s)", run.pk, busy.message)
                return run
            time.sleep(SLOT_POLL_SECONDS)
    TrainingRun.objects.filter(pk=run.pk).update(serving_engine=engine, serving_note=note)
    run.serving_engine, run.serving_note = engine, note
    return run


# How often a training process waiting for a model-job slot tries again.
SLOT_POLL_SECONDS = 1.0
KERAS_EVERYWHERE = "KERASUI_SERVING_ENGINE is keras: every version is served by Keras"


def serving_engine(*, run: TrainingRun) -> tuple[str, str]:
    """The engine serving the run in this process, and why: the run's, unless the setting says keras."""
    if settings.KERASUI_SERVING_ENGINE == KERAS:
        return KERAS, KERAS_EVERYWHERE
    return run.serving_engine, run.serving_note


def serving_predictor(*, run: TrainingRun):
    """A loaded predictor for a version's model, by its engine; prepares the version when undecided."""
    # Read through the storage API: on a web machine with a bucket, from a copy in this machine's cache.
    if settings.KERASUI_SERVING_ENGINE == KERAS:
        path = media_local_copy(name=run.model_file.name)
        return load_predictor(KERAS, str(path), threads=settings.KERASUI_INFERENCE_THREADS)
    if not run.serving_engine:
        serving_prepare_run(run=run)
    if run.serving_engine == ONNXRUNTIME and not default_storage.exists(onnx_name(run)):
        if not default_storage.exists(run.model_file.name):
            raise FileNotFoundError(f"neither {run.model_file.name} nor its ONNX export is in media storage")
        # The export went missing or is being made again (`export --again`): prove it anew.
        serving_prepare_run(run=run)
    name = onnx_name(run) if run.serving_engine == ONNXRUNTIME else run.model_file.name
    return load_predictor(
        run.serving_engine, str(media_local_copy(name=name)), threads=settings.KERASUI_INFERENCE_THREADS
    )
