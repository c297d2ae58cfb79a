"""Datasets of labelled images, their items, and the training runs that turn them into models."""

import re
import unicodedata
import uuid
from functools import cached_property
from pathlib import PurePosixPath

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.fields.files import ImageFieldFile
from django.utils.text import slugify

from jobs.models import Job
from management.options import (  # noqa: F401 - the choices and weights_file_path are read from here too
    PRETRAINED_ARCHITECTURES,
    Architecture,
    ColorMode,
    Flip,
    PromotionPolicy,
    Verbosity,
    add_fields,
    augmentation_of,
    weights_file_path,
)
from ml.backbones import check_image_size
from ml.images import image_file_name, image_format

MODEL_CODE_PERMISSION = "management.change_model_code"


def item_image_path(instance: "DataSetItem", filename: str) -> str:
    """datasets/<dataset>/<random>.<ext>: the extension is the server's (see ServerNamedImageField);
    anything but a short alphanumeric extension becomes .bin, which is only ever downloaded."""
    extension = PurePosixPath(filename).suffix.lower().lstrip(".")
    if not re.fullmatch(r"[a-z0-9]{1,5}", extension):
        extension = "bin"
    return f"datasets/{instance.dataset_id}/{uuid.uuid4().hex[:16]}.{extension}"


THUMBNAIL_FOLDER = "thumbnails"


def thumbnail_name(image_name: str) -> str:
    """The thumbnail of datasets/<dataset>/<random>.<ext>: datasets/<dataset>/thumbnails/<random>.webp,
    a name the server made (from the image's), served by the private media view like the image."""
    path = PurePosixPath(image_name)
    return str(path.parent / THUMBNAIL_FOLDER / f"{path.stem}.webp")


def thumbnail_image_prefix(name: str) -> str | None:
    """The image a thumbnail name belongs to, as the prefix of its name (datasets/<dataset>/<random>.),
    or None when `name` is not the name of a thumbnail."""
    match = re.fullmatch(rf"(datasets/\d+)/{THUMBNAIL_FOLDER}/([0-9a-zA-Z_-]{{1,64}})\.webp", name)
    return f"{match.group(1)}/{match.group(2)}." if match else None


def original_file_name(name: str | None) -> str:
    """The base name a client gave a file, kept as data only: no folders, no control or format
    characters (bidi overrides, zero-width), at most 255 characters (the end, with the extension)."""
    name = PurePosixPath((name or "").replace("\\", "/")).name
    name = "".join(char for char in name if not unicodedata.category(char).startswith("C"))
    return " ".join(name.split())[-255:]


class ServerNamedImageFieldFile(ImageFieldFile):
    """An image whose stored name comes from the format Pillow detects in its bytes, never from the
    name it was sent with (the admin's forms save through here)."""

    def save(self, name, content, save=True):
        super().save(image_file_name(image_format(content)), content, save)


class ServerNamedImageField(models.ImageField):
    """An ImageField whose files are named by the server; see ServerNamedImageFieldFile."""

    attr_class = ServerNamedImageFieldFile


class DataSet(models.Model):
    """A named collection of labelled images and the options for training a model on it."""

    name = models.CharField(max_length=200, unique=True)
    # The training options: fields added from management/options.py (see the end of this module).
    current_run = models.ForeignKey(
        "TrainingRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The run whose model answers predictions.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "dataset"
        permissions = [
            # The model code is Python the server executes: give this only to people you would give a shell.
            ("change_model_code", "Can change a dataset's model code (it runs on the server)"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.weights_file and self.architecture not in {
            Architecture.MOBILENET_V3_SMALL,
            Architecture.EFFICIENTNET_B0,
        }:
            raise ValidationError(
                {"weights_file": "starting weights are for MobileNetV3-Small and EfficientNet-B0 only"}
            )
        if self.architecture in PRETRAINED_ARCHITECTURES and self.image_size is not None:
            try:
                check_image_size(self.image_size)
            except ValueError as error:
                raise ValidationError({"image_size": str(error)}) from None
        if self.validation_split is not None and self.test_split is not None:
            if self.validation_split + self.test_split > 0.9:
                raise ValidationError(
                    {"test_split": "validation and test together may hold out at most 0.9 of the images"}
                )

    @property
    def augmentation(self) -> dict:
        return augmentation_of(self)

    @cached_property
    def latest_run(self) -> "TrainingRun | None":
        return self.runs.defer(*TrainingRun.HEAVY_FIELDS).order_by("-created_at", "-id").first()


class DataSetItem(models.Model):
    """One image of a dataset, labelled or not (an empty label: unlabelled, left out of training)."""

    dataset = models.ForeignKey(DataSet, on_delete=models.CASCADE, related_name="items")
    label = models.CharField(max_length=100, blank=True, help_text="Empty: unlabelled (not trained on).")
    image = ServerNamedImageField(upload_to=item_image_path, max_length=255)
    original_name = models.CharField(
        max_length=255, blank=True, help_text="The file's name as it was uploaded (the stored name is the server's)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset", "label", "id"]
        indexes = [models.Index(fields=["dataset", "label"])]
        verbose_name = "dataset item"

    def __str__(self) -> str:
        return f"{self.label or 'unlabelled'} #{self.pk}"

    @property
    def thumbnail_name(self) -> str:
        return thumbnail_name(self.image.name) if self.image.name else ""

    @property
    def thumbnail_url(self) -> str:
        """A small WebP of the image for lists: made at import, or on its first request."""
        return self.image.storage.url(self.thumbnail_name) if self.image.name else ""


class LabelCount(models.Model):
    """How many images of a dataset carry a label: kept as data by the dataset service, in the transaction
    of each write that adds, removes or relabels images, so no page counts a dataset's images. The row
    with the empty label counts the unlabelled images."""

    dataset = models.ForeignKey(DataSet, on_delete=models.CASCADE, related_name="label_counts")
    label = models.CharField(max_length=100)
    count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["dataset", "label"]
        constraints = [models.UniqueConstraint(fields=["dataset", "label"], name="one_count_per_dataset_and_label")]

    def __str__(self) -> str:
        return f"{self.label}: {self.count}"


class Phase(models.TextChoices):
    PREPARING = "preparing", "Preparing images"
    BUILDING = "building", "Building the model"
    TRAINING = "training", "Training"
    # Pretrained starting points: their recipe's phases (ml/transfer.py).
    FEATURES = "features", "Computing the backbone's features"
    HEAD = "head", "Training the head"
    FINE_TUNE = "fine_tune", "Fine-tuning the backbone"
    EVALUATING = "evaluating", "Evaluating"
    SAVING = "saving", "Saving the model"
    EXPORTING = "exporting", "Exporting to ONNX and proving the export"


class ServingEngine(models.TextChoices):
    """What answers a version's predictions in the web process."""

    PENDING = "", "Not decided yet (decided when first used)"
    ONNXRUNTIME = "onnxruntime", "ONNX Runtime (its proven ONNX export)"
    KERAS = "keras", "Keras (fallback: TensorFlow in the web process)"


class TrainingRun(Job):
    """One training of a dataset (a job of kind "training"): a snapshot of its options, its progress and results."""

    KIND = "training"
    # Per-image data (hundreds of kB at 60,000 images): read by the run's own page and answer only,
    # never by a list or a join (`TrainingRun.objects.defer(*TrainingRun.HEAVY_FIELDS)`).
    HEAVY_FIELDS = ("splits", "evaluation")

    dataset = models.ForeignKey(DataSet, on_delete=models.CASCADE, related_name="runs")
    epoch = models.PositiveIntegerField(default=0)

    # The snapshot: what this run trains with, whatever happens to the dataset afterwards. The options'
    # fields are added from management/options.py (see the end of this module).
    labels = models.JSONField(default=list, help_text="The labels in model output order.")
    augmentation = models.JSONField(default=dict, blank=True)
    splits = models.JSONField(
        default=dict, blank=True, help_text="The item ids of each split: train, validation, test."
    )
    split_counts = models.JSONField(
        default=dict, blank=True, help_text="The number of images of each split (what lists show of `splits`)."
    )

    phase = models.CharField(max_length=10, choices=Phase.choices, blank=True)
    evaluation = models.JSONField(default=dict, blank=True)
    checkpoint = models.CharField(
        max_length=255, blank=True, help_text="The last completed epoch's model and optimizer, for resuming."
    )
    interrupted = models.BooleanField(default=False, help_text="Its process stopped before the run finished.")
    unlabelled_count = models.PositiveIntegerField(
        default=0, help_text="The dataset's unlabelled images when the run was created: left out of it."
    )

    history = models.JSONField(default=list, blank=True)
    promotion = models.JSONField(
        default=dict,
        blank=True,
        help_text="Whether it became current when it finished, and why: the measure compared and both values.",
    )
    metrics = models.JSONField(default=dict, blank=True)
    model_file = models.FileField(upload_to="models", max_length=255, blank=True)
    log_file = models.FileField(upload_to="logs", max_length=255, blank=True)
    imported = models.BooleanField(default=False, help_text="Its model was uploaded, not trained here.")
    exports = models.JSONField(
        default=dict,
        blank=True,
        help_text="Each export made of the model, by format: its file, size, time and largest difference "
        "from the Keras model, or why it was refused.",
    )
    serving_engine = models.CharField(
        max_length=20,
        choices=ServingEngine.choices,
        default=ServingEngine.PENDING,
        blank=True,
        help_text="What answers this version's predictions in the web process.",
    )
    serving_note = models.TextField(blank=True, help_text="Why that engine: its proof, or why the fallback.")

    class Meta(Job.Meta):
        verbose_name = "training run"

    def __str__(self) -> str:
        return f"Run {self.pk} of {self.dataset}"

    @property
    def accuracy(self) -> float | None:
        value = self.metrics.get("val_accuracy", self.metrics.get("accuracy"))
        return float(value) if value is not None else None

    @property
    def download_name(self) -> str:
        """The file name a downloaded model gets: the dataset's name and the run."""
        return f"{slugify(self.dataset.name) or 'model'}-run{self.pk}.keras"

    @property
    def is_version(self) -> bool:
        """A succeeded run with a model: a version of its dataset's model."""
        return self.status == self.Status.SUCCEEDED and bool(self.model_file)

    @property
    def is_current(self) -> bool:
        return self.dataset.current_run_id == self.pk

    @property
    def resumable(self) -> bool:
        """Cancelled or interrupted with a checkpoint of an epoch before the last."""
        ended = self.status == self.Status.CANCELLED or (self.status == self.Status.FAILED and self.interrupted)
        return ended and bool(self.checkpoint) and len(self.history) < self.epochs

    @property
    def accuracy_percent(self) -> str:
        return f"{self.accuracy:.1%}" if self.accuracy is not None else "—"


add_fields(DataSet, TrainingRun)


class HealthCheck(Job):
    """One check of a dataset's health (label errors, duplicates, outliers, balance): a job of kind "health"."""

    KIND = "health"

    dataset = models.ForeignKey(DataSet, on_delete=models.CASCADE, related_name="health_checks")
    report = models.JSONField(default=dict, blank=True)

    class Meta(Job.Meta):
        verbose_name = "health check"

    def __str__(self) -> str:
        return f"Health check {self.pk} of {self.dataset}"

    @property
    def phase_title(self) -> str:
        """The phase as the page says it (health.js says the same from the API's `phase`)."""
        return HEALTH_PHASE_TITLES.get(self.phase, self.phase)


# What each phase of health/job.py does, in words (kept in step with health.js).
HEALTH_PHASE_TITLES = {
    "hashing": "looking for duplicates",
    "decoding": "reading the images",
    "features": "computing what each image looks like",
    "labels": "checking the labels",
    "report": "writing the report",
}


class HealthDismissal(models.Model):
    """A finding about an item a person kept as it is: later checks and the page do not list it again."""

    class Kind(models.TextChoices):
        LABEL = "label", "Suspected label error"
        DUPLICATE = "duplicate", "Duplicate"
        OUTLIER = "outlier", "Outlier"

    item = models.ForeignKey(DataSetItem, on_delete=models.CASCADE, related_name="health_dismissals")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["item", "kind"], name="one_dismissal_per_item_and_kind")]


class ExportJob(Job):
    """The making of one export of a version (a job of kind "export"): its file lands in `run.exports`."""

    KIND = "export"

    dataset = models.ForeignKey(DataSet, on_delete=models.CASCADE, related_name="export_jobs")
    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="export_jobs")
    format = models.CharField(max_length=20)
    precision = models.CharField(max_length=10, default="float32")
    bundle = models.BooleanField(default=False, help_text="A zip of the model, labels.json and a README.")

    class Meta(Job.Meta):
        verbose_name = "export"

    def __str__(self) -> str:
        return f"Export {self.pk} of run {self.run_id} ({self.format})"


class ImportJob(Job):
    """A zip of images uploaded to a dataset and imported in its own process (a job of kind "import")."""

    KIND = "import"

    dataset = models.ForeignKey(DataSet, on_delete=models.CASCADE, related_name="import_jobs")
    upload = models.FileField(upload_to="imports", max_length=255, blank=True, help_text="The zip, until imported.")
    original_name = models.CharField(max_length=255, blank=True)
    label = models.CharField(max_length=100, blank=True, help_text="The label of every image, if given.")
    unlabelled = models.BooleanField(default=False, help_text="Import every image without a label.")
    report = models.JSONField(default=dict, blank=True, help_text="What became of each file of the zip.")

    class Meta(Job.Meta):
        verbose_name = "zip import"

    def __str__(self) -> str:
        return f"Import {self.pk} into {self.dataset}"


class Suggestion(models.Model):
    """The current model's answer for one unlabelled image, kept until the image is labelled or the
    model changes: written by the job of kind "suggestions", read least sure first (smallest margin)."""

    item = models.OneToOneField(DataSetItem, on_delete=models.CASCADE, related_name="suggestion")
    dataset = models.ForeignKey(DataSet, on_delete=models.CASCADE, related_name="suggestions")
    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="+", help_text="The model asked.")
    label = models.CharField(max_length=100, help_text="The predicted label.")
    confidence = models.FloatField(help_text="The predicted label's probability.")
    margin = models.FloatField(help_text="The top probability minus the second: small means unsure.")
    top = models.JSONField(default=list, help_text="The most probable labels: [[label, probability], …].")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset", "margin", "item"]
        indexes = [
            models.Index(fields=["dataset", "margin", "item"]),
            models.Index(fields=["dataset", "label", "margin"]),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.confidence:.0%}) for item {self.item_id}"


class SuggestionJob(Job):
    """Predicting every unlabelled image of a dataset with its current model (a job of kind "suggestions")."""

    KIND = "suggestions"

    dataset = models.ForeignKey(DataSet, on_delete=models.CASCADE, related_name="suggestion_jobs")
    run = models.ForeignKey(TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    report = models.JSONField(default=dict, blank=True, help_text="How many images were predicted, skipped and why.")

    class Meta(Job.Meta):
        verbose_name = "suggestions job"

    def __str__(self) -> str:
        return f"Suggestions {self.pk} for {self.dataset}"
