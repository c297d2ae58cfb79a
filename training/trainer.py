"""The trainer: what the training process does with a claimed run — prepare, fit, evaluate, save.

Run by the `train` command (which a runner starts as a subprocess, or a person in a shell); the web
process never imports it. Every change of the run's status goes through the lifecycle (runs.py).
A run from scratch fits its model epoch by epoch with checkpoints; a run from a pretrained starting
point follows ml/transfer.py's recipe: backbone features cached per dataset version × backbone × size,
a head trained on them, then fine-tuning within the run's time budget.
"""

from __future__ import annotations

import copy
import errno
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction

from datasets.models import DataSet, DataSetItem
from datasets.services import storage_folder_delete
from kerasui.logs import RUN_LOGGER
from management.files import media_folder_fetch, media_folder_keep, media_local_copy
from management.journal import MediaJournal, media_journal
from management.options import Architecture, fit_arguments
from ml import fit as ml_fit
from ml import selection, transfer
from ml.backbones import WeightsUnavailable
from ml.cache import (
    MIN_PARALLEL,
    ImageDecodeError,
    build_image_cache,
    cache_key,
    open_image_cache,
    prune_image_cache,
)
from ml.calibration import (
    MIN_CALIBRATION_IMAGES,
    fit_temperature,
    fold_temperature,
    logits_of,
    reliability,
    with_temperature,
)
from ml.engines import ONNXRUNTIME, OnnxPredictor
from ml.evaluate import classification_report
from ml.feed import batches
from ml.images import channels_for, load_image
from ml.models import Augmentation, ModelCodeError, ModelSpec, build_model, model_summary
from serving.services import onnx_name, serving_prepare_run
from training import pretrained, runs
from training.models import Phase, TrainingRun
from training.promotion import HELD_OUT
from training.services import training_run_problem

# The run's log (settings.LOGGING): standard output, beside Keras' progress.
log = logging.getLogger(RUN_LOGGER)
# How long a trained run waits for a model-job slot to prove its ONNX export before it becomes current.
SERVING_SLOT_WAIT_SECONDS = 120.0


class TrainingFailed(Exception):
    """A run cannot go on; the message is shown to the user as the run's error."""


class Cancelled(Exception):
    """The run was cancelled while it was being prepared."""


def _set_phase(run_id: int, phase: str, progress: float = 0.0) -> None:
    if not runs.run_set_phase(run_id=run_id, phase=phase, progress=progress):
        raise Cancelled


def _run_items(run: TrainingRun) -> list[DataSetItem]:
    """The run's items in row order: the recorded ones when resuming, else the dataset's labelled ones."""
    recorded = [item_id for ids in run.splits.values() for item_id in ids]
    if not recorded:
        return list(DataSetItem.objects.filter(dataset_id=run.dataset_id, label__in=run.labels).order_by("id"))
    items = list(DataSetItem.objects.filter(pk__in=recorded).order_by("id"))
    missing = len(set(recorded)) - len(items)
    if missing:
        raise TrainingFailed(
            f"{missing} image(s) this run trained on were deleted since it started: train again instead of resuming"
        )
    relabelled = [item for item in items if item.label not in run.labels]
    if relabelled:
        raise TrainingFailed(
            f"item {relabelled[0].pk} now has the label '{relabelled[0].label}', which this run's model does not "
            "have: train again instead of resuming"
        )
    return items


def local_paths(items: list[DataSetItem], folder: Path) -> list[str]:
    """Paths the decoding processes can open: the files themselves, or copies from a remote storage."""
    paths = []
    for item in items:
        try:
            paths.append(item.image.path)
        except NotImplementedError:
            copy = folder / f"{item.pk}{Path(item.image.name).suffix}"
            with item.image.open("rb") as source, copy.open("wb") as target:
                shutil.copyfileobj(source, target)
            paths.append(str(copy))
    return paths


def _prepare_images(run: TrainingRun, items: list[DataSetItem]) -> np.ndarray:
    """The run's images, decoded once per dataset version, size and colour mode into the cache."""
    folder = Path(settings.KERASUI_CACHE_DIR)
    key = cache_key(
        [(item.pk, item.image.name) for item in items], image_size=run.image_size, color_mode=run.color_mode
    )
    return _decode_images(run, items, folder, key)


def _decode_images(run: TrainingRun, items: list[DataSetItem], folder: Path, key: str) -> np.ndarray:
    last_report = 0.0

    def report(done: int, total: int) -> None:
        nonlocal last_report
        if time.monotonic() - last_report >= 1.0 or done == total:
            last_report = time.monotonic()
            _set_phase(run.pk, Phase.PREPARING, done / max(1, total))

    with tempfile.TemporaryDirectory() as copies:
        try:
            images = build_image_cache(
                local_paths(items, Path(copies)),
                folder=folder,
                key=key,
                image_size=run.image_size,
                color_mode=run.color_mode,
                workers=settings.KERASUI_PREPROCESS_WORKERS,
                report=report,
                max_pixels=settings.KERASUI_MAX_IMAGE_PIXELS,
            )
        except ImageDecodeError as error:
            item = items[error.index]
            raise TrainingFailed(
                f"item {item.pk} (label '{item.label}', file {Path(item.image.name).name}) "
                f"cannot be read: {error}. Delete or replace it and train again."
            ) from None
    prune_image_cache(folder, max_bytes=settings.KERASUI_CACHE_MAX_BYTES, keep={key})
    return images


def _splits(run: TrainingRun, items: list[DataSetItem], labels: np.ndarray) -> ml_fit.Splits:
    """The recorded splits as row indices, or new stratified ones (recorded on the run)."""
    if run.splits:
        row_of = {item.pk: row for row, item in enumerate(items)}
        rows = {
            name: np.array([row_of[item_id] for item_id in run.splits.get(name, [])], dtype=np.int64)
            for name in ("train", "validation", "test")
        }
        return ml_fit.Splits(**rows)
    splits = ml_fit.split_indices(
        labels, validation_split=run.validation_split, test_split=run.test_split, seed=run.seed
    )
    ids = {name: [items[row].pk for row in getattr(splits, name)] for name in ("train", "validation", "test")}
    runs.run_splits_save(run=run, splits=ids)
    return splits


def _checkpoint_folder(run: TrainingRun) -> Path:
    """The run's checkpoints (media `checkpoints/run_<id>`) in a folder of this machine: with a bucket,
    a scratch copy fetched from it, so a run resumes on any machine from where another left it."""
    name = f"checkpoints/run_{run.pk}"
    if run.checkpoint != name:
        TrainingRun.objects.filter(pk=run.pk).update(checkpoint=name)
        run.checkpoint = name
    return media_folder_fetch(name=name)


def _checkpoint_written(run: TrainingRun):
    """After each epoch, the checkpoint goes to media storage (a bucket; on this disk it is there already)."""
    return lambda folder: media_folder_keep(name=run.checkpoint, folder=folder)


def _checkpoints_delete(run: TrainingRun, folder: Path) -> None:
    """A succeeded run's checkpoints are no longer needed: in media storage and this machine's copy."""
    storage_folder_delete(storage=default_storage, name=f"checkpoints/run_{run.pk}")
    shutil.rmtree(folder, ignore_errors=True)


def _check_labels(run: TrainingRun) -> None:
    problem = training_run_problem(run=run)
    if problem is not None:
        raise TrainingFailed(problem)


def _report_progress(run_id: int):
    """A reporter writing progress to the run; it answers False once the run was cancelled."""

    def report(progress: ml_fit.Progress) -> bool:
        return runs.run_progress(run_id=run_id, progress=progress)

    return report


def _save_model(run: TrainingRun, model, journal: MediaJournal) -> str:
    """Save the model under media through a temporary file; a failed write leaves no partial file."""
    storage = run.model_file.storage
    name = storage.get_available_name(f"models/run_{run.pk}.keras")
    journal.add(name)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"run_{run.pk}.keras"
        model.save(path)
        try:
            with path.open("rb") as file:
                return storage.save(name, File(file))
        except BaseException:
            storage.delete(name)
            raise


def run_model_spec(run: TrainingRun) -> ModelSpec:
    """What the run's model is built from: its snapshot's code, architecture, sizes and starting weights."""
    return ModelSpec(
        code=run.process,
        image_size=run.image_size,
        channels=channels_for(run.color_mode),
        num_classes=len(run.labels),
        learning_rate=run.learning_rate,
        architecture=run.architecture,
        augmentation=Augmentation(**run.augmentation, seed=run.seed),
        weights_path=str(media_local_copy(name=run.weights_file)) if run.weights_file else None,
    )


def _build_or_resume(run: TrainingRun, folder: Path) -> tuple[keras.Model, list[dict]]:
    """A new model, or the last checkpoint's (with its optimizer) and the history up to it."""
    checkpoint = ml_fit.last_checkpoint(folder)
    if checkpoint is not None and run.history:
        epoch, path = checkpoint
        model = keras.saving.load_model(path)
        history = [row for row in run.history if row["epoch"] <= epoch]
        log.info("Resuming from the checkpoint of epoch %s", epoch)
        return model, history
    try:
        model = build_model(run_model_spec(run))
    except (ModelCodeError, ValueError) as error:
        raise TrainingFailed(f"model code: {error}" if run.architecture == "code" else str(error)) from None
    log.info("The model:\n%s", model_summary(model))
    return model, []


def _held_out_parts(splits) -> dict[str, np.ndarray]:
    """The splits a run is evaluated on: validation and test, or the training images when nothing was held out."""
    parts = {"validation": splits.validation, "test": splits.test}
    if not len(splits.validation) and not len(splits.test):
        parts = {"training": np.sort(splits.train)}
    return {name: np.asarray(rows, dtype=np.int64) for name, rows in parts.items() if len(rows)}


def _model_probabilities(model, images, labels, batch_size: int):
    """rows -> the model's probabilities for those rows of `images`."""

    def predict(rows: np.ndarray) -> np.ndarray:
        data = batches(images, labels, rows, batch_size=batch_size, shuffle=False, seed=0)
        return np.asarray(model.predict(data, verbose=0), dtype=np.float64)

    return predict


def _calibrate(model, probabilities: dict[str, np.ndarray], labels, parts) -> tuple[dict, dict]:
    """Temperature scaling fitted on the validation images, folded into the model's softmax layer.

    Returns (calibration facts for the run's metrics, the calibrated probabilities per split). Without
    validation images, or when the model has no softmax layer named "predictions", nothing changes.
    """
    if "validation" not in probabilities:
        return {"temperature": 1.0, "note": "no validation images: confidence not calibrated"}, probabilities
    true = np.asarray(labels)[parts["validation"]]
    if len(true) < MIN_CALIBRATION_IMAGES:
        note = f"{len(true)} validation images, fewer than {MIN_CALIBRATION_IMAGES}: confidence not calibrated"
        return {"temperature": 1.0, "note": note}, probabilities
    temperature = fit_temperature(logits_of(probabilities["validation"]), true)
    if temperature != 1.0 and not fold_temperature(model, temperature):
        return {"temperature": 1.0, "note": "the model has no softmax layer named 'predictions'"}, probabilities
    calibrated = {name: with_temperature(values, temperature) for name, values in probabilities.items()}
    facts = {"temperature": round(temperature, 4), "fitted_on": f"{len(true)} validation images"}
    for name in ("test", "validation"):
        if name in probabilities:
            rows_true = np.asarray(labels)[parts[name]]
            facts |= {
                "measured_on": f"{len(rows_true)} {name} images"
                + (" (those it was fitted on)" if name == "validation" else ""),
                "ece_before": reliability(probabilities[name], rows_true)["ece"],
                "ece_after": reliability(calibrated[name], rows_true)["ece"],
            }
            break
    return facts, calibrated


def _evaluation(run: TrainingRun, model, predict, labels, splits, items: list[DataSetItem]) -> tuple[dict, dict]:
    """Calibrate, then report on each held-out split: (evaluation, calibration facts).

    `predict(rows)` gives the model's probabilities for rows of the run's images (the head on cached
    features when the backbone was not fine-tuned: the same predictions, without a backbone pass).
    """
    parts = _held_out_parts(splits)
    probabilities = {name: predict(rows) for name, rows in parts.items()}
    calibration, probabilities = _calibrate(model, probabilities, labels, parts)
    evaluation = {}
    for name, rows in parts.items():
        true = np.asarray(labels)[rows]
        report = classification_report(
            true, probabilities[name], label_names=run.labels, item_ids=[items[row].pk for row in rows]
        )
        report["calibration"] = reliability(probabilities[name], true)
        evaluation[name] = report
    return evaluation, calibration


def _fit_from_scratch(run: TrainingRun, images, labels, splits) -> tuple[Path, keras.Model, ml_fit.FitResult]:
    """Build (or resume) the run's model and fit it: (checkpoint folder, model, FitResult)."""
    _set_phase(run.pk, Phase.BUILDING)
    folder = _checkpoint_folder(run)
    model, history = _build_or_resume(run, folder)
    _set_phase(run.pk, Phase.TRAINING, len(history) / run.epochs)
    options = ml_fit.FitOptions(**fit_arguments(run))
    try:
        result = ml_fit.fit(
            model,
            images,
            labels,
            options,
            _report_progress(run.pk),
            splits=splits,
            checkpoint_folder=folder,
            checkpoint_written=_checkpoint_written(run),
            history=history,
        )
    except ValueError as error:
        raise TrainingFailed(str(error)) from None
    return folder, model, result


# The transfer recipe's phases (ml/transfer.py) as the run shows them.
_TRANSFER_PHASES = {transfer.FEATURES: Phase.FEATURES, transfer.HEAD: Phase.HEAD, transfer.FINE_TUNE: Phase.FINE_TUNE}


def _ready_backbone(run: TrainingRun):
    """The run's backbone with its weights here, or TrainingFailed naming the command that brings them."""
    try:
        return pretrained.backbone_ready(name=run.architecture)
    except WeightsUnavailable as error:
        raise TrainingFailed(str(error)) from None


def _feature_key(run: TrainingRun, items: list[DataSetItem], backbone) -> str:
    image_key = cache_key(
        [(item.pk, item.image.name) for item in items], image_size=run.image_size, color_mode=run.color_mode
    )
    return transfer.feature_cache_key(
        image_key, backbone=backbone.name, weights_id=backbone.weights_id, image_size=run.image_size
    )


def _fit_pretrained(run: TrainingRun, backbone, images, labels, splits, items: list[DataSetItem], estimate=None):
    """Train a pretrained run on its prepared images: (model, FitResult, predict or None).

    `predict(rows)` is the head on cached features when the backbone was not fine-tuned (the same
    predictions, without a backbone pass); None asks for predictions of the whole model. With an
    `estimate` (_HeadEstimate), its built backbone and its sample's features are used, not made again.
    """
    options = transfer.TransferOptions(
        epochs=run.epochs,
        batch_size=run.batch_size,
        learning_rate=run.learning_rate,
        seed=run.seed,
        patience=run.early_stopping_patience,
        balance_classes=run.balance_classes,
        fine_tune_seconds=float(run.fine_tune_seconds),
        augmentation=Augmentation(**run.augmentation, seed=run.seed),
        verbose=run.verbose,
    )
    folder = Path(settings.KERASUI_CACHE_DIR) / "features"
    key = _feature_key(run, items, backbone)

    def phase(name: str, percent: float) -> bool:
        _set_phase(run.pk, _TRANSFER_PHASES[name], percent / 100)  # raises Cancelled once the run was cancelled
        return True

    def make_backbone() -> keras.Model:
        if estimate is not None:
            return estimate.backbone
        log.info("Building %s for %sx%s images", backbone.label, run.image_size, run.image_size)
        return pretrained.backbone_build(name=backbone.name, image_size=run.image_size)

    try:
        result = transfer.train_pretrained(
            images,
            labels,
            splits,
            options,
            make_backbone=make_backbone,
            channels=channels_for(run.color_mode),
            num_classes=len(run.labels),
            feature_folder=folder,
            feature_key=key,
            phase=phase,
            report=_report_progress(run.pk),
            known_features=(estimate.rows, estimate.features) if estimate is not None else None,
        )
    except transfer.Stopped:
        raise Cancelled from None
    except (ValueError, WeightsUnavailable) as error:
        raise TrainingFailed(str(error)) from None
    prune_image_cache(folder, max_bytes=settings.KERASUI_CACHE_MAX_BYTES, keep={key})
    fit_result = ml_fit.FitResult(
        history=result.history,
        metrics=result.metrics,
        stopped=result.stopped,
        best_epoch=result.best_epoch,
        stopped_early=result.stopped_early,
    )
    if result.model is None:
        return None, fit_result, None
    log.info("The model:\n%s", model_summary(result.model))
    if result.fine_tuned:
        return result.model, fit_result, None
    return result.model, fit_result, lambda rows: transfer.head_probabilities(result.head, result.features, rows)


# Automatic: the pretrained candidate's image size and what fine-tuning needs at least of the time left.
AUTOMATIC_IMAGE_SIZE = 224
AUTOMATIC_MIN_FINE_TUNE_SECONDS = 20.0
# The pretrained head's cost is measured on this many of the run's images (after a first batch that
# warms the backbone up) before the 224 px images and features of all of them are made.
AUTOMATIC_ESTIMATE_IMAGES = 64
# On a small dataset the model code is scored on the run's own split and up to this many folds in all:
# each is a whole training from scratch, while the head's folds cost a linear probe each.
AUTOMATIC_CODE_FOLDS = 3


def _candidate_score(metrics: dict) -> tuple[float, float] | None:
    """A candidate's validation (accuracy, loss), or None without validation images."""
    if metrics.get("val_accuracy") is None:
        return None
    return float(metrics["val_accuracy"]), float(metrics.get("val_loss") or 0.0)


def _cached_features(run: TrainingRun, items: list[DataSetItem], backbone, images) -> np.ndarray:
    """The features `_fit_pretrained` just cached for the run's images (read back, never recomputed)."""

    def refuse():
        raise TrainingFailed("the pretrained head's features went missing from the cache")

    folder = Path(settings.KERASUI_CACHE_DIR) / "features"
    return transfer.build_feature_cache(
        images, folder=folder, key=_feature_key(run, items, backbone), make_extractor=refuse
    )


@dataclass
class _HeadEstimate:
    """What the pretrained head would still cost, measured on a sample of the run's images; the sample's
    work (the built backbone, the sample's features) is handed to the head when it is tried."""

    seconds: float  # preparing every image at 224 px (unless cached) and the features of the others
    images: int
    sample: int
    backbone: keras.Model
    rows: np.ndarray
    features: np.ndarray


def _estimate_head(run: TrainingRun, backbone, items: list[DataSetItem]) -> _HeadEstimate | None:
    """Time the 224 px preparation and the backbone on up to AUTOMATIC_ESTIMATE_IMAGES images spread over
    the run's, and extrapolate to all of them; None when the features are cached (they cost nothing)."""
    count = len(items)
    features_folder = Path(settings.KERASUI_CACHE_DIR) / "features"
    if transfer.open_feature_cache(features_folder, _feature_key(run, items, backbone), count) is not None:
        return None
    image_key = cache_key(
        [(item.pk, item.image.name) for item in items], image_size=run.image_size, color_mode=run.color_mode
    )
    channels = channels_for(run.color_mode)
    shape = (count, run.image_size, run.image_size, channels)
    images_cached = open_image_cache(Path(settings.KERASUI_CACHE_DIR), image_key, shape) is not None
    rows = np.unique(np.linspace(0, count - 1, min(count, AUTOMATIC_ESTIMATE_IMAGES)).round().astype(np.int64))
    began = time.monotonic()
    sampled = [items[row] for row in rows]
    with tempfile.TemporaryDirectory() as copies:
        prepared = []
        for item, path in zip(sampled, local_paths(sampled, Path(copies)), strict=True):
            try:
                prepared.append(
                    load_image(
                        path,
                        image_size=run.image_size,
                        color_mode=run.color_mode,
                        max_pixels=settings.KERASUI_MAX_IMAGE_PIXELS,
                    )
                )
            except ValueError as error:
                raise TrainingFailed(
                    f"item {item.pk} (label '{item.label}', file {Path(item.image.name).name}) "
                    f"cannot be read: {error}. Delete or replace it and train again."
                ) from None
    sample = np.stack(prepared)
    preparing = (time.monotonic() - began) / len(rows)
    log.info("Building %s for %sx%s images", backbone.label, run.image_size, run.image_size)
    model = pretrained.backbone_build(name=backbone.name, image_size=run.image_size)
    model.trainable = False
    extract = transfer.feature_extractor(model, channels=channels).predict_on_batch
    features, timed = [], []
    for start in range(0, len(rows), transfer.FEATURE_BATCH):
        began = time.monotonic()
        batch = sample[start : start + transfer.FEATURE_BATCH]
        features.append(np.asarray(extract(batch), dtype=np.float32).reshape(len(batch), -1))
        timed.append(((time.monotonic() - began), len(batch)))
    # The first batch traces the model: without it when there is another.
    steady = timed[1:] or timed
    per_image = sum(seconds for seconds, _ in steady) / sum(size for _, size in steady)
    # The preparation decodes in KERASUI_PREPROCESS_WORKERS processes from ml.cache's MIN_PARALLEL images.
    workers = min(settings.KERASUI_PREPROCESS_WORKERS, os.cpu_count() or 1) if count >= MIN_PARALLEL else 1
    seconds = per_image * (count - len(rows)) + (0.0 if images_cached else preparing * count / max(1, workers))
    return _HeadEstimate(
        seconds=seconds,
        images=count,
        sample=len(rows),
        backbone=model,
        rows=rows,
        features=np.concatenate(features),
    )


def _duration(seconds: float) -> str:
    """About how long, in words a person reads at a glance."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _code_fold_scores(
    run: TrainingRun, images, labels, folds, *, own: tuple[float, float], seconds: float, left
) -> selection.CandidateScore:
    """The model code's accuracy on the run's own split (its fit, already made: `own`, in `seconds`)
    and on the next folds, up to AUTOMATIC_CODE_FOLDS in all, while each fits in half the time left."""
    accuracies: list[float | None] = [None] * len(folds)
    losses: list[float | None] = [None] * len(folds)
    accuracies[0], losses[0] = own
    spent = seconds
    for index in range(1, min(AUTOMATIC_CODE_FOLDS, len(folds))):
        if seconds > left() / 2:
            log.info("Automatic: the model code scored on %s fold(s), the time budget allows no more", index)
            break
        began = time.monotonic()
        train_rows, scored_rows = folds[index]
        fold_splits = ml_fit.Splits(train=train_rows, validation=scored_rows, test=np.array([], dtype=np.int64))
        model = build_model(run_model_spec(run))

        def report(progress: ml_fit.Progress, index=index) -> bool:
            return runs.run_set_phase(run_id=run.pk, phase=Phase.TRAINING, progress=index / AUTOMATIC_CODE_FOLDS)

        options = ml_fit.FitOptions(**{**fit_arguments(run), "verbose": 0})
        result = ml_fit.fit(model, images, labels, options, report, splits=fold_splits)
        if result.stopped:
            raise Cancelled
        accuracies[index] = float(result.metrics.get("val_accuracy") or 0.0)
        losses[index] = float(result.metrics.get("val_loss") or 0.0)
        spent += time.monotonic() - began
        del model
    return selection.CandidateScore(name="model code", accuracies=accuracies, losses=losses, seconds=spent)


def _fit_automatic(run: TrainingRun, images, labels, splits, items: list[DataSetItem]):
    """The Automatic starting point: try the candidates that fit in the run's time budget, keep the best.

    1. KERASUI_AUTOMATIC_BACKBONE's head on cached features (the linear probe), when its weights are here;
    2. the model code from scratch at the run's image size;
    3. fine-tuning that backbone with the time left, when there is enough.
    On a small dataset (some label with fewer than selection.SMALL_PER_LABEL training and validation
    images) the head and the code are compared by repeated stratified cross-validation (ml/selection.py:
    the head on every fold, a linear probe each; the code on up to AUTOMATIC_CODE_FOLDS, a training
    each), on the folds both were scored on; fine-tuning is then tried only when the head leads, and
    replaces it when it beats it on the validation images. Otherwise the best validation accuracy wins,
    ties to the lower validation loss, then to the earlier (cheaper) candidate. The run's snapshot
    becomes the winner's (architecture, image size) so prediction feeds its model what it takes;
    metrics["automatic"] keeps what was tried, each score and time, and why the winner won.
    Returns (run, model, FitResult, predict or None, the winner's images).
    """
    budget = float(run.auto_seconds)
    started = time.monotonic()
    candidates: list[dict] = []
    results: list[tuple] = []  # (candidate, run copy, model, FitResult, predict, images)
    pool = np.concatenate([splits.train, splits.validation])
    folds = []
    if len(splits.validation) and selection.is_small(labels, pool):
        folds = selection.repeated_folds(labels, train=splits.train, validation=splits.validation, seed=run.seed)
    cross_validate = len(folds) > 1
    fold_scores: dict[str, selection.CandidateScore] = {}

    def left() -> float:
        return budget - (time.monotonic() - started)

    def tried(name: str, copy: TrainingRun, began: float, outcome, score=None) -> None:
        model, result, predict, candidate_images = outcome
        if result.stopped:
            # Cancelled: the completed epochs stay with the run, so a resumed run continues them.
            runs.run_keep_epochs(run_id=run.pk, history=result.history)
            raise Cancelled
        validation = _candidate_score(result.metrics)
        candidate = {
            "name": name,
            "architecture": copy.architecture,
            "image_size": copy.image_size,
            "val_accuracy": validation[0] if validation else None,
            "val_loss": validation[1] if validation else None,
            "seconds": round(time.monotonic() - began, 1),
            "tried": True,
        }
        if score is not None:
            score.name = name
            fold_scores[name] = score
            candidate["cross_validation"] = score.as_dict()
        candidates.append(candidate)
        results.append((candidate, copy, model, result, predict, candidate_images))
        log.info("Automatic: %s", candidate)

    def skipped(name: str, why: str) -> None:
        candidates.append({"name": name, "tried": False, "note": why})
        log.info("Automatic: %s skipped: %s", name, why)

    backbone = None
    backbone_name = settings.KERASUI_AUTOMATIC_BACKBONE
    if not backbone_name:
        skipped("a pretrained head", "KERASUI_AUTOMATIC_BACKBONE is empty on this server")
    else:
        try:
            backbone = pretrained.backbone_ready(name=backbone_name)
        except (WeightsUnavailable, KeyError, ValueError) as error:
            skipped(f"{backbone_name}, head only", f"its weights are not on this machine ({error})")
    pretrained_copy = None
    short = backbone.label.split(",")[0] if backbone is not None else ""
    head_name = f"{short}, head only"
    if backbone is not None:
        pretrained_copy = copy.copy(run)
        pretrained_copy.architecture = backbone.name
        pretrained_copy.image_size = AUTOMATIC_IMAGE_SIZE
        pretrained_copy.fine_tune_seconds = 0
        began = time.monotonic()
        _set_phase(run.pk, Phase.PREPARING)
        estimate = _estimate_head(pretrained_copy, backbone, items)
        if estimate is not None:
            log.info(
                "Automatic: %s's features of %s images would take about %.0f s more (measured on %s)",
                short,
                estimate.images,
                estimate.seconds,
                estimate.sample,
            )
        if estimate is not None and estimate.seconds > left():
            skipped(
                head_name,
                f"its {AUTOMATIC_IMAGE_SIZE} px images and features of {estimate.images:,} images would take about "
                f"{_duration(estimate.seconds)} (measured on {estimate.sample} of them), more than the "
                f"{max(0.0, left()):.0f} s left of the {budget:g} s budget; raise the automatic time budget to "
                "try it (once its features are cached, later runs on these images get them in seconds)",
            )
            pretrained_copy = None
            skipped(f"{short}, fine-tuned", "fine-tuning starts from the head, which was not tried")
            estimate = None  # its backbone's memory back before the model code trains
        else:
            big_images = _prepare_images(pretrained_copy, items)
            try:
                model, result, predict = _fit_pretrained(
                    pretrained_copy, backbone, big_images, labels, splits, items, estimate=estimate
                )
            except TrainingFailed as error:
                skipped(head_name, str(error))
                pretrained_copy = None
    if pretrained_copy is not None:
        score = None
        if cross_validate and not result.stopped:
            features = _cached_features(pretrained_copy, items, backbone, big_images)
            class_weight = None
            if run.balance_classes:
                class_weight = ml_fit.balanced_class_weights(labels[splits.train], len(run.labels))
            # The L2 strength the head's probe chose on the run's training images, for every fold: the
            # nested choice costs 40 fits a fold (minutes on 10 labels of a busy CPU), for a mild optimism.
            score = selection.probe_fold_scores(
                features,
                labels,
                folds,
                num_classes=len(run.labels),
                seed=run.seed,
                class_weight=class_weight,
                c=result.metrics["head"]["l2_c"],
            )
        tried(head_name, pretrained_copy, began, (model, result, predict, big_images), score)

    code_name = "model code, from scratch"
    # Without another candidate the model code is trained whatever the time left: the run needs a model.
    if left() > 0 or not results:
        code_copy = copy.copy(run)
        code_copy.architecture = Architecture.CODE
        began = time.monotonic()
        try:
            _, model, result = _fit_from_scratch(code_copy, images, labels, splits)
        except TrainingFailed as error:
            if not results:
                raise
            skipped(code_name, str(error))
        else:
            score = None
            validation = _candidate_score(result.metrics)
            if cross_validate and validation is not None and not result.stopped:
                score = _code_fold_scores(
                    code_copy, images, labels, folds, own=validation, seconds=time.monotonic() - began, left=left
                )
            tried(code_name, code_copy, began, (model, result, None, images), score)
    else:
        skipped(code_name, f"the time budget of {budget:g} s was spent")

    # With cross-validation: the head and the code by their folds, before fine-tuning is considered.
    leader = None
    if cross_validate and fold_scores:
        names = list(fold_scores)
        index, leader_reason = selection.choose([fold_scores[name] for name in names])
        leader = names[index]

    tuned_name = f"{short}, fine-tuned"
    if pretrained_copy is not None:
        remaining = left()
        if leader is not None and leader != head_name:
            skipped(tuned_name, f"fine-tuning starts from the head, and {leader} beat the head by cross-validation")
        elif remaining >= AUTOMATIC_MIN_FINE_TUNE_SECONDS:
            tuned_copy = copy.copy(pretrained_copy)
            tuned_copy.fine_tune_seconds = int(remaining)
            began = time.monotonic()
            try:
                model, result, predict = _fit_pretrained(tuned_copy, backbone, big_images, labels, splits, items)
            except TrainingFailed as error:
                skipped(tuned_name, str(error))
                model = None
            if model is not None:
                tried(f"{tuned_name} up to {int(remaining)} s", tuned_copy, began, (model, result, predict, big_images))
                candidates[-1]["note"] = result.metrics.get("fine_tune_note", "")
        else:
            skipped(
                tuned_name,
                f"{max(0.0, remaining):.0f} s of the {budget:g} s budget left "
                f"(it needs {AUTOMATIC_MIN_FINE_TUNE_SECONDS:g})",
            )

    scored = [entry for entry in results if entry[0]["val_accuracy"] is not None]
    if leader is not None:
        winner = next(entry for entry in results if entry[0]["name"] == leader)
        reason = leader_reason
        tuned = next((entry for entry in results if entry[0]["name"].startswith(tuned_name)), None)
        if leader == head_name and tuned is not None and tuned[3].metrics.get("fine_tuned"):
            head, tuned_entry = winner[0], tuned[0]
            if (tuned_entry["val_accuracy"] or 0.0) >= (head["val_accuracy"] or 0.0):
                reason = (
                    f"fine-tuning beat the head on the validation images (loss {tuned_entry['val_loss']:.3g} "
                    f"against {head['val_loss']:.3g}, accuracy {tuned_entry['val_accuracy']:.1%} against "
                    f"{head['val_accuracy']:.1%}); the head had led by cross-validation: {reason}"
                )
                winner = tuned
        measure = (
            f"repeated stratified cross-validation on the training and validation images ({len(folds)} folds: "
            f"the run's own split, then {selection.REPEATS} × {_fold_count(folds)}-fold); "
            "the head is scored on every fold, the model code on as many as its budget allows, and they are "
            "compared on the folds both were scored on; fine-tuning on the validation images"
        )
    elif scored:
        order = sorted(range(len(scored)), key=lambda i: (-scored[i][0]["val_accuracy"], scored[i][0]["val_loss"], i))
        winner = scored[order[0]]
        others = [scored[i][0] for i in order[1:]]
        reason = f"best validation accuracy ({winner[0]['val_accuracy']:.1%})"
        if others and others[0]["val_accuracy"] == winner[0]["val_accuracy"]:
            reason = f"as accurate as {others[0]['name']} ({winner[0]['val_accuracy']:.1%}), lower validation loss"
            if others[0]["val_loss"] == winner[0]["val_loss"]:
                reason = f"as good as {others[0]['name']} on the validation images, and tried first (cheaper)"
        elif others:
            reason += f", ahead of {others[0]['name']} ({others[0]['val_accuracy']:.1%})"
        measure = "accuracy on the validation images (the run's split, the same for every candidate)"
    else:
        # Nothing held out: the pretrained head, the usual winner on photos, when there is one.
        winner = results[0]
        reason = "no validation images to compare on: the first candidate tried was kept"
        measure = "none: no validation images"
    candidate, winner_run, model, result, predict, winner_images = winner
    candidate["winner"] = True
    fields = {"architecture": winner_run.architecture, "image_size": winner_run.image_size}
    fields["fine_tune_seconds"] = winner_run.fine_tune_seconds
    TrainingRun.objects.filter(pk=run.pk).update(**fields)
    for name, value in fields.items():
        setattr(run, name, value)
    result.metrics["automatic"] = {
        "budget_seconds": budget,
        "seconds": round(time.monotonic() - started, 1),
        "candidates": candidates,
        "winner": candidate["name"],
        "reason": reason,
        "measure": measure,
    }
    log.info("Automatic: %s won: %s", candidate["name"], reason)
    return run, model, result, predict, winner_images


def _fold_count(folds) -> int:
    """k of the repeated k-fold part of `folds` (the run's own split first)."""
    return max(1, (len(folds) - 1) // selection.REPEATS)


def _current_model_probabilities(current: TrainingRun, images, labels, rows: np.ndarray, batch_size: int):
    """The current model's probabilities for rows of this run's images: by its proven ONNX export when it
    has one (ONNX Runtime loads it in a fraction of the time Keras takes to load the .keras file)."""
    if current.serving_engine == ONNXRUNTIME and default_storage.exists(onnx_name(current)):
        predictor = OnnxPredictor(media_local_copy(name=onnx_name(current)))
        return predictor.predict(np.asarray(images[rows]))
    model = keras.saving.load_model(media_local_copy(name=current.model_file.name))
    return _model_probabilities(model, images, labels, batch_size=batch_size)(rows)


def _score_current_model(run: TrainingRun, evaluation: dict, images, labels, splits) -> None:
    """Score the dataset's current model on this run's held-out images when the two held out different
    images, so the promotion policy compares them on the same images (promotion.py reads it).

    Only when the current model takes the same labels, image size and colour mode (then this run's
    prepared images are its input); it is noted in the held-out report as `current_model`.
    """
    current_id = DataSet.objects.filter(pk=run.dataset_id).values_list("current_run", flat=True).first()
    current = TrainingRun.objects.filter(pk=current_id).first() if current_id else None
    if current is None or current.pk == run.pk or not current.model_file:
        return
    for name in HELD_OUT:
        report = evaluation.get(name)
        if not report or not report.get("count"):
            continue
        if sorted(current.splits.get(name) or []) == sorted(run.splits.get(name) or []):
            return  # the same images already: the policy compares the two reports
        if (current.labels, current.image_size, current.color_mode) != (run.labels, run.image_size, run.color_mode):
            return
        rows = np.asarray(getattr(splits, name), dtype=np.int64)
        try:
            predicted = _current_model_probabilities(current, images, labels, rows, batch_size=max(run.batch_size, 64))
        except Exception as error:  # noqa: BLE001 - the comparison falls back to each run's own images
            log.warning(
                "The current model (run %s) could not be scored on run %s's images: %s", current.pk, run.pk, error
            )
            return
        accuracy = float((predicted.argmax(axis=1) == np.asarray(labels)[rows]).mean())
        report["current_model"] = {"run": current.pk, "accuracy": round(accuracy, 6), "count": int(len(rows))}
        log.info(
            "The current model (run %s) on this run's %s %s images: accuracy %.4f",
            current.pk,
            len(rows),
            name,
            accuracy,
        )
        return


def training_run_execute(*, run: TrainingRun) -> TrainingRun:
    """Train a claimed (running) run to its end: succeeded, failed with a message, or cancelled.

    Prints Keras' progress to standard output (the run's log). Never raises for a failure of the
    run itself: that failure is recorded on the run.
    """
    try:
        _check_labels(run)
        # Missing weights fail the run before any image is decoded.
        backbone = _ready_backbone(run) if pretrained.is_pretrained(run.architecture) else None
        automatic = run.architecture == Architecture.AUTO
        log.info("Run %s of dataset '%s': labels %s", run.pk, run.dataset.name, run.labels)
        if run.unlabelled_count:
            log.info("%s unlabelled images are left out of training and evaluation", run.unlabelled_count)
        items = _run_items(run)
        _set_phase(run.pk, Phase.PREPARING)
        started = time.monotonic()
        images = _prepare_images(run, items)
        index_of = {label: index for index, label in enumerate(run.labels)}
        labels = np.array([index_of[item.label] for item in items], dtype=np.int32)
        log.info(
            "Prepared %s images of %sx%s (%s) in %.1f s",
            len(images),
            run.image_size,
            run.image_size,
            run.color_mode,
            time.monotonic() - started,
        )
        splits = _splits(run, items, labels)
        log.info(
            "Split (seed %s): %s training, %s validation, %s test images",
            run.seed,
            len(splits.train),
            len(splits.validation),
            len(splits.test),
        )

        phases = {"preparing": round(time.monotonic() - started, 2)}
        started = time.monotonic()
        predict = None
        if automatic:
            run, model, result, predict, images = _fit_automatic(run, images, labels, splits, items)
            folder = _checkpoint_folder(run)  # the scratch candidate's checkpoints, removed on success
        elif backbone is not None:
            # Trained by the transfer recipe: no checkpoints.
            folder = None
            model, result, predict = _fit_pretrained(run, backbone, images, labels, splits, items)
        else:
            folder, model, result = _fit_from_scratch(run, images, labels, splits)
        phases["training"] = round(time.monotonic() - started, 2)
        if result.stopped:
            # Keep the completed epochs with the run: it resumes from the last of them.
            runs.run_keep_epochs(run_id=run.pk, history=result.history)
            raise Cancelled
        if result.stopped_early:
            log.info("Stopped early: no improvement since epoch %s", result.best_epoch)

        _set_phase(run.pk, Phase.EVALUATING, 0)
        started = time.monotonic()
        if predict is None:
            predict = _model_probabilities(model, images, labels, batch_size=max(run.batch_size, 64))
        evaluation, calibration = _evaluation(run, model, predict, labels, splits, items)
        if calibration.get("ece_before") is not None:
            log.info(
                "Calibrated: temperature %s, expected calibration error %s -> %s on %s",
                calibration["temperature"],
                calibration["ece_before"],
                calibration["ece_after"],
                calibration["measured_on"],
            )
        _set_phase(run.pk, Phase.EVALUATING, 0.5)
        _score_current_model(run, evaluation, images, labels, splits)
        phases["evaluating"] = round(time.monotonic() - started, 2)
        metrics = dict(result.metrics)
        metrics["calibration"] = calibration
        for name in ("validation", "test"):
            if name in evaluation:
                prefix = "val" if name == "validation" else "test"
                metrics[f"{prefix}_loss"] = evaluation[name]["loss"]
                metrics[f"{prefix}_accuracy"] = evaluation[name]["accuracy"]
        _set_phase(run.pk, Phase.SAVING, 0)
        started = time.monotonic()
        with media_journal() as journal:
            model_name = _save_model(run, model, journal)
            phases["saving"] = round(time.monotonic() - started, 2)
            _set_phase(run.pk, Phase.EXPORTING, 0)
            started = time.monotonic()
            # Issue 17 (serving): the ONNX export is made and proven before the run becomes current.
            # While other model jobs hold every slot it waits a while, then leaves that to the first use.
            serving_prepare_run(
                run=run,
                model_path=str(media_local_copy(name=model_name)),
                wait_for_slot=SERVING_SLOT_WAIT_SECONDS,
                model=model,
            )
            phases["exporting"] = round(time.monotonic() - started, 2)
            metrics["phases"] = phases
            log.info("Phases (seconds): %s", phases)
            try:
                with transaction.atomic():
                    succeeded = runs.run_succeed(
                        run=run,
                        epoch=len(result.history),
                        history=result.history,
                        metrics=metrics,
                        evaluation=evaluation,
                        model_file=model_name,
                    )
                    if not succeeded:
                        run.model_file.storage.delete(model_name)
                    elif folder is not None:
                        transaction.on_commit(lambda: _checkpoints_delete(run, folder))
            except BaseException:
                run.model_file.storage.delete(model_name)
                raise
        log.info("Run %s finished: %s", run.pk, metrics)
        if run.promotion:
            log.info("Run %s: %s", run.pk, run.promotion["reason"])
    except Cancelled:
        log.info("Run %s was cancelled.", run.pk)
    except TrainingFailed as error:
        log.info("Run %s failed: %s", run.pk, error)
        runs.run_fail(run_id=run.pk, message=str(error))
    except OSError as error:
        log.exception("Run %s could not write a file", run.pk)
        reason = "the disk is full" if error.errno == errno.ENOSPC else (error.strerror or str(error))
        where = f" ({error.filename})" if error.filename else ""
        runs.run_fail(
            run_id=run.pk,
            message=f"a file could not be written{where}: {reason}. Nothing of this run became current; "
            "free some space and resume the run or train again.",
            interrupted=True,
        )
    except Exception as error:  # noqa: BLE001 - whatever happens, the run must not stay "running"
        log.exception("Run %s failed unexpectedly", run.pk)
        runs.run_fail(run_id=run.pk, message=f"unexpected error: {type(error).__name__}: {error}")
    run.refresh_from_db()
    return run
