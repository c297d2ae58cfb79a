"""The linear probe: an L2-regularised softmax regression fitted to convergence on frozen features.

The standard protocol on a frozen backbone (CLIP, SimCLR): logistic regression by L-BFGS, its L2
strength chosen by stratified cross-validation on the training images. Deterministic (the same
features, labels and seed give the same weights) and well under a second on a few hundred images.
The weights it returns are a Dense softmax layer's (kernel, bias) on the raw features: the
standardisation the solver works on is folded into them.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

# Inverse L2 strengths tried, on features of unit average variance (sklearn's C: larger is weaker).
C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
MAX_FOLDS = 5
MAX_ITERATIONS = 1000


@dataclass
class ProbeFit:
    """A Dense softmax layer's weights and how its L2 strength was chosen."""

    kernel: np.ndarray
    bias: np.ndarray
    c: float
    folds: int
    # Per C tried: {"c", "accuracy", "loss"} averaged over the folds (empty when nothing was compared).
    scores: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def _logistic(c: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, solver="lbfgs", max_iter=MAX_ITERATIONS, tol=1e-6, random_state=seed)


def _fit(x: np.ndarray, y: np.ndarray, num_classes: int, c: float, seed: int, sample_weight, estimator=None):
    """Fit on x (already standardised): (kernel (dimensions, num_classes), bias (num_classes,)).

    `estimator`, a LogisticRegression with warm_start, starts from its previous fit (the same fold at
    the previous strength of the grid): converged to the same tolerance, in far fewer iterations.
    """
    present = np.unique(y)
    if len(present) == 1:
        # One label only: the model can only ever answer it.
        kernel = np.zeros((x.shape[1], num_classes))
        bias = np.full(num_classes, -10.0)
        bias[present[0]] = 10.0
        return kernel, bias
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: the strongest C may stop at max_iter
        model = estimator if estimator is not None else _logistic(c, seed)
        model.set_params(C=c)
        model.fit(x, y, sample_weight=sample_weight)
    coef = model.coef_
    intercept = model.intercept_
    if len(present) == 2:
        # sklearn's binary model has one row: p(second) = sigmoid(w x + b), i.e. softmax of (0, w x + b).
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    kernel = np.zeros((x.shape[1], num_classes))
    bias = np.full(num_classes, -1e4)  # labels absent from training are never predicted
    kernel[:, present] = coef.T
    bias[present] = intercept
    return kernel, bias


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _folds(y: np.ndarray, seed: int) -> int:
    counts = np.bincount(y)
    counts = counts[counts > 0]
    return int(min(MAX_FOLDS, counts.min())) if len(counts) > 1 else 0


def fit_linear_probe(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    seed: int = 0,
    class_weight: dict[int, float] | None = None,
    c_grid: tuple[float, ...] = C_GRID,
) -> ProbeFit:
    """Fit softmax(features @ kernel + bias), L2 strength by stratified k-fold cross-validation.

    The strength with the best mean fold accuracy wins, ties going to the lower fold log loss; with
    fewer than two images of some label there are no folds and the middle of the grid is used.
    """
    from threadpoolctl import threadpool_limits

    # Small matrices: BLAS threads cost more than they save (16 times slower on a busy 2-core machine).
    with threadpool_limits(1):
        return _fit_linear_probe(
            features, labels, num_classes=num_classes, seed=seed, class_weight=class_weight, c_grid=c_grid
        )


def _fit_linear_probe(features, labels, *, num_classes: int, seed: int, class_weight, c_grid) -> ProbeFit:
    from sklearn.model_selection import StratifiedKFold

    started = time.monotonic()
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if len(x) == 0:
        raise ValueError("no images left to train on")
    # Centred and scaled by one number (the features' overall spread), not per feature: with a few
    # images, per-feature scaling blows up near-constant, noisy features into strong ones.
    mean = x.mean(axis=0)
    spread = float(np.sqrt(((x - mean) ** 2).sum(axis=1).mean())) or 1.0
    scale = np.full(x.shape[1], spread / np.sqrt(x.shape[1]))
    standard = (x - mean) / scale
    weights = None if class_weight is None else np.array([class_weight.get(int(label), 1.0) for label in y])

    folds = _folds(y, seed)
    scores = []
    chosen = c_grid[len(c_grid) // 2]
    if folds >= 2 and len(c_grid) > 1:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        parts = list(splitter.split(standard, y))
        hits = {c: [] for c in c_grid}
        losses = {c: [] for c in c_grid}
        for train_rows, test_rows in parts:
            w = None if weights is None else weights[train_rows]
            # Along the grid from the strongest L2 to the weakest, each fit starting from the previous one.
            estimator = _logistic(c_grid[0], seed).set_params(warm_start=True)
            for c in sorted(c_grid):
                kernel, bias = _fit(standard[train_rows], y[train_rows], num_classes, c, seed, w, estimator)
                log_p = log_softmax(standard[test_rows] @ kernel + bias)
                hits[c].append(float((log_p.argmax(axis=1) == y[test_rows]).mean()))
                losses[c].append(float(-np.clip(log_p[np.arange(len(test_rows)), y[test_rows]], -50, 0).mean()))
        for c in c_grid:
            accuracy, loss = round(float(np.mean(hits[c])), 6), round(float(np.mean(losses[c])), 6)
            scores.append({"c": c, "accuracy": accuracy, "loss": loss})
        best = max(scores, key=lambda row: (row["accuracy"], -row["loss"]))
        chosen = best["c"]
    kernel, bias = _fit(standard, y, num_classes, chosen, seed, weights)
    # softmax(((x - mean) / scale) @ K + b) = softmax(x @ (K / scale) + (b - (mean / scale) @ K))
    raw_kernel = kernel / scale[:, None]
    raw_bias = bias - (mean / scale) @ kernel
    return ProbeFit(
        kernel=raw_kernel.astype(np.float32),
        bias=raw_bias.astype(np.float32),
        c=chosen,
        folds=folds,
        scores=scores,
        seconds=round(time.monotonic() - started, 3),
    )
