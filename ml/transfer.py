"""Transfer learning from a pretrained backbone, the way practitioners do it on a CPU.

1. Features: the frozen backbone's output for every image, computed once per dataset version ×
   backbone × image size and cached on disk beside the decoded images, so training another head
   costs no backbone pass.
2. Head: a softmax layer fitted on the cached features by the linear probe (ml/probe.py: L-BFGS to
   convergence, L2 strength by cross-validation), deterministic and well under a second.
3. Fine-tuning (optional, within a time budget): the top of the backbone unfrozen at a tenth of the
   learning rate for a number of optimizer steps (at least FINE_TUNE_MIN_STEPS, whatever the number
   of images), batch normalisation kept in inference mode, augmentation only here.

The result is one ordinary Keras model (backbone + head) taking the run's uint8 images.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from ml.cache import CACHE_KEY_PATTERN, release_pages, sync_file
from ml.files import atomic_path
from ml.fit import BestEpoch, Progress, ProgressCallback, Reporter, Splits, balanced_class_weights
from ml.head import HeadFit
from ml.models import Augmentation, augmentation_layers
from ml.probe import fit_linear_probe, log_softmax

# Bump when the features a key names change (e.g. the feature extractor's input adapter).
FEATURES_FORMAT = 1
FEATURE_BATCH = 32
# Every this many rows, the feature cache's build lets go of the pages it has read and written.
RELEASE_ROWS = 4096
# The share of the backbone's layers (from the top) that fine-tuning trains.
FINE_TUNE_FRACTION = 0.3
FINE_TUNE_RATE_FACTOR = 0.1
# Fine-tuning is measured in optimizer steps: 16 training images at batch 32 are one step an epoch,
# and ten epochs of that would be ten steps. At least this many, within the time budget.
FINE_TUNE_MIN_STEPS = 60
# Fine-tuning trains a backbone at 224 px: its activations grow with the batch (a batch of 128 took the
# training process to about 3.6 GB), so it takes at most this many images a step whatever the run's
# batch size, which is chosen for the model code at the dataset's own image size.
FINE_TUNE_MAX_BATCH = 32
REPORT_INTERVAL = 0.5

# Phases, as reported through `phase(name, percent)`.
FEATURES = "features"
HEAD = "head"
FINE_TUNE = "fine_tune"


class Stopped(Exception):
    """The caller's reporter answered False: the run was cancelled while features were computed."""


@dataclass(frozen=True)
class TransferOptions:
    """A pretrained run's choices."""

    epochs: int
    batch_size: int
    learning_rate: float = 0.001
    seed: int = 0
    patience: int = 0
    balance_classes: bool = False
    dropout: float = 0.2
    fine_tune_seconds: float = 0.0
    augmentation: Augmentation = field(default_factory=Augmentation)
    verbose: int = 0


@dataclass
class TransferResult:
    """The assembled model and what happened while training it."""

    model: keras.Model | None
    head: keras.Model
    features: np.ndarray
    history: list[dict]
    metrics: dict
    stopped: bool
    best_epoch: int | None
    stopped_early: bool
    head_epochs: int
    fine_tuned: bool
    # How the head's L2 strength was chosen (ml/probe.py), and what fine-tuning did, in words.
    probe: dict = field(default_factory=dict)
    fine_tune_note: str = ""


PhaseReporter = Callable[[str, float], object]


# 1. Features.


def feature_cache_key(image_key: str, *, backbone: str, weights_id: str, image_size: int) -> str:
    """The name of the features of the images cached under `image_key`, through this backbone."""
    digest = hashlib.sha256(json.dumps([FEATURES_FORMAT, image_key, backbone, weights_id, image_size]).encode())
    return digest.hexdigest()


def feature_extractor(backbone: keras.Model, *, channels: int) -> keras.Model:
    """The model the feature cache runs: `backbone_features`."""
    return backbone_features(backbone, channels=channels)


def backbone_features(backbone: keras.Model, *, channels: int) -> keras.Model:
    """The backbone in inference mode behind the run's input: grayscale images get three channels.

    The assembled model's first part (its ONNX export reuses this part's conversion, ml/export.py)."""
    size = backbone.input_shape[1]
    inputs = keras.Input(shape=(size, size, channels), name="image")
    x = _to_rgb(inputs, channels)
    return keras.Model(inputs, backbone(x, training=False), name="features")


def _to_rgb(x, channels: int):
    from keras import layers

    if channels == 1:
        # ImageNet backbones see colour; a grey image is the same grey in all three channels.
        return layers.Concatenate(name="grey_to_rgb")([x, x, x])
    if channels != 3:
        raise ValueError(f"pretrained backbones take grayscale or rgb images, not {channels} channels")
    return x


def build_feature_cache(
    images: np.ndarray,
    *,
    folder: str | os.PathLike,
    key: str,
    make_extractor: Callable[[], Callable[[np.ndarray], np.ndarray]],
    batch_size: int = FEATURE_BATCH,
    report: Callable[[int, int], object] | None = None,
    known: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """The read-only memory-mapped float32 features (N, dimensions) of `images`.

    An existing cache under `key` is returned without building the extractor; otherwise
    `make_extractor()` gives a function from a uint8 batch to its features, run batch by batch into a
    temporary file renamed into place. `known` = (rows, their features) already computed (a sample
    timed before): written as they are, never computed again. `report(done, total)` answering False
    stops with Stopped.
    """
    if not CACHE_KEY_PATTERN.fullmatch(key):
        raise ValueError(f"cache key must be 1 to 128 letters, digits, '-' or '_', not {key!r}")
    folder = Path(folder)
    final = folder / f"{key}.npy"
    cached = open_feature_cache(folder, key, len(images))
    if cached is not None:
        return cached

    known_rows = np.asarray(known[0] if known is not None else [], dtype=np.int64)
    todo = np.setdiff1d(np.arange(len(images), dtype=np.int64), known_rows)
    extract = make_extractor() if len(todo) else None
    with atomic_path(final, prefix=f"{key}.", suffix=".tmp") as temporary:
        rows = None

        def write(where: np.ndarray, values: np.ndarray):
            nonlocal rows
            values = np.asarray(values, dtype=np.float32).reshape(len(where), -1)
            if rows is None:
                rows = np.lib.format.open_memmap(
                    temporary, mode="w+", dtype=np.float32, shape=(len(images), values.shape[-1])
                )
            rows[where] = values

        if len(known_rows):
            write(known_rows, known[1])
        last_report = 0.0
        for start in range(0, len(todo), batch_size):
            where = todo[start : start + batch_size]
            write(where, extract(np.asarray(images[where])))
            done = len(known_rows) + start + len(where)
            if (start + len(where)) % RELEASE_ROWS < batch_size:
                # Pages already read and written need not stay resident (written ones stay in the page
                # cache until the sync below): memory stays flat at any number of images.
                release_pages(rows)
                release_pages(images)
            if report is not None and (time.monotonic() - last_report >= REPORT_INTERVAL or done == len(images)):
                last_report = time.monotonic()
                if report(done, len(images)) is False:
                    raise Stopped
        if rows is None:
            raise ValueError("there are no images to compute features of")
        rows.flush()
        del rows
        sync_file(temporary)
    return np.load(final, mmap_mode="r")


def open_feature_cache(folder: str | os.PathLike, key: str, count: int) -> np.ndarray | None:
    """The cached features of `count` images under `key`, or None when they are not cached."""
    return _open_features(Path(folder) / f"{key}.npy", count)


def _open_features(final: Path, count: int) -> np.ndarray | None:
    try:
        rows = np.load(final, mmap_mode="r")
    except (FileNotFoundError, ValueError):
        return None
    if rows.ndim != 2 or len(rows) != count or rows.dtype != np.float32:
        return None
    try:
        os.utime(final)  # recently used: pruning keeps it
    except OSError:
        pass
    return rows


# 2. Head.


def build_head(*, dimensions: int, num_classes: int, dropout: float) -> keras.Model:
    """Dropout and the softmax layer, as a model of its own inside the assembled one."""
    from keras import layers

    return keras.Sequential(
        [
            keras.Input(shape=(dimensions,), name="features"),
            layers.Dropout(dropout, name="head_dropout"),
            layers.Dense(num_classes, activation="softmax", name="predictions"),
        ],
        name="head",
    )


def train_head(
    features: np.ndarray,
    labels: np.ndarray,
    splits: Splits,
    options: TransferOptions,
    report: Reporter,
    *,
    num_classes: int,
) -> tuple[keras.Model, HeadFit]:
    """Fit the head on cached features by the linear probe (ml/probe.py): one converged fit, its L2
    strength chosen by cross-validation on the training images; its history is one row."""
    started = time.monotonic()
    labels = np.asarray(labels, dtype=np.int64)
    train_x, train_y = np.asarray(features[splits.train]), labels[splits.train]
    class_weight = balanced_class_weights(train_y, num_classes) if options.balance_classes else None
    probe = fit_linear_probe(train_x, train_y, num_classes=num_classes, seed=options.seed, class_weight=class_weight)
    loss, accuracy = _loss_and_accuracy(probe.kernel, probe.bias, train_x, train_y)
    row = {"epoch": 1, "accuracy": round(accuracy, 6), "loss": round(loss, 6)}
    if len(splits.validation):
        loss, accuracy = _loss_and_accuracy(
            probe.kernel, probe.bias, np.asarray(features[splits.validation]), labels[splits.validation]
        )
        row.update(val_accuracy=round(accuracy, 6), val_loss=round(loss, 6))
    row["seconds"] = round(time.monotonic() - started, 3)
    choice = {"l2_c": probe.c, "folds": probe.folds, "scores": probe.scores, "seconds": row["seconds"]}
    fitted = HeadFit(kernel=probe.kernel, bias=probe.bias, history=[row], best_epoch=1, probe=choice)
    if options.verbose:
        print(
            f"Linear probe: C {probe.c:g} chosen by {probe.folds}-fold cross-validation in {row['seconds']} s; "
            + ", ".join(f"{name} {value}" for name, value in row.items() if name != "epoch"),
            flush=True,
        )
    if report(Progress(percent=100.0, epoch=1, history=list(fitted.history))) is False:
        fitted.stopped = True
    head = build_head(dimensions=features.shape[1], num_classes=num_classes, dropout=options.dropout)
    head.get_layer("predictions").set_weights([fitted.kernel, fitted.bias])
    return head, fitted


def _loss_and_accuracy(kernel: np.ndarray, bias: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    log_p = log_softmax(np.asarray(x, dtype=np.float64) @ kernel + bias)
    loss = -np.clip(log_p[np.arange(len(y)), y], np.log(1e-7), 0).mean()  # clipped as Keras' loss is
    return float(loss), float((log_p.argmax(axis=1) == y).mean())


# 3. One model, and fine-tuning it.


def assemble_model(
    backbone: keras.Model, head: keras.Model, *, channels: int, learning_rate: float = 0.001
) -> keras.Model:
    """Backbone and head as one model taking the run's (size, size, channels) images of 0..255.

    No random layers: augmentation wraps it only while fine-tuning, so every export format carries
    exactly the layers that predict.
    """
    size = backbone.input_shape[1]
    inputs = keras.Input(shape=(size, size, channels), name="image")
    x = _to_rgb(inputs, channels)
    # training=False: batch normalisation keeps ImageNet's statistics even while fine-tuning.
    x = backbone(x, training=False)
    outputs = head(x)
    model = keras.Model(inputs, outputs, name="kerasui_pretrained")
    _compile(model, learning_rate)
    return model


def _compile(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def unfreeze_top(backbone: keras.Model, fraction: float = FINE_TUNE_FRACTION) -> int:
    """Make the top `fraction` of the backbone's layers trainable, batch normalisation excepted."""
    from keras import layers

    backbone.trainable = True
    cut = int(len(backbone.layers) * (1 - fraction))
    trained = 0
    for index, layer in enumerate(backbone.layers):
        layer.trainable = index >= cut and not isinstance(layer, layers.BatchNormalization)
        trained += bool(layer.trainable and layer.weights)
    return trained


class TimeBudget(keras.callbacks.Callback):
    """Stops training after the batch that runs past `seconds`."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.ran_out = False
        self._started = 0.0

    def on_train_begin(self, logs=None):
        self._started = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self._started >= self.seconds:
            self.ran_out = True
            self.model.stop_training = True


def fine_tune(
    model: keras.Model,
    backbone: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    splits: Splits,
    options: TransferOptions,
    report: Reporter,
    *,
    history: list[dict],
):
    """Fine-tune the top of the backbone for `fine_tune_schedule`'s steps within the time budget.

    Continues the head's history; the model ends with the best epoch's weights, which may be the
    head's own when fine-tuning did not improve on it. Returns (progress, best, budget).
    """
    from ml.feed import batches

    before = model.get_weights()
    unfreeze_top(backbone)
    trainer = model
    random_layers = augmentation_layers(options.augmentation)
    if random_layers is not None:
        # The random layers see the images only here, in front of the model they train.
        trainer = keras.Sequential([keras.Input(model.input_shape[1:]), random_layers, model], name="fine_tuning")
    _compile(trainer, options.learning_rate * FINE_TUNE_RATE_FACTOR)
    labels = np.asarray(labels, dtype=np.int32)
    batch_size = fine_tune_batch_size(options)
    train = batches(images, labels, splits.train, batch_size=batch_size, shuffle=True, seed=options.seed)
    validation = None
    if len(splits.validation):
        validation = batches(images, labels, splits.validation, batch_size=batch_size, shuffle=False, seed=0)
    start_epoch = len(history)
    epochs, steps_per_epoch, _ = fine_tune_schedule(len(splits.train), options)
    progress = ProgressCallback(report, epochs=start_epoch + epochs, steps_per_epoch=steps_per_epoch, history=history)
    best = BestEpoch(progress, monitor="val_loss" if validation is not None else "loss", patience=0, folder=None)
    budget = TimeBudget(options.fine_tune_seconds)
    class_weight = None
    if options.balance_classes:
        class_weight = balanced_class_weights(labels[splits.train], int(model.output_shape[-1]))
    trainer.fit(
        train,
        epochs=start_epoch + epochs,
        initial_epoch=start_epoch,
        validation_data=validation,
        shuffle=False,
        verbose=options.verbose,
        callbacks=[progress, budget, best],
        class_weight=class_weight,
    )
    if progress.nan_epoch is not None:
        model.set_weights(before)
        raise ValueError(f"the loss became NaN while fine-tuning (epoch {progress.nan_epoch}): lower the learning rate")
    if best.best_epoch is None or best.best_epoch <= start_epoch:
        model.set_weights(before)  # fine-tuning did not beat the head alone
    else:
        best.restore()
    # Frozen again, so the saved model says plainly that nothing trains by accident later.
    backbone.trainable = False
    _compile(model, options.learning_rate)
    return progress, best, budget


def fine_tune_batch_size(options: TransferOptions) -> int:
    """The images per fine-tuning step: the run's batch size, at most FINE_TUNE_MAX_BATCH."""
    return max(1, min(options.batch_size, FINE_TUNE_MAX_BATCH))


def fine_tune_schedule(train_count: int, options: TransferOptions) -> tuple[int, int, int]:
    """(epochs, steps per epoch, steps): the run's epochs, or more when they would be fewer than
    FINE_TUNE_MIN_STEPS optimizer steps."""
    steps_per_epoch = max(1, int(np.ceil(train_count / fine_tune_batch_size(options))))
    epochs = max(options.epochs, int(np.ceil(FINE_TUNE_MIN_STEPS / steps_per_epoch)))
    return epochs, steps_per_epoch, epochs * steps_per_epoch


def fine_tune_note(history: list[dict], *, head_epochs: int, fine_tuned: bool, ran_out: bool, seconds: float) -> str:
    """What fine-tuning did, in words, for the run page."""
    tuned = [row for row in history if row["epoch"] > head_epochs]
    head = history[head_epochs - 1] if head_epochs and len(history) >= head_epochs else {}
    monitor = "val_loss" if "val_loss" in head else "loss"
    best = min((row for row in tuned if row.get(monitor) is not None), key=lambda row: row[monitor], default=None)
    budget = f" It stopped at its time budget of {seconds:g} s after {len(tuned)} epoch(s)." if ran_out else ""
    if fine_tuned and best is not None:
        return (
            f"Fine-tuning beat the head alone: {monitor.replace('_', ' ')} {best[monitor]:.4g} at epoch "
            f"{best['epoch']} against the head's {head.get(monitor, float('nan')):.4g}.{budget}"
        )
    if best is None:
        return f"Fine-tuning did not complete an epoch: the head's weights were kept.{budget}"
    return (
        f"Fine-tuning did not beat the head alone (best {monitor.replace('_', ' ')} {best[monitor]:.4g} against "
        f"the head's {head.get(monitor, float('nan')):.4g}): the head's weights were kept.{budget}"
    )


def _metrics(history: list[dict], best_epoch: int | None, splits: Splits) -> dict:
    chosen = next((row for row in history if row["epoch"] == best_epoch), None) or (history[-1] if history else {})
    metrics = {name: value for name, value in chosen.items() if name not in {"epoch", "seconds", "learning_rate"}}
    metrics.update(
        train_count=int(len(splits.train)),
        validation_count=int(len(splits.validation)),
        test_count=int(len(splits.test)),
        epochs_completed=len(history),
        best_epoch=best_epoch,
    )
    return metrics


def train_pretrained(
    images: np.ndarray,
    labels: np.ndarray,
    splits: Splits,
    options: TransferOptions,
    *,
    make_backbone: Callable[[], keras.Model],
    channels: int,
    num_classes: int,
    feature_folder: str | os.PathLike,
    feature_key: str,
    phase: PhaseReporter,
    report: Reporter,
    known_features: tuple[np.ndarray, np.ndarray] | None = None,
) -> TransferResult:
    """The whole recipe: features (cached), head, then fine-tuning when the options give it time.

    `phase(name, percent)` is told of each phase and of the features' progress (answering False
    stops with Stopped); `report(Progress)` gets the epochs as `fit` sends them. `make_backbone` is
    called at most once, and only when needed: not for cached features of a head-only run's start.
    `known_features` = (rows, features) computed already (build_feature_cache's `known`).
    """
    if len(splits.train) == 0:
        raise ValueError("no images left to train on")
    backbone: keras.Model | None = None

    def get_backbone() -> keras.Model:
        nonlocal backbone
        if backbone is None:
            backbone = make_backbone()
            backbone.trainable = False
        return backbone

    def make_extractor():
        return feature_extractor(get_backbone(), channels=channels).predict_on_batch

    phase(FEATURES, 0.0)
    features = build_feature_cache(
        images,
        folder=feature_folder,
        key=feature_key,
        make_extractor=make_extractor,
        report=lambda done, total: phase(FEATURES, round(100.0 * done / max(1, total), 2)),
        known=known_features,
    )

    phase(HEAD, 0.0)
    head, fitted = train_head(features, labels, splits, options, report, num_classes=num_classes)
    history = list(fitted.history)
    head_epochs = len(history)
    result = TransferResult(
        probe=fitted.probe,
        model=None,
        head=head,
        features=features,
        history=history,
        metrics={},
        stopped=fitted.stopped,
        best_epoch=fitted.best_epoch,
        stopped_early=fitted.stopped_early,
        head_epochs=head_epochs,
        fine_tuned=False,
    )
    if fitted.stopped:
        return result

    tune = options.fine_tune_seconds > 0
    result.model = assemble_model(get_backbone(), head, channels=channels, learning_rate=options.learning_rate)
    if tune:
        phase(FINE_TUNE, 0.0)
        tuning, tuned_best, budget = fine_tune(
            result.model, get_backbone(), images, labels, splits, options, report, history=history
        )
        result.history = list(tuning.history)
        result.stopped = tuning.stopped
        result.fine_tuned = tuned_best.best_epoch is not None and tuned_best.best_epoch > head_epochs
        if result.fine_tuned:
            result.best_epoch = tuned_best.best_epoch
        result.fine_tune_note = fine_tune_note(
            result.history,
            head_epochs=head_epochs,
            fine_tuned=result.fine_tuned,
            ran_out=budget.ran_out,
            seconds=options.fine_tune_seconds,
        )
        print(result.fine_tune_note, flush=True)
    # Built now, so the saved file's optimizer matches the model it is loaded into (no warning then).
    result.model.optimizer.build(result.model.trainable_variables)
    result.metrics = _metrics(result.history, result.best_epoch, splits)
    result.metrics["stopped_early"] = result.stopped_early
    result.metrics["fine_tuned"] = result.fine_tuned
    result.metrics["head"] = {"method": "linear probe (L-BFGS)", **result.probe}
    if tune:
        result.metrics["fine_tune_note"] = result.fine_tune_note
    return result


def head_probabilities(head: keras.Model, features: np.ndarray, rows: np.ndarray, batch_size: int = 256):
    """The head's predictions for cached feature rows: the full model's, without a backbone pass."""
    rows = np.asarray(rows, dtype=np.int64)
    return np.asarray(head.predict(np.asarray(features[rows]), batch_size=batch_size, verbose=0), dtype=np.float64)


__all__ = [
    "FEATURES",
    "FINE_TUNE",
    "HEAD",
    "Progress",
    "Stopped",
    "TransferOptions",
    "TransferResult",
    "assemble_model",
    "build_feature_cache",
    "feature_cache_key",
    "feature_extractor",
    "head_probabilities",
    "open_feature_cache",
    "train_pretrained",
]
