"""Train a built model on arrays: split, fit with callbacks, report progress, collect metrics.

No Django here: progress leaves through the `report` function the caller passes in; when it
returns False (the run was cancelled), training stops after the current batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np


@dataclass(frozen=True)
class FitOptions:
    """The run's training options."""

    epochs: int
    batch_size: int
    validation_split: float
    verbose: int = 2
    seed: int = 0


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
    train_indices = np.concatenate(train)
    validation_indices = np.concatenate(validation)
    generator.shuffle(train_indices)
    return train_indices, np.sort(validation_indices)


class ProgressCallback(keras.callbacks.Callback):
    """Sends throttled progress within epochs and a history row after every epoch."""

    def __init__(self, report: Reporter, *, epochs: int, steps_per_epoch: int, interval: float = 1.0):
        super().__init__()
        self.report = report
        self.epochs = epochs
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.interval = interval
        self.history: list[dict] = []
        self.stopped = False
        self._last_report = 0.0
        self._epoch = 0
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

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1}
        for name, value in (logs or {}).items():
            row[name] = round(float(value), 6)
        row["seconds"] = round(time.monotonic() - self._epoch_started, 3)
        self.history.append(row)
        if self.nan_epoch is not None:
            return
        self._send(100.0 * (epoch + 1) / self.epochs, force=True)


def fit(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    options: FitOptions,
    report: Reporter,
) -> FitResult:
    """Fit `model` on uint8 images and integer labels; return its history and final metrics."""
    if len(images) != len(labels):
        raise ValueError("images and labels differ in length")
    train_indices, validation_indices = stratified_split(labels, options.validation_split, options.seed)
    keras.utils.set_random_seed(options.seed)
    validation_data = None
    if len(validation_indices):
        validation_data = (images[validation_indices], labels[validation_indices])
    progress = ProgressCallback(
        report,
        epochs=options.epochs,
        steps_per_epoch=math.ceil(len(train_indices) / options.batch_size),
    )
    model.fit(
        images[train_indices],
        labels[train_indices],
        batch_size=options.batch_size,
        epochs=options.epochs,
        validation_data=validation_data,
        shuffle=True,
        verbose=options.verbose,
        callbacks=[progress],
    )
    if progress.nan_epoch is not None:
        raise ValueError(
            f"the loss became NaN in epoch {progress.nan_epoch}: lower the learning rate or check the model code"
        )
    last = progress.history[-1] if progress.history else {}
    metrics = {name: value for name, value in last.items() if name not in {"epoch", "seconds"}}
    metrics["train_count"] = int(len(train_indices))
    metrics["validation_count"] = int(len(validation_indices))
    metrics["epochs_completed"] = len(progress.history)
    return FitResult(history=progress.history, metrics=metrics, stopped=progress.stopped)
