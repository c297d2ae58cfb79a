"""What a health check's process does: hash, decode and featurise the images, then build the report.

The health job kind's entry (health_job_execute), run in the job's own process (`manage.py job health
ID`, never in a web request: it imports Keras and cleanlab). Features come from the pretrained
EfficientNet-Lite0 backbone at a small size, cached per images × backbone × size beside the training
caches; when the configured backbone has no weights here (or none is configured), the dataset's own
model code is trained per fold at the dataset's image size, and the report says so. Status changes go
through the job lifecycle; progress is written at most about once a second.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from django.conf import settings

from datasets.models import DataSetItem
from datasets.services import dataset_labels
from health import services as health
from health.models import HealthCheck, HealthDismissal
from jobs import lifecycle
from ml import health as ml_health
from ml.backbones import WeightsUnavailable
from ml.cache import ImageDecodeError, build_image_cache, cache_key, prune_image_cache
from ml.images import channels_for
from training import pretrained
from training.trainer import local_paths

log = logging.getLogger(__name__)

BACKBONE = "efficientnet_lite0"
# Each phase's share of the progress bar, in order.
PHASES = {"hashing": 0.15, "decoding": 0.15, "features": 0.3, "labels": 0.3, "report": 0.1}
# The fallback trains a whole model per fold: fewer folds and epochs keep it within minutes.
FALLBACK_EPOCHS = 5
FALLBACK_FOLDS = 3


class Cancelled(Exception):
    """The check was cancelled while it ran."""


class Progress:
    """Writes the check's phase and overall progress, at most once a second (and at each new phase)."""

    def __init__(self, check_id: int):
        self.check_id = check_id
        self.phase = ""
        self.last = 0.0

    def __call__(self, phase: str, fraction: float = 0.0) -> bool:
        start = sum(share for name, share in PHASES.items() if list(PHASES).index(name) < list(PHASES).index(phase))
        overall = start + PHASES[phase] * min(1.0, max(0.0, fraction))
        if phase == self.phase and time.monotonic() - self.last < 1.0 and fraction < 1.0:
            return True
        self.phase, self.last = phase, time.monotonic()
        if not lifecycle.job_progress(kind=HealthCheck.KIND, job_id=self.check_id, phase=phase, progress=overall):
            raise Cancelled
        return True


def _hashes(items: list[DataSetItem], paths: list[str], progress: Progress):
    """Each image's hashes, the rows of the readable ones, and why the others cannot be read."""
    hashes, readable, unreadable = [], [], []
    for number, (item, path) in enumerate(zip(items, paths, strict=True)):
        try:
            hashes.append(ml_health.image_hashes(path, max_pixels=settings.KERASUI_MAX_IMAGE_PIXELS))
            readable.append(number)
        except (OSError, ValueError) as error:
            unreadable.append({"item": item.pk, "label": item.label, "reason": str(error)})
        progress("hashing", (number + 1) / len(items))
    return hashes, readable, unreadable


def _images(items: list[DataSetItem], paths: list[str], *, image_size: int, color_mode: str, progress: Progress):
    folder = Path(settings.KERASUI_CACHE_DIR)
    key = cache_key([(item.pk, item.image.name) for item in items], image_size=image_size, color_mode=color_mode)
    images = build_image_cache(
        paths,
        folder=folder,
        key=key,
        image_size=image_size,
        color_mode=color_mode,
        workers=settings.KERASUI_PREPROCESS_WORKERS,
        report=lambda done, total: progress("decoding", done / max(1, total)),
        max_pixels=settings.KERASUI_MAX_IMAGE_PIXELS,
    )
    prune_image_cache(folder, max_bytes=settings.KERASUI_CACHE_MAX_BYTES, keep={key})
    return images, key


def _backbone():
    """The configured backbone if its weights are here: (name, backbone, ""), or (None, None, why not)."""
    name = settings.KERASUI_HEALTH_BACKBONE
    if not name:
        return None, None, "no pretrained backbone is configured (KERASUI_HEALTH_BACKBONE)"
    try:
        return name, pretrained.backbone_ready(name=name), ""
    except (WeightsUnavailable, ValueError) as error:
        log.warning("health check without a backbone: %s", error)
        return None, None, f"the configured backbone {name} has no weights here ({error})"


def _features(images, image_key: str, *, name: str, backbone, image_size: int, color_mode: str, progress: Progress):
    """The backbone's features of `images`, cached per images × backbone × size."""
    from ml import transfer

    folder = Path(settings.KERASUI_CACHE_DIR) / "features"
    key = transfer.feature_cache_key(image_key, backbone=name, weights_id=backbone.weights_id, image_size=image_size)

    def make_extractor():
        model = pretrained.backbone_build(name=name, image_size=image_size)
        return transfer.feature_extractor(model, channels=channels_for(color_mode)).predict_on_batch

    features = transfer.build_feature_cache(
        images,
        folder=folder,
        key=key,
        make_extractor=make_extractor,
        report=lambda done, total: progress("features", done / max(1, total)),
    )
    prune_image_cache(folder, max_bytes=settings.KERASUI_CACHE_MAX_BYTES, keep={key})
    return np.asarray(features)


def _model_code_fit_predict(check: HealthCheck, images, labels, *, num_classes: int):
    """The fallback classifier: the dataset's own model built from its code and trained on each fold."""
    from ml.models import Augmentation, ModelSpec, build_model

    dataset = check.dataset
    spec = ModelSpec(
        code=dataset.process,
        image_size=dataset.image_size,
        channels=channels_for(dataset.color_mode),
        num_classes=num_classes,
        learning_rate=dataset.learning_rate,
        augmentation=Augmentation(),
    )

    def fit_predict(train_rows, held_out_rows):
        model = build_model(spec)
        model.fit(
            np.asarray(images[np.sort(train_rows)]),
            labels[np.sort(train_rows)],
            epochs=min(dataset.epochs, FALLBACK_EPOCHS),
            batch_size=dataset.batch_size,
            verbose=0,
        )
        return np.asarray(model.predict(np.asarray(images[held_out_rows]), verbose=0), dtype=np.float64)

    return fit_predict


def _pixel_features(images) -> np.ndarray:
    """Without a backbone, outliers are measured on the images themselves, pooled to 8×8."""
    images = np.asarray(images, dtype=np.float32)
    size = images.shape[1]
    step = max(1, size // 8)
    pooled = images[:, : step * 8, : step * 8].reshape(len(images), 8, step, 8, step, -1).mean(axis=(2, 4))
    return pooled.reshape(len(images), -1)


def health_check_compute(*, check: HealthCheck, progress: Progress) -> dict:
    """The report of a claimed check (see ml/health.py for what each part means)."""
    started = time.monotonic()
    dataset = check.dataset
    label_names = dataset_labels(dataset=dataset)
    dismissed = health.health_dismissed(dataset=dataset)
    # Unlabelled images have no label to check and no class to balance: only the labelled ones are checked.
    items = list(DataSetItem.objects.filter(dataset=dataset).exclude(label="").order_by("id"))
    unlabelled = DataSetItem.objects.filter(dataset=dataset, label="").count()
    with tempfile.TemporaryDirectory() as copies:
        paths = local_paths(items, Path(copies))
        progress("hashing")
        hashes, readable, unreadable = _hashes(items, paths, progress)
        items, paths = [items[row] for row in readable], [paths[row] for row in readable]
        if not items:
            raise ValueError("no image of the dataset can be read")
        # Decided before decoding: the fallback builds the dataset's model code, which takes its own size.
        backbone_name, backbone, fallback = _backbone()
        image_size = settings.KERASUI_HEALTH_IMAGE_SIZE if backbone is not None else dataset.image_size
        color_mode = dataset.color_mode
        progress("decoding")
        try:
            images, image_key = _images(items, paths, image_size=image_size, color_mode=color_mode, progress=progress)
        except ImageDecodeError as error:
            raise ValueError(f"item {items[error.index].pk} cannot be read: {error.reason}") from None
    seconds = {"hashing_and_decoding": round(time.monotonic() - started, 2)}

    item_ids = [item.pk for item in items]
    index_of = {label: index for index, label in enumerate(label_names)}
    labels = np.array([index_of[item.label] for item in items], dtype=np.int64)
    num_classes = len(label_names)

    mark = time.monotonic()
    progress("features")
    found = backbone is not None
    if found:
        features = _features(
            images,
            image_key,
            name=backbone_name,
            backbone=backbone,
            image_size=image_size,
            color_mode=color_mode,
            progress=progress,
        )
        method = f"{backbone.label} features at {image_size} px, softmax head per fold"
        # Only the fallback reads the decoded images again: unmapped, their pages leave this process.
        images = None
    else:
        features = _pixel_features(images)
        method = f"the dataset's own model code trained per fold at {image_size} px: {fallback}"
    seconds["features"] = round(time.monotonic() - mark, 2)

    mark = time.monotonic()
    progress("labels")
    label_issues, quality, folds = [], {}, 0
    if num_classes >= 2 and len(items) >= 4:
        if found:
            fit_predict = ml_health.head_fit_predict(features, labels, num_classes=num_classes)
        else:
            fit_predict = _model_code_fit_predict(check, images, labels, num_classes=num_classes)
        folds = ml_health.fold_count(labels, ml_health.FOLDS if found else FALLBACK_FOLDS)
        try:
            probabilities = ml_health.out_of_fold_probabilities(
                labels,
                num_classes=num_classes,
                fit_predict=fit_predict,
                folds=folds,
                report=lambda fraction: progress("labels", fraction),
            )
        except ml_health.Stopped:
            raise Cancelled from None
        scores = ml_health.label_quality(labels, probabilities)
        quality = {str(item_id): round(float(score), 4) for item_id, score in zip(item_ids, scores, strict=True)}
        issues = ml_health.find_label_issues(labels, probabilities)
        label_issues = [
            issue
            for issue in ml_health.label_report(issues, item_ids=item_ids, label_names=label_names)
            if issue["item"] not in dismissed[HealthDismissal.Kind.LABEL]
        ]
    seconds["labels"] = round(time.monotonic() - mark, 2)

    mark = time.monotonic()
    progress("report")
    groups = ml_health.duplicate_groups(hashes)
    labels_of = [item.label for item in items]

    def group_of(group: dict) -> dict:
        return {
            "items": [item_ids[row] for row in group["rows"]],
            "exact": group["exact"],
            "labels": sorted({labels_of[row] for row in group["rows"]}),
            **({"splits": group["splits"]} if "splits" in group else {}),
        }

    duplicates = [
        group_of(group)
        for group in groups
        if not all(item_ids[row] in dismissed[HealthDismissal.Kind.DUPLICATE] for row in group["rows"])
    ]
    run = dataset.current_run
    leaks = {"run": None, "groups": []}
    if run is not None and run.splits:
        leaks = {
            "run": run.pk,
            "groups": [
                group_of(group) for group in ml_health.leaking_groups(groups, item_ids=item_ids, splits=run.splits)
            ],
        }
    outliers = []
    if num_classes >= 1 and len(items) >= 3:
        scores = ml_health.outlier_scores(features, labels, num_classes=num_classes)
        outliers = [
            {"item": item_ids[row], "label": labels_of[row], "score": round(float(scores[row]), 2)}
            for row in ml_health.find_outliers(scores)
            if item_ids[row] not in dismissed[HealthDismissal.Kind.OUTLIER]
        ]
    counts = {name: int((labels == index).sum()) for index, name in enumerate(label_names)}
    balance = ml_health.label_balance(counts, validation_split=dataset.validation_split)
    seconds["report"] = round(time.monotonic() - mark, 2)
    seconds["total"] = round(time.monotonic() - started, 2)
    return {
        "images": len(items),
        "unlabelled": unlabelled,
        "labels": label_names,
        "method": method,
        "fallback": fallback,
        "folds": folds,
        "label_issues": label_issues,
        "label_quality": quality,
        "duplicates": duplicates,
        "leaks": leaks,
        "outliers": outliers,
        "balance": balance,
        "unreadable": unreadable,
        "seconds": seconds,
    }


def health_job_execute(*, job: HealthCheck) -> None:
    """Compute a claimed check to its end (the job kind's entry): succeeded with its report, failed with
    a readable message, or cancelled. Never raises for a failure of the check itself."""
    progress = Progress(job.pk)
    try:
        report = health_check_compute(check=job, progress=progress)
        quality = report.pop("label_quality")
        lifecycle.job_succeed(kind=HealthCheck.KIND, job_id=job.pk, report=report, label_quality=quality)
    except Cancelled:
        log.info("Health check %s was cancelled.", job.pk)
    except ValueError as error:
        lifecycle.job_fail(kind=HealthCheck.KIND, job_id=job.pk, message=str(error))
