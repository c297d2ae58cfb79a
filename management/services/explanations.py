"""Why a version's model decided: occlusion heatmaps (ml/explain.py) over an image sent to predict, or
over an image a run evaluated, cached under media/explanations/run_<id>/.

The model is the one the prediction service serves (ONNX Runtime, or Keras as the fallback): an
explanation is one batch of 65 forward passes through it, never a TensorFlow gradient.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings

from management.ml.explain import METHOD, display_image, occlusion_map, overlay_png
from management.ml.files import atomic_write_bytes
from management.ml.images import load_image
from management.models import DataSetItem, TrainingRun
from management.services.datasets import image_size_check
from management.services.errors import Conflict, InsufficientStorage, NotFound, ServiceError
from management.services.prediction import model_cache


@dataclass(frozen=True)
class Explanation:
    """A heatmap over an image (PNG) of what mattered to the model's probability of `label`."""

    png: bytes
    label: str
    method: str = METHOD

    def as_dict(self) -> dict:
        return {"png_base64": base64.b64encode(self.png).decode(), "method": self.method, "label": self.label}


def explanation_for_image(
    *,
    run: TrainingRun,
    name: str,
    data: bytes,
    label: str | None = None,
    current: bool = False,
    field_name: str = "image",
) -> Explanation:
    """What the run's model looked at to give `label` (by default the label it predicts) to the image."""
    image_size_check(data, name=name, field_name=field_name)
    try:
        array = load_image(
            data, image_size=run.image_size, color_mode=run.color_mode, max_pixels=settings.KERASUI_MAX_IMAGE_PIXELS
        )
        shown = display_image(data, max_pixels=settings.KERASUI_MAX_IMAGE_PIXELS)
    except ValueError as error:
        raise ServiceError(f"{name}: {error}", field=field_name) from None
    predictor = model_cache.get(run, current=current)
    if label is None:
        index = int(np.argmax(predictor.predict(array[np.newaxis])[0]))
    elif label in run.labels:
        index = run.labels.index(label)
    else:
        raise ServiceError(f"'{label}' is not one of the labels of run {run.pk}", field="label")
    heat = occlusion_map(predictor.predict, array, index)
    return Explanation(png=overlay_png(shown, heat), label=run.labels[index])


def explanation_folder(run: TrainingRun) -> str:
    """Where a run's explanations of its evaluated images are kept, under MEDIA_ROOT."""
    return f"explanations/run_{run.pk}"


def _evaluated_label(run: TrainingRun, item_id: int) -> str | None:
    """The label the run's evaluation predicted for the item, when it recorded one."""
    for report in run.evaluation.values():
        for row in report.get("predictions") or []:
            if row[0] == item_id and 0 <= row[1] < len(run.labels):
                return run.labels[row[1]]
        for entry in report.get("misclassified") or []:
            if entry.get("item") == item_id and entry.get("predicted") in run.labels:
                return entry["predicted"]
    return None


def explanation_run_item(*, run: TrainingRun, item_id: int) -> str:
    """The heatmap (a PNG's path under MEDIA_ROOT) of what the run's model looked at in one of the run's
    images, for the label its evaluation predicted; made on first request, then kept.

    The file's name carries the image's stored name, so an image replaced since is explained anew.
    """
    if not any(item_id in ids for ids in run.splits.values()):
        raise NotFound(f"image {item_id} is not one of the images of run {run.pk}", field="item")
    item = DataSetItem.objects.filter(pk=item_id, dataset_id=run.dataset_id).first()
    if item is None or not item.image:
        raise NotFound(f"image {item_id} of run {run.pk} has been deleted", field="item")
    if not (run.status == TrainingRun.Status.SUCCEEDED and run.model_file):
        raise Conflict(f"run {run.pk} is {run.status} and has no model to explain with", field="run")
    digest = hashlib.sha256(item.image.name.encode()).hexdigest()[:12]
    relative = f"{explanation_folder(run)}/item_{item.pk}-{digest}.png"
    target = Path(settings.MEDIA_ROOT) / relative
    if target.is_file():
        return relative
    try:
        with item.image.open("rb") as file:
            data = file.read()
    except OSError:
        raise NotFound(f"the file of image {item_id} is missing from storage", field="item") from None
    explanation = explanation_for_image(
        run=run, name=f"image {item.pk}", data=data, label=_evaluated_label(run, item.pk), field_name="item"
    )
    # Written whole under a temporary name, then renamed: a reader never sees half a PNG.
    try:
        atomic_write_bytes(target, explanation.png)
    except OSError as error:
        raise InsufficientStorage(
            f"the heatmap of image {item_id} cannot be kept ({error.strerror or error})", field="item"
        ) from None
    return relative
