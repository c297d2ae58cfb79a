"""Model versions: every succeeded run of a dataset is one; promote an older one, import a trained one.

The dataset's `current_run` answers predictions; which run it is, the lifecycle decides (runs.py):
training makes the newest succeeded run current, promoting makes any version current (a rollback), an
imported `.keras` model becomes a new succeeded run, current as the newest.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.files import File

from datasets.models import DataSet
from datasets.services import clean_label
from jobs.budgets import model_job_slot
from management.errors import ServiceError
from ml.export import inspect_in_child
from ml.images import COLOR_MODES, channels_for
from training import runs
from training.models import TrainingRun
from training.services import run_snapshot

MODES_BY_CHANNELS = {channels_for(mode): mode for mode in COLOR_MODES}


def training_run_promote(*, run: TrainingRun) -> TrainingRun:
    """Make a version (a succeeded run with a model) its dataset's current model."""
    return runs.run_promote(run=run)


def parse_labels(value) -> list[str]:
    """Labels as a JSON list or comma-separated text, in the model's output order; a ServiceError naming `labels`."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                raise ServiceError("labels: not a valid JSON list", field="labels") from None
        else:
            value = [part for part in text.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(label, str) for label in value):
        raise ServiceError("labels must be a list of texts, or texts separated by commas", field="labels")
    labels = [clean_label(label, field_name="labels") for label in value]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ServiceError(f"labels must be different; repeated: {', '.join(duplicates)}", field="labels")
    if len(labels) < 2:
        raise ServiceError("a classifier needs at least two labels", field="labels")
    return labels


def _check_shapes(dataset: DataSet, info, labels: list[str]) -> tuple[int, str]:
    """The model's image size and colour mode, after checking them and its outputs against the upload."""
    shape = info.input_shape
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2] or shape[3] not in MODES_BY_CHANNELS:
        raise ServiceError(
            f"the model takes inputs of shape {tuple(shape)}: KerasUI models take square images, "
            "(batch, size, size, 1) for grayscale or (batch, size, size, 3) for rgb",
            field="file",
        )
    size, color_mode = int(shape[1]), MODES_BY_CHANNELS[shape[3]]
    if size != dataset.image_size or color_mode != dataset.color_mode:
        raise ServiceError(
            f"the model takes {size}×{size} {color_mode} images, the dataset '{dataset.name}' is set to "
            f"{dataset.image_size}×{dataset.image_size} {dataset.color_mode}: change the dataset's image size "
            "and colour mode to the model's, or upload a model made for them",
            field="file",
        )
    outputs = info.output_shape
    if len(outputs) != 2 or outputs[1] != len(labels):
        raise ServiceError(
            f"the model has outputs of shape {tuple(outputs)} but {len(labels)} labels were given: "
            "give one label per output, in the model's output order",
            field="labels",
        )
    return size, color_mode


def training_run_import(*, dataset: DataSet, file, labels, user=None) -> TrainingRun:
    """A trained .keras model and its labels as a new version of `dataset`, made current.

    The file is loaded with Keras' safe mode in a child process (a Lambda layer, i.e. Python code, is
    refused) and must take the dataset's square images and give one output per label.
    """
    labels = parse_labels(labels)
    name = Path(getattr(file, "name", "") or "").name
    if not name.lower().endswith(".keras"):
        raise ServiceError("upload a Keras model saved as a .keras file (model.save('name.keras'))", field="file")
    size = getattr(file, "size", None)
    if size is not None and size > settings.KERASUI_MAX_MODEL_BYTES:
        limit = settings.KERASUI_MAX_MODEL_BYTES // (1024 * 1024)
        raise ServiceError(f"the model file is larger than the limit of {limit} MiB", field="file")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "upload.keras"
        with path.open("wb") as target:
            for chunk in file.chunks() if hasattr(file, "chunks") else iter(lambda: file.read(1 << 20), b""):
                target.write(chunk)
        with model_job_slot(what="checking the imported model"):
            info = inspect_in_child(path, timeout=settings.KERASUI_VALIDATE_TIMEOUT * 2)
        if not info.ok:
            raise ServiceError(info.error, field="file")
        image_size, color_mode = _check_shapes(dataset, info, labels)
        snapshot = {**run_snapshot(dataset=dataset), "labels": labels}
        snapshot.update(image_size=image_size, color_mode=color_mode, epochs=0)

        def save_model(run: TrainingRun) -> str:
            with path.open("rb") as source:
                run.model_file.save(f"run_{run.pk}.keras", File(source), save=False)
            return run.model_file.name

        return runs.run_add_imported(snapshot=snapshot, user=user, save_model=save_model)
