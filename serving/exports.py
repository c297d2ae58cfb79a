"""Downloads of a model version in other formats: made once per run and format, proven, kept under media.

An export is a job of kind "export" (export_job_request queues it; export_job_execute runs in the job's
own process), never work in a request: it is made in a child process (`ml.export`, with a
time limit), loaded back in its own runtime and compared with the Keras model on the run's own images.
It is kept under `exports/run_<id>/` and recorded on the run (`TrainingRun.exports`) with its largest
difference; one that fails its check is recorded with the reason and refused, never served.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import IntegrityError
from django.utils import timezone
from django.utils.text import slugify
from filelock import FileLock

from datasets.models import DataSetItem
from jobs import lifecycle, runner
from jobs.budgets import TooManyJobs, model_job_slot
from management.errors import Conflict, ServiceError
from management.files import media_keep_file, media_local_copy, media_scratch_path
from ml.export import FORMATS, PRECISIONS, export_in_child, export_loaded_model, file_name
from ml.files import atomic_path
from ml.images import channels_for, load_image
from serving.models import ExportJob
from training.models import TrainingRun

log = logging.getLogger(__name__)
KIND = ExportJob.KIND

PREPROCESSING = (
    "EXIF orientation applied; converted to RGB (rgb) or 8-bit grayscale L (grayscale), transparency shown on "
    "white; resized to image_size x image_size with bilinear resampling (no cropping); pixel values 0..255 as "
    "float32 - the model scales them itself, do not divide by 255."
)


class ExportRefused(ServiceError):
    """The export failed its check (or could not be made): it is recorded and never served."""

    status = 422


@dataclass(frozen=True)
class ExportFile:
    """A file to send: its name under media and the name the user's download gets."""

    name: str
    filename: str


def export_folder(run: TrainingRun) -> str:
    return f"exports/run_{run.pk}"


def export_key(format: str, precision: str = "float32") -> str:
    return format if precision == "float32" else f"{format}_{precision}"


def export_metadata(run: TrainingRun) -> dict:
    """What a user needs to feed the exported model, as shipped in its metadata and labels.json."""
    channels = channels_for(run.color_mode)
    return {
        "kerasui_run": run.pk,
        "dataset": run.dataset.name,
        "labels": run.labels,
        "image_size": run.image_size,
        "color_mode": run.color_mode,
        "input_shape": [None, run.image_size, run.image_size, channels],
        "input": "float32 pixel values 0..255, shape (batch, image_size, image_size, channels)",
        "output": "probabilities, shape (batch, number of labels), in the order of labels",
        "preprocessing": PREPROCESSING,
        "unknown_below": run.dataset.unknown_below,
        "unknown": "when the largest probability is below unknown_below, answer 'unknown' (0: always answer); "
        "the probabilities are calibrated by temperature scaling on the run's validation images",
        "calibration": run.metrics.get("calibration"),
    }


def _download_name(run: TrainingRun, format: str, precision: str, bundle: bool) -> str:
    stem = f"{slugify(run.dataset.name) or 'model'}-run{run.pk}"
    if precision != "float32":
        stem += f"-{precision}"
    if bundle:
        return f"{stem}-{format}-bundle.zip"
    return f"{stem}-savedmodel.zip" if format == "savedmodel" else f"{stem}{Path(file_name(format)).suffix}"


def _check_request(run: TrainingRun, format: str, precision: str, *, model_path: str | None = None) -> None:
    if format not in FORMATS:
        raise ServiceError(f"unknown format '{format}': choose one of {', '.join(FORMATS)}", field="format")
    if precision not in PRECISIONS:
        raise ServiceError(f"unknown precision '{precision}': choose one of {', '.join(PRECISIONS)}", field="precision")
    if precision != "float32" and format != "tflite":
        raise ServiceError(f"precision {precision} is offered for tflite only", field="precision")
    if model_path is None and not run.is_version:
        raise Conflict(f"run {run.pk} has no model to export (it is {run.status})", field="run")


@contextmanager
def _run_lock(run: TrainingRun):
    """One export of a run at a time, across this machine's processes: no two make the same file or
    record at once. (Across machines the export job allows one per dataset; a web machine proving a
    version's ONNX export meanwhile would at worst make the same file again, kept whole either way.)"""
    folder = Path(settings.KERASUI_LOCK_DIR) / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    # filelock: flock on POSIX, msvcrt locking on Windows.
    with FileLock(folder / f"run_{run.pk}.lock"):
        yield


@contextmanager
def _made(name: str) -> Iterator[Path]:
    """A temporary path to make the media file `name` at: kept whole in media storage when the block
    ends without an error (on this disk renamed into place; into a bucket uploaded), else removed."""
    target = media_scratch_path(name=name)
    with atomic_path(target) as temporary:
        yield temporary
    media_keep_file(name=name, path=target)


def _record(run: TrainingRun, key: str, entry: dict | None) -> None:
    """Set (or clear) one format's record; called under the run's lock, on a fresh copy of the records."""
    exports = TrainingRun.objects.filter(pk=run.pk).values_list("exports", flat=True).first() or {}
    if entry is None:
        exports.pop(key, None)
    else:
        exports[key] = entry
    TrainingRun.objects.filter(pk=run.pk).update(exports=exports)
    run.exports = exports


def _sample_items(run: TrainingRun, count: int) -> list[DataSetItem]:
    """Up to `count` of the run's own images, spread over its items: held-out ones first."""
    ids = [item_id for name in ("validation", "test", "train") for item_id in run.splits.get(name, [])]
    if ids:
        items = list(DataSetItem.objects.filter(pk__in=ids))
    else:
        items = list(DataSetItem.objects.filter(dataset_id=run.dataset_id, label__in=run.labels).order_by("id"))
    step = max(1, len(items) // max(1, count))
    return items[::step][:count]


def export_samples(run: TrainingRun, count: int | None = None) -> np.ndarray:
    """The images the exports are checked on: `count` (KERASUI_EXPORT_SAMPLES) of the run's own, prepared
    as for prediction.

    A model with fewer than two readable images of its own (an imported one, say) is checked on
    random images as well, so the check always compares a batch.
    """
    arrays = []
    for item in _sample_items(run, count or settings.KERASUI_EXPORT_SAMPLES):
        try:
            with item.image.open("rb") as file:
                arrays.append(load_image(file.read(), image_size=run.image_size, color_mode=run.color_mode))
        except (OSError, ValueError):
            continue
    shape = (run.image_size, run.image_size, channels_for(run.color_mode))
    rng = np.random.default_rng(run.pk)
    while len(arrays) < 2:
        arrays.append(rng.integers(0, 256, shape, dtype=np.uint8))
    return np.stack(arrays)


def _keras_entry(run: TrainingRun) -> dict:
    size = run.model_file.size if run.model_file else 0
    return {"status": "ok", "file": run.model_file.name, "max_difference": 0.0, "size": size, "runtime": "Keras"}


def training_run_export(
    *,
    run: TrainingRun,
    format: str = "keras",
    precision: str = "float32",
    model_path: str | None = None,
    model=None,
) -> ExportFile:
    """The run's model as `format`: made (in a child process) and checked the first time, then kept.

    `model_path` names the model file of a run that is not a version yet (serving proves a trained
    run's ONNX export before the run becomes current); `model`, that file's model already loaded in
    this process (the training process's), is exported here instead of in a child process, and
    checked on TRAINED_MODEL_SAMPLES images. Raises ExportRefused (422) when the export was refused
    by its check, now or before.
    """
    _check_request(run, format, precision, model_path=model_path)
    if format == "keras":
        # The original: the reference the other formats are compared with.
        if "keras" not in run.exports:
            with _run_lock(run):
                _record(run, "keras", _keras_entry(run))
        return ExportFile(run.model_file.name, run.download_name)
    key = export_key(format, precision)
    filename = _download_name(run, format, precision, bundle=False)
    entry = _usable(run, key)
    if entry is not None:
        return ExportFile(entry["file"], filename)
    with _run_lock(run):
        run.exports = TrainingRun.objects.filter(pk=run.pk).values_list("exports", flat=True).first() or {}
        entry = _usable(run, key)  # another process may have made it while this one waited
        if entry is not None:
            return ExportFile(entry["file"], filename)
        name = file_name(format, precision)
        try:
            report = _export_into(run, f"{export_folder(run)}/{name}", format, precision, model_path, model)
        except _NotKept as refused:
            report = refused.report
        entry = {
            "status": "ok" if report.ok else "failed",
            "max_difference": report.max_difference,
            "tolerance": report.tolerance,
            "samples": report.samples,
            "size": report.size,
            "seconds": report.seconds,
            "runtime": report.runtime,
            "made_at": timezone.now().isoformat(),
        }
        if report.ok:
            entry["file"] = f"{export_folder(run)}/{name}"
        else:
            entry["error"] = report.error
        _record(run, key, entry)
    if not report.ok:
        raise ExportRefused(report.error, field="format")
    return ExportFile(entry["file"], filename)


class _NotKept(Exception):
    """An export its check refused: the atomic write must not put it in place."""

    def __init__(self, report):
        super().__init__(report.error)
        self.report = report


# The images a training process proves its new model's export on: the largest difference of a
# probability is the same story on 8 images as on 16, and each costs a Keras and an ONNX pass.
TRAINED_MODEL_SAMPLES = 8


def _export_into(run: TrainingRun, target: str, format: str, precision: str, model_path: str | None, model=None):
    """Make the export and keep it as the media file `target`, whole; _NotKept when its check refused it.

    In a child process with a time limit, or in this process for a `model` already loaded here
    (the training process: TensorFlow and the model are in memory, and no web request waits on it).
    """
    with tempfile.TemporaryDirectory() as work, _made(target) as temporary:
        with model_job_slot(what=f"exporting to {format}"):
            if model is not None:
                report = export_loaded_model(
                    model,
                    format=format,
                    target=temporary,
                    images=export_samples(run, TRAINED_MODEL_SAMPLES),
                    precision=precision,
                    metadata=export_metadata(run),
                    cache_folder=Path(settings.KERASUI_CACHE_DIR) / "onnx",
                )
                report.seconds = round(report.seconds, 2)
            else:
                samples = Path(work) / "samples.npy"
                np.save(samples, export_samples(run))
                report = export_in_child(
                    model_path or str(media_local_copy(name=run.model_file.name)),
                    format=format,
                    target=temporary,
                    samples_path=samples,
                    precision=precision,
                    metadata=export_metadata(run),
                    timeout=settings.KERASUI_EXPORT_TIMEOUT,
                )
        if not report.ok:
            raise _NotKept(report)
    return report


def _usable(run: TrainingRun, key: str) -> dict | None:
    """The recorded export if it can be served; raises ExportRefused when it was refused."""
    entry = run.exports.get(key)
    if entry is None:
        return None
    if entry.get("status") != "ok":
        raise ExportRefused(entry.get("error") or f"the {key} export was refused", field="format")
    if not default_storage.exists(entry["file"]):
        return None  # the file went missing: make it again
    return entry


def training_run_export_again(*, run: TrainingRun, format: str, precision: str = "float32") -> None:
    """Forget a format's record and files (a refused one, say), so the next request makes it anew."""
    key = export_key(format, precision)
    with _run_lock(run):
        for name in (file_name(format, precision), f"{format}-{precision}-bundle.zip"):
            default_storage.delete(f"{export_folder(run)}/{name}")
            media_scratch_path(name=f"{export_folder(run)}/{name}").unlink(missing_ok=True)
        _record(run, key, None)


def training_run_export_bundle(*, run: TrainingRun, format: str = "keras", precision: str = "float32") -> ExportFile:
    """A zip of the export, labels.json and a README.txt with a short example for its runtime."""
    export = training_run_export(run=run, format=format, precision=precision)
    name = f"{format}-{precision}-bundle.zip"
    relative = f"{export_folder(run)}/{name}"
    filename = _download_name(run, format, precision, bundle=True)
    with _run_lock(run):
        if default_storage.exists(relative):
            return ExportFile(relative, filename)
        source = media_local_copy(name=export.name)
        model_name = _download_name(run, format, precision, bundle=False)
        with _made(relative) as temporary, zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as bundle:
            if format == "savedmodel":
                with zipfile.ZipFile(source) as inner:
                    for entry in inner.infolist():
                        bundle.writestr(entry.filename, inner.read(entry))
                model_name = "saved_model"
            else:
                bundle.write(source, model_name)
            bundle.writestr("labels.json", json.dumps(export_metadata(run), indent=2))
            bundle.writestr("README.txt", usage_note(run, format, model_name, precision))
    return ExportFile(relative, filename)


# --- exports as jobs -----------------------------------------------------------------------------------


def _ready(run: TrainingRun, format: str, precision: str, bundle: bool) -> ExportFile | None:
    """The file if it can be sent now: the Keras original (and its bundle, a small zip), or an export
    made before. ExportRefused when it was refused; None when it has to be made (a job)."""
    if format == "keras":
        return training_run_export_bundle(run=run) if bundle else training_run_export(run=run)
    key = export_key(format, precision)
    entry = _usable(run, key)
    if entry is None:
        return None
    if not bundle:
        return ExportFile(entry["file"], _download_name(run, format, precision, bundle=False))
    name = f"{export_folder(run)}/{format}-{precision}-bundle.zip"
    if default_storage.exists(name):
        return ExportFile(name, _download_name(run, format, precision, bundle=True))
    return None


def export_job_request(
    *, run: TrainingRun, format: str = "keras", precision: str = "float32", bundle: bool = False, user=None
) -> ExportFile | ExportJob:
    """The file when it is ready; else the job that makes it (queued now, or the one already under way).

    Conflict (409) while another export of the dataset's versions is being made; ExportRefused (422)
    when this one was refused by its check.
    """
    _check_request(run, format, precision)
    ready = _ready(run, format, precision, bundle)
    if ready is not None:
        return ready
    wanted = {"run": run, "format": format, "precision": precision, "bundle": bundle}
    active = ExportJob.objects.filter(dataset_id=run.dataset_id, status__in=ExportJob.ACTIVE).first()
    if active is not None:
        if (active.run_id, active.format, active.precision, active.bundle) == (run.pk, format, precision, bundle):
            return active
        raise Conflict(
            f"export {active.pk} ({active.format} of run {active.run_id}) of this dataset is {active.status}: "
            "one export of a dataset is made at a time; ask again when it has ended",
            field="format",
        )
    creator = user if getattr(user, "pk", None) else None
    try:
        job = lifecycle.job_create(kind=KIND, fields={**wanted, "dataset_id": run.dataset_id, "created_by": creator})
    except IntegrityError:
        raise Conflict(
            "another export of this dataset was just asked for; ask again in a moment", field="format"
        ) from None
    runner.enqueue_on_commit(kind=KIND, job_id=job.pk)
    return job


# A model slot held by a validation is free within seconds: the job waits for one rather than failing.
SLOT_POLL_SECONDS = 2.0


def export_job_execute(*, job: ExportJob) -> None:
    """Make a claimed export (the job kind's entry): succeeded once its file is there, failed with the
    check's reason when it was refused. Waits while every model slot is taken, stops once cancelled."""
    run = job.run
    while True:
        if not lifecycle.job_progress(kind=KIND, job_id=job.pk, phase="exporting", progress=0.1):
            log.info("Export %s was cancelled.", job.pk)
            return
        try:
            training_run_export(run=run, format=job.format, precision=job.precision)
            break
        except TooManyJobs:
            lifecycle.job_progress(kind=KIND, job_id=job.pk, phase="waiting for a model slot", progress=0.05)
            time.sleep(SLOT_POLL_SECONDS)
        except ServiceError as error:
            lifecycle.job_fail(kind=KIND, job_id=job.pk, message=error.message)
            return
    if job.bundle:
        lifecycle.job_progress(kind=KIND, job_id=job.pk, phase="bundling", progress=0.9)
        training_run_export_bundle(run=run, format=job.format, precision=job.precision)
    lifecycle.job_succeed(kind=KIND, job_id=job.pk)


def export_jobs_of(*, run: TrainingRun, limit: int = 10) -> list[ExportJob]:
    """The run's latest export jobs, newest first (the run page shows them)."""
    return list(run.export_jobs.order_by("-created_at", "-id")[:limit])


EXAMPLES = {
    "keras": """import keras, numpy as np
model = keras.saving.load_model("{model}")
probabilities = model.predict(images, verbose=0)""",
    "h5": """import keras, numpy as np
model = keras.saving.load_model("{model}", compile=False)
probabilities = model.predict(images, verbose=0)""",
    "savedmodel": """import tensorflow as tf
serve = tf.saved_model.load("{model}").signatures["serving_default"]
probabilities = serve(image=tf.constant(images))["probabilities"].numpy()""",
    "tflite": """from ai_edge_litert.interpreter import Interpreter  # or tf.lite.Interpreter
runner = Interpreter(model_path="{model}").get_signature_runner("serving_default")
probabilities = runner(image=images)["probabilities"]""",
    "onnx": """import onnxruntime
session = onnxruntime.InferenceSession("{model}")
probabilities = session.run(["probabilities"], {{"image": images}})[0]""",
}


def usage_note(run: TrainingRun, format: str, model_name: str, precision: str = "float32") -> str:
    """README.txt of a bundle: what the model takes and a ten-line example in its runtime."""
    mode = "L" if run.color_mode == "grayscale" else "RGB"
    shape = "[:, :, :, None]" if run.color_mode == "grayscale" else ""
    check = run.exports.get(export_key(format, precision), {})  # a float16 bundle states float16's proof
    proof = (
        f"Checked against the Keras model on {check.get('samples')} images of the run's own data: "
        f"largest difference of a probability {check.get('max_difference'):.2g}.\n"
        if check.get("max_difference") is not None and format != "keras"
        else ""
    )
    return f"""KerasUI model: dataset '{run.dataset.name}', run {run.pk} ({format}).

Input: float32, shape (batch, {run.image_size}, {run.image_size}, {channels_for(run.color_mode)}), pixel values 0..255.
Preprocessing: {PREPROCESSING}
Output: probabilities in the order of labels.json's "labels": {", ".join(run.labels)}.
{proof}
Example:

import json
import numpy as np
from PIL import Image, ImageOps
labels = json.load(open("labels.json"))["labels"]
image = ImageOps.exif_transpose(Image.open("photo.jpg")).convert("{mode}")
image = image.resize(({run.image_size}, {run.image_size}), Image.Resampling.BILINEAR)
images = np.asarray(image, dtype=np.float32)[None]{shape}
{EXAMPLES[format].format(model=model_name)}
print(labels[int(probabilities[0].argmax())])
"""
