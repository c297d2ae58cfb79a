"""Dataset health, computed: suspected label errors, duplicates, outliers and label balance.

Pure functions over arrays, file paths and plain lists (no Django). The job (health/services.py)
gives them the cached backbone features of a dataset's images and its labels, and stores the report
they build. Label errors come from out-of-fold probabilities ranked by confident learning (cleanlab).
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, ImageOps

from ml.cache import release_pages
from ml.head import fit_softmax_head
from ml.images import open_image

FOLDS = 5
# The head takes about HEAD_STEPS steps of HEAD_BATCH images per fold, in HEAD_EPOCHS_RANGE epochs: as
# good a ranking as 40 epochs of 64 on 2,000 Fashion-MNIST images (bench/health.py), in a tenth of the time.
HEAD_BATCH = 256
HEAD_STEPS = 150
HEAD_EPOCHS_RANGE = (10, 40)
HEAD_LEARNING_RATE = 0.02
# Near-duplicates: two perceptual hashes (dHash and pHash, 64 bits each) at most this many bits apart,
# and 16×16 grey thumbnails (mean and contrast removed) correlated at least this much. Measured on
# Fashion-MNIST (bench/health.py): distinct images whose hashes were that close correlated up to 0.996,
# a resized, recompressed or brightened copy 0.998 or more.
NEAR_DUPLICATE_BITS = 6
NEAR_DUPLICATE_CORRELATION = 0.997
THUMBNAIL = 16
# An image whose distance to the nearest label's centre is this many robust deviations above the
# typical one is listed as an outlier.
OUTLIER_Z = 5.0
MAX_OUTLIERS = 50
# Outlier scores are computed on blocks of about this many feature values (float64: 8 MB).
OUTLIER_CHUNK_VALUES = 1 << 20
# Fewer images than this in a label and a validation split leaves it almost nothing to check on.
FEW_IMAGES = 20
IMBALANCE_RATIO = 3.0

# fit_predict(train_rows, held_out_rows) -> probabilities (len(held_out_rows), num_classes)
FitPredict = Callable[[np.ndarray, np.ndarray], np.ndarray]
Report = Callable[[float], object]


# 1. Suspected label errors.


def fold_count(labels: np.ndarray, folds: int = FOLDS) -> int:
    """K for stratified K-fold: fewer folds when the smallest label has fewer images, never below 2."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    smallest = int(counts[counts > 0].min()) if counts.any() else 0
    return max(2, min(folds, smallest, len(labels)))


def head_fit_predict(features: np.ndarray, labels: np.ndarray, *, num_classes: int, seed: int = 0) -> FitPredict:
    """The NumPy softmax head (ml/head.py) on standardised features, as a fold's classifier."""
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)

    def fit_predict(train_rows: np.ndarray, held_out_rows: np.ndarray) -> np.ndarray:
        from threadpoolctl import threadpool_limits

        # Matrices this small gain nothing from BLAS threads, and lose much to them on a busy machine
        # (six times slower on two shared cores).
        with threadpool_limits(limits=1, user_api="blas"):
            return _fit_predict(train_rows, held_out_rows)

    def _fit_predict(train_rows: np.ndarray, held_out_rows: np.ndarray) -> np.ndarray:
        # The fold's one copy of its features, centred and scaled in place: at 48,000 × 1,280 it is
        # 0.25 GB, and each whole-array expression would make another.
        train_x = np.take(features, train_rows, axis=0)
        held_out_x = np.take(features, held_out_rows, axis=0)
        # Copied: a memory-mapped feature file need not stay resident while the head trains.
        release_pages(features)
        # Centred and scaled as a whole (not per dimension): with fewer images than dimensions,
        # per-dimension scaling blows up noise and the head grows overconfident.
        mean = train_x.mean(axis=0)
        train_x -= mean
        norms = np.concatenate(
            [np.linalg.norm(train_x[start : start + 4096], axis=1) for start in range(0, len(train_x), 4096)]
        )
        scale = float(norms.mean()) + 1e-6
        train_x /= scale
        steps_per_epoch = math.ceil(len(train_rows) / HEAD_BATCH)
        epochs = min(HEAD_EPOCHS_RANGE[1], max(HEAD_EPOCHS_RANGE[0], math.ceil(HEAD_STEPS / steps_per_epoch)))
        fitted = fit_softmax_head(
            train_x,
            labels[train_rows],
            num_classes=num_classes,
            epochs=epochs,
            batch_size=HEAD_BATCH,
            learning_rate=HEAD_LEARNING_RATE,
            dropout=0.2,
            seed=seed,
        )
        held_out_x -= mean
        held_out_x /= scale
        logits = held_out_x @ fitted.kernel + fitted.bias
        return softmax(logits)

    return fit_predict


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.asarray(logits, dtype=np.float64) - np.max(logits, axis=1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def out_of_fold_probabilities(
    labels: np.ndarray,
    *,
    num_classes: int,
    fit_predict: FitPredict,
    folds: int = FOLDS,
    seed: int = 0,
    report: Report | None = None,
) -> np.ndarray:
    """Each image's predicted probabilities from a classifier that never saw it (stratified K-fold).

    `report(fraction)` is called after each fold; answering False stops with Stopped.
    """
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) < 2:
        raise ValueError("at least two images are needed to check labels")
    splits = fold_count(labels, folds)
    probabilities = np.zeros((len(labels), num_classes), dtype=np.float64)
    with warnings.catch_warnings():
        # A label with fewer images than folds: scikit-learn warns, and those images are spread as it can.
        warnings.simplefilter("ignore", UserWarning)
        folder = StratifiedKFold(n_splits=splits, shuffle=True, random_state=seed)
        parts = list(folder.split(np.zeros(len(labels)), labels))
    for number, (train_rows, held_out_rows) in enumerate(parts, start=1):
        probabilities[held_out_rows] = fit_predict(train_rows, held_out_rows)
        if report is not None and report(number / len(parts)) is False:
            raise Stopped
    return probabilities


class Stopped(Exception):
    """The caller's reporter answered False: the check was cancelled."""


@dataclass(frozen=True)
class LabelIssue:
    """An image whose given label the out-of-fold classifier doubts."""

    row: int
    given: int
    suggested: int
    confidence: float  # the out-of-fold probability of the suggested label
    quality: float  # the label-quality score (self-confidence: the probability of the given label)


def label_quality(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Every image's label-quality score in 0..1 (cleanlab's self-confidence): low means doubtful."""
    from cleanlab.rank import get_label_quality_scores

    return np.asarray(
        get_label_quality_scores(np.asarray(labels, dtype=np.int64), probabilities, method="self_confidence")
    )


def find_label_issues(labels: np.ndarray, probabilities: np.ndarray) -> list[LabelIssue]:
    """Confident learning's label issues (cleanlab), most doubtful first."""
    from cleanlab.filter import find_label_issues as cleanlab_find

    labels = np.asarray(labels, dtype=np.int64)
    present = np.unique(labels)
    if len(present) < 2:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = cleanlab_find(labels, probabilities, return_indices_ranked_by="self_confidence")
    quality = label_quality(labels, probabilities)
    issues = []
    for row in np.asarray(rows, dtype=np.int64):
        ranked = np.argsort(-probabilities[row])
        suggested = int(ranked[0]) if ranked[0] != labels[row] else int(ranked[1])
        issues.append(
            LabelIssue(
                row=int(row),
                given=int(labels[row]),
                suggested=suggested,
                confidence=round(float(probabilities[row, suggested]), 4),
                quality=round(float(quality[row]), 4),
            )
        )
    return issues


def ranked_by_quality(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Every row, the most doubtful label first."""
    return np.argsort(label_quality(labels, probabilities), kind="stable")


# 2. Duplicates.


@dataclass(frozen=True)
class ImageHashes:
    """What two copies of an image share: the file's bytes, the decoded pixels, two perceptual hashes."""

    file: str
    pixels: str
    dhash: int
    phash: int
    thumbnail: np.ndarray = field(compare=False, repr=False, default=None)  # unit vector, THUMBNAIL² values


def _dct_matrix(size: int) -> np.ndarray:
    k = np.arange(size)[:, None]
    n = np.arange(size)[None, :]
    matrix = np.cos(np.pi * (2 * n + 1) * k / (2 * size)) * math.sqrt(2 / size)
    matrix[0] /= math.sqrt(2)
    return matrix


_DCT32 = _dct_matrix(32)


def _bits(values: np.ndarray) -> int:
    return int("".join("1" if value else "0" for value in values.ravel()), 2)


def image_hashes(path: str | os.PathLike, *, max_pixels: int | None = None) -> ImageHashes:
    """The hashes of one image file (EXIF orientation applied). Raises ValueError when it cannot be read."""
    with open(path, "rb") as file:
        data = file.read()
    try:
        with open_image(data, max_pixels) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except (OSError, Image.DecompressionBombError, SyntaxError) as error:
        raise ValueError(f"cannot be decoded: {error}") from None
    pixels = hashlib.sha256(f"{image.size}".encode() + image.tobytes()).hexdigest()
    grey = image.convert("L")
    small = np.asarray(grey.resize((9, 8), Image.Resampling.LANCZOS), dtype=np.float32)
    dhash = _bits(small[:, 1:] > small[:, :-1])
    square = np.asarray(grey.resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_DCT32 @ square @ _DCT32.T)[:8, :8].ravel()
    phash = _bits(low > np.median(low[1:]))
    thumbnail = np.asarray(grey.resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BILINEAR), dtype=np.float32).ravel()
    thumbnail -= thumbnail.mean()
    thumbnail /= float(np.linalg.norm(thumbnail)) + 1e-6
    return ImageHashes(
        file=hashlib.sha256(data).hexdigest(), pixels=pixels, dhash=dhash, phash=phash, thumbnail=thumbnail
    )


def _groups(pairs: Sequence[tuple[int, int]], count: int) -> list[list[int]]:
    parent = list(range(count))

    def root(row: int) -> int:
        while parent[row] != row:
            parent[row] = parent[parent[row]]
            row = parent[row]
        return row

    for first, second in pairs:
        a, b = root(first), root(second)
        if a != b:
            parent[max(a, b)] = min(a, b)
    members: dict[int, list[int]] = {}
    for row in range(count):
        members.setdefault(root(row), []).append(row)
    return sorted((rows for rows in members.values() if len(rows) > 1), key=lambda rows: rows[0])


def _popcount(values: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    as_bytes = values.view(np.uint8).reshape(*values.shape, 8)
    return np.unpackbits(as_bytes, axis=-1).sum(axis=-1)


def near_pairs(hashes: np.ndarray, *, max_bits: int, chunk: int = 2048) -> list[tuple[int, int]]:
    """Pairs of rows whose every hash column (uint64) differs in at most `max_bits` bits, (first, second)
    with first < second, in order.

    Compared a square of chunk × chunk rows at a time above the diagonal, the second column only where
    the first is close enough: memory stays the same at any number of rows (a strip of chunk × all rows
    took 0.5 GB at 60,000) and the time is half that of every ordered pair.
    """
    hashes = np.asarray(hashes, dtype=np.uint64).reshape(len(hashes), -1)
    pairs = []
    for start in range(0, len(hashes), chunk):
        block = hashes[start : start + chunk]
        for other_start in range(start, len(hashes), chunk):
            against = hashes[other_start : other_start + chunk]
            rows, others = np.nonzero(_popcount(block[:, 0, None] ^ against[None, :, 0]) <= max_bits)
            for column in range(1, hashes.shape[1]):
                keep = _popcount(block[rows, column] ^ against[others, column]) <= max_bits
                rows, others = rows[keep], others[keep]
            rows, others = rows + start, others + other_start
            keep = others > rows
            pairs += zip(rows[keep].tolist(), others[keep].tolist(), strict=True)
    pairs.sort()
    return pairs


def duplicate_groups(
    hashes: Sequence[ImageHashes],
    *,
    max_bits: int = NEAR_DUPLICATE_BITS,
    min_correlation: float = NEAR_DUPLICATE_CORRELATION,
) -> list[dict]:
    """Groups of rows that are copies: {"rows": [...], "exact": bool} (exact: same bytes or same pixels)."""
    exact_pairs = []
    for attribute in ("file", "pixels"):
        first_of: dict[str, int] = {}
        for row, hashed in enumerate(hashes):
            value = getattr(hashed, attribute)
            if value in first_of:
                exact_pairs.append((first_of[value], row))
            else:
                first_of[value] = row
    exact = _groups(exact_pairs, len(hashes))
    perceptual = np.array([[hashed.dhash, hashed.phash] for hashed in hashes], dtype=np.uint64).reshape(-1, 2)
    close = [
        (first, second)
        for first, second in near_pairs(perceptual, max_bits=max_bits)
        if hashes[first].thumbnail is None
        or float(hashes[first].thumbnail @ hashes[second].thumbnail) >= min_correlation
    ]
    near = _groups(exact_pairs + close, len(hashes))
    exact_sets = [set(rows) for rows in exact]
    return [{"rows": rows, "exact": any(set(rows) <= group for group in exact_sets)} for rows in near]


def leaking_groups(groups: list[dict], *, item_ids: Sequence[int], splits: dict[str, list[int]]) -> list[dict]:
    """The duplicate groups with images in a run's training split and in a held-out one (validation, test)."""
    split_of = {int(item_id): name for name, ids in (splits or {}).items() for item_id in ids}
    leaks = []
    for group in groups:
        names = {split_of.get(int(item_ids[row])) for row in group["rows"]} - {None}
        if "train" in names and names & {"validation", "test"}:
            leaks.append({**group, "splits": sorted(names)})
    return leaks


# 3. Outliers.


def outlier_scores(
    features: np.ndarray, labels: np.ndarray, *, num_classes: int, chunk: int | None = None
) -> np.ndarray:
    """How far each image lies from every label's centre, in robust deviations above the typical distance.

    Features are standardised per dimension, each label's centre is the mean of its images, and each
    image's distance is to the nearest centre. Computed `chunk` rows at a time in float64 (by default
    8 MB of them), so that a memory-mapped feature file is never copied whole (at 60,000 × 1,280
    features, a float64 copy is 0.6 GB and the whole-array formula made three).
    """
    features = np.asarray(features)
    labels = np.asarray(labels, dtype=np.int64)
    count, dimensions = features.shape
    chunk = chunk or max(1, OUTLIER_CHUNK_VALUES // max(1, dimensions))

    def blocks():
        for start in range(0, count, chunk):
            yield start, np.asarray(features[start : start + chunk], dtype=np.float64)
        release_pages(features)

    total = np.zeros(dimensions)
    for _, block in blocks():
        total += block.sum(axis=0)
    mean = total / count
    squares = np.zeros(dimensions)
    for _, block in blocks():
        squares += ((block - mean) ** 2).sum(axis=0)
    scale = np.sqrt(squares / count) + 1e-6
    sums = np.zeros((num_classes, dimensions))
    for start, block in blocks():
        members = labels[start : start + chunk]
        one_hot = (members[None, :] == np.arange(num_classes)[:, None]).astype(np.float64)
        sums += one_hot @ ((block - mean) / scale)
    sizes = np.bincount(labels, minlength=num_classes)[:num_classes]
    present = sizes > 0
    centres = np.where(present[:, None], sums / np.maximum(sizes, 1)[:, None], 0.0)
    # A label without images has no centre: its distance is infinite, never the nearest.
    centre_squares = np.where(present, (centres**2).sum(axis=1), np.inf)
    nearest = np.empty(count)
    for start, block in blocks():
        standardized = (block - mean) / scale
        squared = (standardized**2).sum(axis=1)[:, None] - 2 * standardized @ centres.T + centre_squares[None, :]
        nearest[start : start + len(block)] = np.sqrt(np.maximum(squared.min(axis=1), 0))
    median = np.median(nearest)
    deviation = np.median(np.abs(nearest - median)) * 1.4826 + 1e-9
    return (nearest - median) / deviation


def find_outliers(scores: np.ndarray, *, threshold: float = OUTLIER_Z, limit: int = MAX_OUTLIERS) -> list[int]:
    """Rows of the images above `threshold`, farthest first."""
    order = np.argsort(-scores, kind="stable")
    return [int(row) for row in order[:limit] if scores[row] > threshold]


# 4. Label balance.


def label_balance(counts: dict[str, int], *, validation_split: float = 0.2, folds: int = FOLDS) -> dict:
    """The counts, the smallest labels, the imbalance ratio and what they mean for training, in words."""
    ordered = sorted(counts.items(), key=lambda pair: (pair[1], pair[0]))
    notes = []
    if len(counts) < 2:
        notes.append("a classifier needs images of at least two labels: add another label")
    for label, count in ordered:
        held_out = math.floor(count * validation_split)
        if count < folds:
            notes.append(
                f"label '{label}' has {count} image{'s' if count != 1 else ''}: too few to hold out one per fold "
                f"of the health check ({folds} folds) or to be checked reliably; add at least {FEW_IMAGES - count}"
            )
        elif count < FEW_IMAGES:
            notes.append(
                f"label '{label}' has {count} images: a validation split of {validation_split:g} holds out "
                f"{held_out} of them, too few to tell how well the model knows it; add at least {FEW_IMAGES - count}"
            )
    ratio = None
    if ordered and ordered[0][1] > 0:
        ratio = round(ordered[-1][1] / ordered[0][1], 2)
        if ratio >= IMBALANCE_RATIO:
            notes.append(
                f"label '{ordered[-1][0]}' has {ratio:g}× the images of '{ordered[0][0]}': the model will favour "
                "the larger labels; add images to the smaller ones or turn on the 'balance classes' option"
            )
    return {
        "counts": dict(sorted(counts.items())),
        "smallest": [{"label": label, "count": count} for label, count in ordered[:3]],
        "imbalance_ratio": ratio,
        "notes": notes,
    }


# The report.


def label_report(issues: list[LabelIssue], *, item_ids: Sequence[int], label_names: Sequence[str]) -> list[dict]:
    return [
        {
            **asdict(issue),
            "item": int(item_ids[issue.row]),
            "given": label_names[issue.given],
            "suggested": label_names[issue.suggested],
        }
        for issue in issues
    ]
