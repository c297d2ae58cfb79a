"""Train a built model: split the data, fit with callbacks, report progress, keep the best epoch.

No Django here: progress leaves through the `report` function the caller passes in; when it
returns False (the run was cancelled), training stops after the current batch. With a checkpoint
folder, every completed epoch leaves the model and its optimizer there, so a run can be resumed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from ml.feed import batches
from ml.files import atomic_write

BEST_WEIGHTS = "best.weights.h5"
CHECKPOINT_PATTERN = "epoch-*.keras"


@dataclass(frozen=True)
class FitOptions:
    """The run's training options."""

    epochs: int
    batch_size: int
    validation_split: float
    verbose: int = 2
    seed: int = 0
    test_split: float = 0.0
    patience: int = 0
    reduce_lr_on_plateau: bool = False
    balance_classes: bool = False


@dataclass(frozen=True)
class Splits:
    """Row indices of each split; validation and test are sorted, train is in shuffled order."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray


@dataclass
class Progress:
    """A snapshot of training, sent to the reporter at most about once a second."""

    percent: float
    epoch: int
    history: list[dict] = field(default_factory=list)


@dataclass
class FitResult:
    """What came out of a fit."""

    history: list[dict]
    metrics: dict
    stopped: bool
    best_epoch: int | None = None
    stopped_early: bool = False


Reporter = Callable[[Progress], bool]


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices for training and validation, the same fraction of every label in validation.

    A label with a single image stays in training; with the same labels and seed the split is the
    same every time.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"validation_split must be at least 0 and below 1, not {fraction}")
    generator = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    validation: list[np.ndarray] = []
    for label in np.unique(labels):
        indices = np.flatnonzero(labels == label)
        generator.shuffle(indices)
        count = 0
        if fraction > 0 and len(indices) >= 2:
            count = min(max(1, round(len(indices) * fraction)), len(indices) - 1)
        validation.append(indices[:count])
        train.append(indices[count:])
    train_indices = np.concatenate(train) if train else np.empty(0, dtype=np.int64)
    validation_indices = np.concatenate(validation) if validation else np.empty(0, dtype=np.int64)
    generator.shuffle(train_indices)
    return train_indices, np.sort(validation_indices)


def split_indices(labels: np.ndarray, *, validation_split: float, test_split: float, seed: int) -> Splits:
    """Stratified train / validation / test indices; the same labels and seed give the same splits."""
    if not 0 <= test_split < 1:
        raise ValueError(f"test_split must be at least 0 and below 1, not {test_split}")
    if validation_split + test_split >= 1:
        raise ValueError("validation_split and test_split together must leave images to train on")
    labels = np.asarray(labels)
    rest, test = stratified_split(labels, test_split, seed)
    rest = np.sort(rest)
    share = validation_split / (1 - test_split)
    train, validation = stratified_split(labels[rest], share, seed + 1)
    return Splits(train=rest[train], validation=np.sort(rest[validation]), test=test)


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """Weights inversely proportional to each label's count, averaging 1 over the images."""
    counts = np.bincount(labels, minlength=num_classes)
    present = np.count_nonzero(counts)
    return {label: float(len(labels) / (present * count)) if count else 0.0 for label, count in enumerate(counts)}


def _learning_rate(model: keras.Model) -> float | None:
    try:
        return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    except (AttributeError, TypeError, ValueError):
        return None


class ProgressCallback(keras.callbacks.Callback):
    """Sends throttled progress within epochs and a history row after every completed epoch."""

    def __init__(
        self,
        report: Reporter,
        *,
        epochs: int,
        steps_per_epoch: int,
        history: Sequence[dict] = (),
        interval: float = 1.0,
    ):
        super().__init__()
        self.report = report
        self.epochs = epochs
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.interval = interval
        self.history: list[dict] = list(history)
        self.stopped = False
        self.epoch_cut_short = False
        self._last_report = 0.0
        self._epoch = len(self.history)
        self._epoch_started = 0.0
        self.nan_epoch: int | None = None

    def _send(self, percent: float, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_report < self.interval:
            return
        self._last_report = now
        progress = Progress(percent=min(100.0, percent), epoch=self._epoch, history=list(self.history))
        if self.report(progress) is False:
            self.stopped = True
            self.model.stop_training = True

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1
        self._epoch_started = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.nan_epoch = self._epoch
            self.model.stop_training = True
            return
        done = (self._epoch - 1) + (batch + 1) / self.steps_per_epoch
        self._send(100.0 * done / self.epochs)
        if self.stopped and batch + 1 < self.steps_per_epoch:
            self.epoch_cut_short = True

    def on_epoch_end(self, epoch, logs=None):
        if self.epoch_cut_short or self.nan_epoch is not None:
            return  # not a completed epoch: no row, no checkpoint
        row = {"epoch": epoch + 1}
        for name, value in (logs or {}).items():
            if name != "learning_rate":
                row[name] = round(float(value), 6)
        rate = _learning_rate(self.model)
        if rate is not None:
            row["learning_rate"] = float(f"{rate:.6g}")  # float32 noise off: 0.001, not 0.0010000000474974513
        row["seconds"] = round(time.monotonic() - self._epoch_started, 3)
        self.history.append(row)
        self._send(100.0 * (epoch + 1) / self.epochs, force=True)


class BestEpoch(keras.callbacks.Callback):
    """Keeps the best epoch's weights, stops early after `patience` epochs without progress, and
    writes the checkpoints a resumed run starts from."""

    def __init__(
        self,
        progress: ProgressCallback,
        *,
        monitor: str,
        patience: int,
        folder: Path | None,
        written: Callable[[Path], object] | None = None,
    ):
        super().__init__()
        self.written = written
        self.progress = progress
        self.monitor = monitor
        self.patience = patience
        self.folder = folder
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_weights: list | None = None
        self.stopped_early = False
        for row in progress.history:
            self._consider(row)

    def _consider(self, row: dict) -> bool:
        value = row.get(self.monitor)
        if value is None or not math.isfinite(value) or (self.best is not None and value >= self.best):
            return False
        self.best, self.best_epoch = value, row["epoch"]
        return True

    def on_train_begin(self, logs=None):
        if self.best_epoch is not None and self.folder is not None and (self.folder / BEST_WEIGHTS).exists():
            # Resuming: the best epoch so far may be before the checkpoint the model was loaded from.
            current = self.model.get_weights()
            self.model.load_weights(self.folder / BEST_WEIGHTS)
            self.best_weights = self.model.get_weights()
            self.model.set_weights(current)

    def on_epoch_end(self, epoch, logs=None):
        if not self.progress.history or self.progress.history[-1]["epoch"] != epoch + 1:
            return  # the epoch was cut short (cancelled or NaN)
        row = self.progress.history[-1]
        if self._consider(row):
            self.best_weights = self.model.get_weights()
            if self.folder is not None:
                _replace(self.folder / BEST_WEIGHTS, lambda path: self.model.save_weights(path))
        if self.folder is not None:
            _replace(self.folder / f"epoch-{epoch + 1:04d}.keras", lambda path: self.model.save(path))
            for older in self.folder.glob(CHECKPOINT_PATTERN):
                if older.name != f"epoch-{epoch + 1:04d}.keras":
                    older.unlink(missing_ok=True)
            if self.written is not None:
                self.written(self.folder)
        if self.patience and self.best_epoch is not None and epoch + 1 - self.best_epoch >= self.patience:
            self.stopped_early = True
            self.model.stop_training = True

    def restore(self) -> None:
        last = self.progress.history[-1]["epoch"] if self.progress.history else None
        if self.best_weights is not None and self.best_epoch != last:
            self.model.set_weights(self.best_weights)


def last_checkpoint(folder: Path) -> tuple[int, Path] | None:
    """The newest complete epoch checkpoint in `folder`: (epoch, path), or None."""
    found = sorted(folder.glob(CHECKPOINT_PATTERN)) if folder.is_dir() else []
    if not found:
        return None
    return int(found[-1].stem.split("-")[1]), found[-1]


def _replace(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary name and rename, so a crash never leaves half a checkpoint."""
    atomic_write(path, write)


def fit(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    options: FitOptions,
    report: Reporter,
    *,
    splits: Splits | None = None,
    checkpoint_folder: Path | None = None,
    checkpoint_written: Callable[[Path], object] | None = None,
    history: Sequence[dict] = (),
) -> FitResult:
    """Fit `model` on uint8 images (an array or a memory map) and integer labels.

    `checkpoint_written(folder)` is called after each epoch's checkpoint is in `checkpoint_folder` (to
    keep it elsewhere too). `history` holds the rows of epochs already completed when resuming from a checkpoint; the
    model then starts at the epoch after them. At the end the model holds the best epoch's
    weights (lowest validation loss, or training loss without validation).
    """
    if len(images) != len(labels):
        raise ValueError("images and labels differ in length")
    labels = np.asarray(labels, dtype=np.int32)
    if splits is None:
        splits = split_indices(
            labels, validation_split=options.validation_split, test_split=options.test_split, seed=options.seed
        )
    if len(splits.train) == 0:
        raise ValueError("no images left to train on")
    keras.utils.set_random_seed(options.seed + len(history))
    if checkpoint_folder is not None:
        checkpoint_folder.mkdir(parents=True, exist_ok=True)

    train_data = batches(images, labels, splits.train, batch_size=options.batch_size, shuffle=True, seed=options.seed)
    validation_data = None
    if len(splits.validation):
        validation_data = batches(
            images, labels, splits.validation, batch_size=options.batch_size, shuffle=False, seed=0
        )
    progress = ProgressCallback(
        report,
        epochs=options.epochs,
        steps_per_epoch=math.ceil(len(splits.train) / options.batch_size),
        history=history,
    )
    monitor = "val_loss" if validation_data is not None else "loss"
    best = BestEpoch(
        progress, monitor=monitor, patience=options.patience, folder=checkpoint_folder, written=checkpoint_written
    )
    callbacks: list[keras.callbacks.Callback] = [progress, best]
    if options.reduce_lr_on_plateau:
        plateau = max(2, options.patience // 2) if options.patience else 3
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.5, patience=plateau, min_lr=1e-6, verbose=1)
        )
    class_weight = None
    if options.balance_classes:
        num_classes = int(model.output_shape[-1])
        class_weight = balanced_class_weights(labels[splits.train], num_classes)

    if len(history) < options.epochs:
        model.fit(
            train_data,
            epochs=options.epochs,
            initial_epoch=len(history),
            shuffle=False,  # the dataset shuffles itself, every epoch
            validation_data=validation_data,
            verbose=options.verbose,
            callbacks=callbacks,
            class_weight=class_weight,
        )
    if progress.nan_epoch is not None:
        raise ValueError(
            f"the loss became NaN in epoch {progress.nan_epoch}: lower the learning rate or check the model code"
        )
    best.restore()
    chosen = next((row for row in progress.history if row["epoch"] == best.best_epoch), None)
    chosen = chosen or (progress.history[-1] if progress.history else {})
    metrics = {name: value for name, value in chosen.items() if name not in {"epoch", "seconds", "learning_rate"}}
    metrics["train_count"] = int(len(splits.train))
    metrics["validation_count"] = int(len(splits.validation))
    metrics["test_count"] = int(len(splits.test))
    metrics["epochs_completed"] = len(progress.history)
    metrics["best_epoch"] = best.best_epoch
    metrics["stopped_early"] = best.stopped_early
    return FitResult(
        history=progress.history,
        metrics=metrics,
        stopped=progress.stopped,
        best_epoch=best.best_epoch,
        stopped_early=best.stopped_early,
    )
