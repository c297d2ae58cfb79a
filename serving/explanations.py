"""Why a version's model decided: occlusion heatmaps (ml/explain.py) over an image sent to predict, or
over an image a run evaluated, cached under media/explanations/run_<id>/.

The model is the one the prediction service serves (ONNX Runtime, or Keras as the fallback): an
explanation is one batch of 65 forward passes through it, never a TensorFlow gradient. Every one made,
wherever it is asked for (the API, the Test page, a run's heatmaps), counts against the explain rate and
holds one of a few slots (`explanation_budget`): at most KERASUI_MAX_EXPLANATIONS_PER_USER per user and
KERASUI_MAX_CONCURRENT_EXPLANATIONS on the machine at once, counted by lock files across processes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.core.files.storage import default_storage
from filelock import FileLock, Timeout

from datasets.models import DataSetItem
from datasets.services import image_size_check
from management.errors import Conflict, InsufficientStorage, NotFound, ServiceError
from management.files import media_write_bytes
from ml.explain import METHOD, display_image, occlusion_map, overlay_png
from ml.images import load_image
from serving.prediction import model_cache
from training.models import TrainingRun

# One heatmap takes a fraction of a second to a few seconds: a client told to wait this long finds a slot.
SLOT_RETRY_SECONDS = 5
PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class TooManyExplanations(ServiceError):
    """Over the explain rate, or every explanation slot (the user's or the machine's) is taken."""

    status = 429

    def __init__(self, message: str, *, retry_after: int, field: str = "explain"):
        super().__init__(message, field=field)
        self.retry_after = retry_after


def _explain_rate_spend(user_id: int, field_name: str) -> None:
    """Count one explanation against KERASUI_THROTTLE_EXPLAIN, on the counter the API's throttle keeps
    for the "explain" scope (api/throttles.py: the same key), so every door shares one rate."""
    rate = settings.REST_FRAMEWORK.get("DEFAULT_THROTTLE_RATES", {}).get("explain")
    if not rate:
        return
    count, period = rate.split("/")
    limit, duration = int(count), PERIODS[period[0]]
    now = time.time()
    window = int(now // duration)
    key = f"throttle:explain:user-{user_id}:{duration}:{window}"
    cache.add(key, 0, timeout=duration + 5)
    try:
        spent = cache.incr(key)
    except ValueError:  # the window ended between add() and incr()
        cache.set(key, 1, timeout=duration + 5)
        spent = 1
    if spent > limit:
        wait = int((window + 1) * duration - now) + 1
        raise TooManyExplanations(
            f"at most {rate} explanations per account (KERASUI_THROTTLE_EXPLAIN): try again in {wait} seconds",
            retry_after=wait,
            field=field_name,
        )


def _slot(names: list[str]) -> FileLock | None:
    folder = Path(settings.KERASUI_LOCK_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        lock = FileLock(folder / name, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            continue
        return lock
    return None


@contextlib.contextmanager
def explanation_budget(*, user_id: int | None, field_name: str = "explain") -> Iterator[None]:
    """Count one explanation against the explain rate and hold a slot (the user's and the machine's)
    while the block computes it; 429 with Retry-After when the rate is spent or no slot is free."""
    if user_id is not None:
        _explain_rate_spend(user_id, field_name)
    held = []
    try:
        per_user, total = settings.KERASUI_MAX_EXPLANATIONS_PER_USER, settings.KERASUI_MAX_CONCURRENT_EXPLANATIONS
        if user_id is not None and per_user > 0:
            lock = _slot([f"explain-user-{user_id}-{number}.lock" for number in range(per_user)])
            if lock is None:
                raise TooManyExplanations(
                    f"{per_user} explanation(s) of yours are being made (at most KERASUI_MAX_EXPLANATIONS_PER_USER "
                    f"at once): try again in {SLOT_RETRY_SECONDS} seconds",
                    retry_after=SLOT_RETRY_SECONDS,
                    field=field_name,
                )
            held.append(lock)
        if total > 0:
            lock = _slot([f"explain-{number}.lock" for number in range(total)])
            if lock is None:
                raise TooManyExplanations(
                    f"{total} explanations are being made (at most KERASUI_MAX_CONCURRENT_EXPLANATIONS at once): "
                    f"try again in {SLOT_RETRY_SECONDS} seconds",
                    retry_after=SLOT_RETRY_SECONDS,
                    field=field_name,
                )
            held.append(lock)
        yield
    finally:
        for lock in held:
            lock.release()


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
    """Where a run's explanations of its evaluated images are kept, in media storage."""
    return f"explanations/run_{run.pk}"


def _evaluated_label(run: TrainingRun, item_id: int) -> str | None:
    """The label the run's evaluation predicted for the item, when it recorded one."""
    for rows in run.predictions.values():
        for row in rows:
            if row[0] == item_id and 0 <= row[1] < len(run.labels):
                return run.labels[row[1]]
    for report in run.evaluation.values():
        for entry in report.get("misclassified") or []:
            if entry.get("item") == item_id and entry.get("predicted") in run.labels:
                return entry["predicted"]
    return None


def _evaluated_items(run: TrainingRun) -> list[int]:
    """The images the run's evaluation measured: its held-out splits, its training images when it held
    out none (trainer._evaluation)."""
    splits = run.splits or {}
    held_out = [*splits.get("validation", []), *splits.get("test", [])]
    return held_out or list(splits.get("train", []))


def explanation_run_item(*, run: TrainingRun, item_id: int, user_id: int | None = None) -> str:
    """The heatmap (a PNG's name in media storage) of what the run's model looked at in one of the run's
    images, for the label its evaluation predicted; made on first request, then kept.

    The file's name carries the image's stored name, so an image replaced since is explained anew.
    """
    if item_id not in _evaluated_items(run):
        raise NotFound(f"image {item_id} is not one of the images run {run.pk} evaluated", field="item")
    item = DataSetItem.objects.filter(pk=item_id, dataset_id=run.dataset_id).first()
    if item is None or not item.image:
        raise NotFound(f"image {item_id} of run {run.pk} has been deleted", field="item")
    if not (run.status == TrainingRun.Status.SUCCEEDED and run.model_file):
        raise Conflict(f"run {run.pk} is {run.status} and has no model to explain with", field="run")
    digest = hashlib.sha256(item.image.name.encode()).hexdigest()[:12]
    relative = f"{explanation_folder(run)}/item_{item.pk}-{digest}.png"
    if default_storage.exists(relative):
        return relative
    try:
        with item.image.open("rb") as file:
            data = file.read()
    except OSError:
        raise NotFound(f"the file of image {item_id} is missing from storage", field="item") from None
    with explanation_budget(user_id=user_id, field_name="item"):
        explanation = explanation_for_image(
            run=run, name=f"image {item.pk}", data=data, label=_evaluated_label(run, item.pk), field_name="item"
        )
    # Written whole under a temporary name, then renamed: a reader never sees half a PNG.
    try:
        media_write_bytes(name=relative, data=explanation.png)
    except OSError as error:
        raise InsufficientStorage(
            f"the heatmap of image {item_id} cannot be kept ({error.strerror or error})", field="item"
        ) from None
    return relative
