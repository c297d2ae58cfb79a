"""The trainer: what the training process does with a claimed run — prepare, fit, evaluate, save.

Run by the `train` command (which a runner starts as a subprocess, or a person in a shell); the web
process never imports it. Every change of the run's status goes through the lifecycle (runs.py).
A run from scratch fits its model epoch by epoch with checkpoints; a run from a pretrained starting
point follows ml/transfer.py's recipe: backbone features cached per dataset version × backbone × size,
a head trained on them, then fine-tuning within the run's time budget.
"""

from __future__ import annotations

import errno
import logging
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
from django.conf import settings
from django.core.files import File
from django.db import transaction

from kerasui.logs import RUN_LOGGER
from management.ml import fit as ml_fit
from management.ml import transfer
from management.ml.backbones import WeightsUnavailable
from management.ml.cache import ImageDecodeError, build_image_cache, cache_key, prune_image_cache
from management.ml.evaluate import classification_report, evaluate
from management.ml.images import channels_for
from management.ml.models import Augmentation, ModelCodeError, ModelSpec, build_model, model_summary
from management.models import DataSetItem, Phase, TrainingRun
from management.options import fit_arguments
from management.services import pretrained, runs
from management.services.journal import MediaJournal, media_journal
from management.services.serving import serving_prepare_run
from management.services.training import training_run_problem

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
    run.splits = {name: [items[row].pk for row in getattr(splits, name)] for name in ("train", "validation", "test")}
    run.split_counts = {name: len(ids) for name, ids in run.splits.items()}
    TrainingRun.objects.filter(pk=run.pk).update(splits=run.splits, split_counts=run.split_counts)
    return splits


def _checkpoint_folder(run: TrainingRun) -> Path:
    name = f"checkpoints/run_{run.pk}"
    if run.checkpoint != name:
        TrainingRun.objects.filter(pk=run.pk).update(checkpoint=name)
        run.checkpoint = name
    return Path(settings.MEDIA_ROOT) / name


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
        weights_path=str(Path(settings.MEDIA_ROOT) / run.weights_file) if run.weights_file else None,
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


def _evaluation(model, images, labels, splits, run: TrainingRun, items: list[DataSetItem]) -> dict:
    """Validation and test reports; the training images' when nothing was held out."""
    item_ids = [item.pk for item in items]
    parts = {"validation": splits.validation, "test": splits.test}
    if not len(splits.validation) and not len(splits.test):
        parts = {"training": np.sort(splits.train)}
    return {
        name: evaluate(
            model, images, labels, rows, label_names=run.labels, item_ids=item_ids, batch_size=max(run.batch_size, 64)
        )
        for name, rows in parts.items()
        if len(rows)
    }


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


def _fit_pretrained(run: TrainingRun, backbone, images, labels, splits, items: list[DataSetItem]):
    """Train a pretrained run on its prepared images: (model, FitResult, evaluation or None).

    The evaluation comes from the head on cached features when the backbone was not fine-tuned (the
    same predictions, without a backbone pass); None asks for an evaluation of the whole model.
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
    evaluation = None if result.fine_tuned else _evaluation_on_features(run, result, labels, splits, items)
    return result.model, fit_result, evaluation


def _evaluation_on_features(run: TrainingRun, result, labels, splits, items: list[DataSetItem]) -> dict:
    """As _evaluation, from the head on the cached features (the backbone was not changed)."""
    parts = {"validation": splits.validation, "test": splits.test}
    if not len(splits.validation) and not len(splits.test):
        parts = {"training": np.sort(splits.train)}
    return {
        name: classification_report(
            np.asarray(labels)[rows],
            transfer.head_probabilities(result.head, result.features, rows),
            label_names=run.labels,
            item_ids=[items[row].pk for row in rows],
        )
        for name, rows in parts.items()
        if len(rows)
    }


def training_run_execute(*, run: TrainingRun) -> TrainingRun:
    """Train a claimed (running) run to its end: succeeded, failed with a message, or cancelled.

    Prints Keras' progress to standard output (the run's log). Never raises for a failure of the
    run itself: that failure is recorded on the run.
    """
    try:
        _check_labels(run)
        # Missing weights fail the run before any image is decoded.
        backbone = _ready_backbone(run) if pretrained.is_pretrained(run.architecture) else None
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

        evaluation = None
        if backbone is not None:
            # Trained by the transfer recipe: no checkpoints.
            folder = None
            model, result, evaluation = _fit_pretrained(run, backbone, images, labels, splits, items)
        else:
            folder, model, result = _fit_from_scratch(run, images, labels, splits)
        if result.stopped:
            # Keep the completed epochs with the run: it resumes from the last of them.
            runs.run_keep_epochs(run_id=run.pk, history=result.history)
            raise Cancelled
        if result.stopped_early:
            log.info("Stopped early: no improvement since epoch %s", result.best_epoch)

        _set_phase(run.pk, Phase.EVALUATING, 1.0)
        if evaluation is None:
            evaluation = _evaluation(model, images, labels, splits, run, items)
        metrics = dict(result.metrics)
        for name in ("validation", "test"):
            if name in evaluation:
                prefix = "val" if name == "validation" else "test"
                metrics[f"{prefix}_loss"] = evaluation[name]["loss"]
                metrics[f"{prefix}_accuracy"] = evaluation[name]["accuracy"]
        _set_phase(run.pk, Phase.SAVING, 1.0)
        with media_journal() as journal:
            model_name = _save_model(run, model, journal)
            # Issue 17 (serving): the ONNX export is made and proven before the run becomes current.
            # While other model jobs hold every slot it waits a while, then leaves that to the first use.
            serving_prepare_run(
                run=run, model_path=run.model_file.storage.path(model_name), wait_for_slot=SERVING_SLOT_WAIT_SECONDS
            )
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
                        transaction.on_commit(lambda: shutil.rmtree(folder, ignore_errors=True))
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
