"""Choosing between candidate models by repeated stratified cross-validation, for small datasets.

With a few images per label one validation split of 4 or 20 images decides by noise; the repeated
folds of the training and validation images, scored the same way for every candidate, do not. The
folds start with the run's own split (fold 0, on which the kept models were trained), then
RepeatedStratifiedKFold; candidates are compared on the folds they were all scored on (paired, the
same images). Deterministic: the same labels, rows and seed give the same folds and the same choice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ml.probe import C_GRID, fit_linear_probe, log_softmax

# A dataset is small when some label has fewer than this many training and validation images.
SMALL_PER_LABEL = 50
MAX_FOLDS = 5
REPEATS = 2

Fold = tuple[np.ndarray, np.ndarray]


def is_small(labels: np.ndarray, rows: np.ndarray, *, per_label: int = SMALL_PER_LABEL) -> bool:
    """Whether some label present in `rows` has fewer than `per_label` images there."""
    counts = np.bincount(np.asarray(labels)[np.asarray(rows, dtype=np.int64)])
    counts = counts[counts > 0]
    return bool(len(counts)) and int(counts.min()) < per_label


def repeated_folds(
    labels: np.ndarray, *, train: np.ndarray, validation: np.ndarray, seed: int, repeats: int = REPEATS
) -> list[Fold]:
    """(training rows, scored rows) per fold: the run's own split first, then `repeats` times a
    stratified k-fold of train ∪ validation (k = the smallest label's count, at most MAX_FOLDS).

    Only the run's own split when some label has a single image there (no stratified fold exists).
    """
    labels = np.asarray(labels)
    # The run's own split in its own order: the head fitted on it is the same fit as fold 0's.
    train = np.asarray(train, dtype=np.int64)
    validation = np.asarray(validation, dtype=np.int64)
    folds: list[Fold] = [(train, validation)] if len(validation) else []
    pool = np.sort(np.concatenate([train, validation]))
    counts = np.bincount(labels[pool])
    counts = counts[counts > 0]
    k = int(min(MAX_FOLDS, counts.min())) if len(counts) > 1 else 0
    if k < 2:
        return folds
    from sklearn.model_selection import RepeatedStratifiedKFold

    splitter = RepeatedStratifiedKFold(n_splits=k, n_repeats=repeats, random_state=seed)
    for train_part, test_part in splitter.split(pool, labels[pool]):
        folds.append((pool[train_part], pool[test_part]))
    return folds


@dataclass
class CandidateScore:
    """One candidate's accuracy on each fold (None where it was not scored) and what scoring cost."""

    name: str
    accuracies: list[float | None]
    losses: list[float | None] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def scored(self) -> list[int]:
        return [index for index, value in enumerate(self.accuracies) if value is not None]

    def mean(self, folds: list[int] | None = None) -> float:
        chosen = self.scored if folds is None else folds
        return float(np.mean([self.accuracies[index] for index in chosen])) if chosen else float("nan")

    def mean_loss(self, folds: list[int]) -> float:
        values = [self.losses[index] for index in folds if index < len(self.losses) and self.losses[index] is not None]
        return float(np.mean(values)) if values else float("inf")

    def spread(self) -> float:
        values = [self.accuracies[index] for index in self.scored]
        return float(np.std(values)) if len(values) > 1 else 0.0

    def as_dict(self) -> dict:
        return {
            "mean": round(self.mean(), 4),
            "spread": round(self.spread(), 4),
            "folds": len(self.scored),
            "seconds": round(self.seconds, 2),
        }


def probe_fold_scores(
    features: np.ndarray,
    labels: np.ndarray,
    folds: list[Fold],
    *,
    num_classes: int,
    seed: int,
    name: str = "linear probe",
    class_weight: dict[int, float] | None = None,
    c: float | None = None,
    c_grid: tuple[float, ...] = C_GRID,
) -> CandidateScore:
    """The linear probe fitted on each fold's training rows and scored on its held-out rows.

    With `c`, every fold uses that L2 strength (the one the run's own probe chose on its training
    images): one fit a fold. Without, each fold chooses its own among `c_grid` by an inner
    cross-validation (nested: unbiased, but a fit per strength and inner fold, 40 times the cost).
    """
    started = time.monotonic()
    labels = np.asarray(labels, dtype=np.int64)
    accuracies, losses = [], []
    for train_rows, test_rows in folds:
        x = np.asarray(features[train_rows])
        probe = fit_linear_probe(
            x,
            labels[train_rows],
            num_classes=num_classes,
            seed=seed,
            class_weight=class_weight,
            c_grid=(c,) if c is not None else c_grid,
        )
        log_p = log_softmax(np.asarray(features[test_rows], dtype=np.float64) @ probe.kernel + probe.bias)
        true = labels[test_rows]
        accuracies.append(round(float((log_p.argmax(axis=1) == true).mean()), 6))
        losses.append(round(float(-np.clip(log_p[np.arange(len(true)), true], np.log(1e-7), 0).mean()), 6))
    return CandidateScore(name=name, accuracies=accuracies, losses=losses, seconds=time.monotonic() - started)


def choose(scores: list[CandidateScore]) -> tuple[int, str]:
    """The index of the best candidate and why, comparing candidates on the folds all were scored on.

    Highest mean accuracy on those folds wins; ties go to the lower mean loss there, then to the
    earlier (cheaper) candidate. A candidate scored on no fold cannot win unless none was scored.
    """
    if not scores:
        raise ValueError("there are no candidates to choose from")
    scored = [index for index, score in enumerate(scores) if score.scored]
    if not scored:
        return 0, "no candidate could be scored: the first one tried was kept"
    common = sorted(set.intersection(*(set(scores[index].scored) for index in scored)))
    if not common:
        # Disjoint folds: each candidate's own mean (no pairing possible).
        order = sorted(scored, key=lambda index: (-scores[index].mean(), index))
        winner = order[0]
        return winner, f"best mean accuracy ({scores[winner].mean():.1%}), the candidates sharing no fold"
    order = sorted(scored, key=lambda index: (-scores[index].mean(common), scores[index].mean_loss(common), index))
    winner, others = order[0], order[1:]
    where = f"on the {len(common)} fold(s) every candidate was scored on" if len(scored) > 1 else ""
    best = scores[winner].mean(common)
    if not others:
        return winner, f"the only candidate scored: mean accuracy {best:.1%} over {len(common)} fold(s)"
    runner_up = others[0]
    second = scores[runner_up].mean(common)
    if second < best:
        reason = f"best mean accuracy {where}: {best:.1%} against {scores[runner_up].name}'s {second:.1%}"
    elif scores[runner_up].mean_loss(common) > scores[winner].mean_loss(common):
        reason = (
            f"as accurate as {scores[runner_up].name} {where} ({best:.1%}), with a lower mean loss "
            f"({scores[winner].mean_loss(common):.3g} against {scores[runner_up].mean_loss(common):.3g})"
        )
    else:
        reason = f"as good as {scores[runner_up].name} {where} ({best:.1%}), and tried first (cheaper)"
    return winner, reason
