"""Train a softmax classifier (dropout, then one dense layer) on cached features, in numpy.

This is the Keras head's training (Glorot-uniform start, inverted dropout, sparse categorical
cross-entropy, Adam with Keras' defaults) without Keras' per-epoch machinery, which costs a tenth
of a second an epoch on a CPU, longer than the arithmetic itself. The weights it returns go into
the head's Dense layer, and the history rows are those `fit` writes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ml.fit import Progress

ADAM_BETA_1 = 0.9
ADAM_BETA_2 = 0.999
ADAM_EPSILON = 1e-7
REPORT_INTERVAL = 1.0


@dataclass
class HeadFit:
    """The best epoch's weights (kernel, bias) and what happened on the way."""

    kernel: np.ndarray
    bias: np.ndarray
    history: list[dict] = field(default_factory=list)
    stopped: bool = False
    best_epoch: int | None = None
    stopped_early: bool = False
    # How a linear probe (ml/probe.py) chose its L2 strength, when it fitted these weights.
    probe: dict = field(default_factory=dict)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _loss_and_accuracy(kernel, bias, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    log_p = _log_softmax(x @ kernel + bias)
    loss = -log_p[np.arange(len(y)), y].mean()
    return float(loss), float((log_p.argmax(axis=1) == y).mean())


class _Adam:
    def __init__(self, learning_rate: float, shapes):
        self.learning_rate = learning_rate
        self.step = 0
        self.m = [np.zeros(shape, np.float32) for shape in shapes]
        self.v = [np.zeros(shape, np.float32) for shape in shapes]

    def apply(self, variables, gradients) -> None:
        self.step += 1
        alpha = self.learning_rate * math.sqrt(1 - ADAM_BETA_2**self.step) / (1 - ADAM_BETA_1**self.step)
        for variable, gradient, m, v in zip(variables, gradients, self.m, self.v, strict=True):
            m += (gradient - m) * (1 - ADAM_BETA_1)
            v += (gradient * gradient - v) * (1 - ADAM_BETA_2)
            variable -= alpha * m / (np.sqrt(v) + ADAM_EPSILON)


def fit_softmax_head(
    train_x: np.ndarray,
    train_y: np.ndarray,
    *,
    num_classes: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    dropout: float = 0.2,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    class_weight: dict[int, float] | None = None,
    patience: int = 0,
    seed: int = 0,
    report: Callable[[Progress], bool] | None = None,
) -> HeadFit:
    """Fit softmax(dropout(x) @ kernel + bias) with Adam; keep the epoch of lowest validation loss
    (training loss without validation), stop after `patience` epochs without progress (0: never).

    `report` gets a Progress about once a second and after the last epoch; answering False stops
    after the current epoch. Raises ValueError when the loss stops being a number.
    """
    generator = np.random.default_rng(seed)
    train_x = np.asarray(train_x, dtype=np.float32)
    train_y = np.asarray(train_y, dtype=np.int64)
    dimensions = train_x.shape[1]
    limit = math.sqrt(6 / (dimensions + num_classes))  # Keras' Glorot uniform
    kernel = generator.uniform(-limit, limit, (dimensions, num_classes)).astype(np.float32)
    bias = np.zeros(num_classes, np.float32)
    adam = _Adam(learning_rate, [kernel.shape, bias.shape])
    sample_weight = np.ones(len(train_y), np.float32)
    if class_weight is not None:
        sample_weight = np.array([class_weight.get(int(label), 1.0) for label in train_y], np.float32)
    keep = 1.0 - dropout

    fitted = HeadFit(kernel=kernel.copy(), bias=bias.copy())
    best_value: float | None = None
    last_report = time.monotonic()
    for epoch in range(1, epochs + 1):
        started = time.monotonic()
        order = generator.permutation(len(train_y))
        loss_sum = 0.0
        hits = 0
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            x, y, w = train_x[rows], train_y[rows], sample_weight[rows]
            if dropout > 0:
                x = x * (generator.random(x.shape, dtype=np.float32) < keep) / keep
            log_p = _log_softmax(x @ kernel + bias)
            probabilities = np.exp(log_p)
            losses = -log_p[np.arange(len(y)), y]
            loss = float((losses * w).mean())
            if not math.isfinite(loss):
                raise ValueError(f"the loss became NaN in epoch {epoch}: lower the learning rate")
            loss_sum += loss * len(y)
            hits += int((log_p.argmax(axis=1) == y).sum())
            # d(mean weighted cross-entropy)/d(logits) = w * (p - onehot) / n
            delta = probabilities
            delta[np.arange(len(y)), y] -= 1
            delta *= (w / len(y))[:, None]
            adam.apply([kernel, bias], [x.T @ delta, delta.sum(axis=0)])
        row = {"epoch": epoch, "accuracy": round(hits / len(train_y), 6), "loss": round(loss_sum / len(train_y), 6)}
        if validation is not None:
            val_loss, val_accuracy = _loss_and_accuracy(kernel, bias, *validation)
            row.update(val_accuracy=round(val_accuracy, 6), val_loss=round(val_loss, 6))
        row["learning_rate"] = float(f"{learning_rate:.6g}")
        row["seconds"] = round(time.monotonic() - started, 3)
        fitted.history.append(row)

        monitored = row["val_loss" if validation is not None else "loss"]
        if best_value is None or monitored < best_value:
            best_value, fitted.best_epoch = monitored, epoch
            fitted.kernel, fitted.bias = kernel.copy(), bias.copy()
        if report is not None and (time.monotonic() - last_report >= REPORT_INTERVAL or epoch == epochs):
            last_report = time.monotonic()
            if report(Progress(percent=100.0 * epoch / epochs, epoch=epoch, history=list(fitted.history))) is False:
                fitted.stopped = True
                break
        if patience and epoch - fitted.best_epoch >= patience:
            fitted.stopped_early = True
            break
    if report is not None and fitted.stopped_early:
        report(Progress(percent=100.0, epoch=len(fitted.history), history=list(fitted.history)))
    return fitted
