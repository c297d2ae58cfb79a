"""Datasets of labelled images, their items, and the training runs that turn them into models."""

import uuid
from functools import cached_property
from pathlib import PurePosixPath

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import FileExtensionValidator, MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.text import get_valid_filename, slugify

from management.ml.models import DEFAULT_PROCESS

MODEL_CODE_PERMISSION = "management.change_model_code"


class ColorMode(models.TextChoices):
    GRAYSCALE = "grayscale", "Grayscale"
    RGB = "rgb", "RGB"


class Architecture(models.TextChoices):
    CODE = "code", "Model code (the default code is a small CNN)"
    DEEP_CNN = "deep_cnn", "Deeper CNN with batch normalisation"
    MOBILENET_V3_SMALL = "mobilenet_v3_small", "MobileNetV3-Small, from scratch"
    EFFICIENTNET_B0 = "efficientnet_b0", "EfficientNet-B0, from scratch"


class Flip(models.TextChoices):
    NONE = "none", "No flipping"
    HORIZONTAL = "horizontal", "Left-right"
    VERTICAL = "vertical", "Up-down"
    BOTH = "horizontal_and_vertical", "Left-right and up-down"


class Verbosity(models.IntegerChoices):
    SILENT = 0, "Silent"
    PROGRESS_BAR = 1, "Progress bar"
    ONE_LINE_PER_EPOCH = 2, "One line per epoch"


def item_image_path(instance: "DataSetItem", filename: str) -> str:
    name = get_valid_filename(PurePosixPath(filename).name)[-80:] or "image"
    return f"datasets/{instance.dataset_id}/{uuid.uuid4().hex[:12]}-{name}"


def weights_file_path(instance: "DataSet", filename: str) -> str:
    name = get_valid_filename(PurePosixPath(filename).name)[-80:] or "weights.h5"
    return f"weights/{uuid.uuid4().hex[:12]}-{name}"


class DataSet(models.Model):
    """A named collection of labelled images and the options for training a model on it."""

    name = models.CharField(max_length=200, unique=True)
    process = models.TextField(
        "model code",
        default=DEFAULT_PROCESS,
        help_text=(
            "Python that adds layers to <code>model</code> (a keras.Sequential holding the input, "
            "scaled to 0..1). The final softmax layer is added for you. In scope: model, keras, "
            "layers, every keras.layers name, image_size, channels, num_classes."
        ),
    )
    epochs = models.PositiveIntegerField(
        default=10,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text="Passes over the training images.",
    )
    batch_size = models.PositiveIntegerField(
        default=32,
        validators=[MinValueValidator(1), MaxValueValidator(4096)],
        help_text="Images per training step.",
    )
    image_size = models.PositiveIntegerField(
        default=64,
        validators=[MinValueValidator(8), MaxValueValidator(1024)],
        help_text="Images are resized to this many pixels wide and high.",
    )
    color_mode = models.CharField(
        max_length=10,
        choices=ColorMode.choices,
        default=ColorMode.RGB,
        help_text="Whether the model sees colour or grayscale images.",
    )
    validation_split = models.FloatField(
        default=0.2,
        validators=[MinValueValidator(0.0), MaxValueValidator(0.9)],
        help_text="Fraction of each label's images held out to validate the model (0 for none).",
    )
    verbose = models.PositiveSmallIntegerField(
        choices=Verbosity.choices,
        default=Verbosity.ONE_LINE_PER_EPOCH,
        help_text="How much Keras writes to the run's log.",
    )
    architecture = models.CharField(
        "starting point",
        max_length=30,
        choices=Architecture.choices,
        default=Architecture.CODE,
        help_text="Your model code (below), or a built-in network trained from scratch (the code is then unused).",
    )
    weights_file = models.FileField(
        "starting weights",
        upload_to=weights_file_path,
        max_length=255,
        blank=True,
        validators=[FileExtensionValidator(["h5", "hdf5", "keras"])],
        help_text="Optional, for MobileNetV3-Small and EfficientNet-B0: a Keras weights file of the network "
        "without its top (e.g. saved with backbone.save_weights('x.weights.h5')) to start from instead of "
        "random weights. Nothing is ever downloaded.",
    )
    learning_rate = models.FloatField(
        default=0.001,
        validators=[MinValueValidator(1e-6), MaxValueValidator(1.0)],
        help_text="Adam's step size. Lower it (0.0001) if the loss jumps around or becomes NaN.",
    )
    test_split = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(0.5)],
        help_text="Fraction of each label's images held out from training and validation, "
        "evaluated once at the end (0 for none).",
    )
    early_stopping_patience = models.PositiveSmallIntegerField(
        default=5,
        validators=[MaxValueValidator(1000)],
        help_text="Stop when the validation loss has not improved for this many epochs (0: never stop early). "
        "The best epoch's weights are kept either way.",
    )
    reduce_lr_on_plateau = models.BooleanField(
        "reduce learning rate on plateau",
        default=False,
        help_text="Halve the learning rate when the validation loss stalls for a few epochs.",
    )
    balance_classes = models.BooleanField(
        default=False,
        help_text="Weight each label inversely to its number of images, so rare labels count as much.",
    )
    augment_flip = models.CharField(
        "random flip",
        max_length=30,
        choices=Flip.choices,
        default=Flip.NONE,
        help_text="Augmentation, applied only while training: flip images at random.",
    )
    augment_rotation = models.FloatField(
        "random rotation",
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(0.5)],
        help_text="Rotate by up to this fraction of a full turn (0.05 = 18 degrees; 0 = off).",
    )
    augment_zoom = models.FloatField(
        "random zoom",
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(0.9)],
        help_text="Zoom in or out by up to this fraction (0 = off).",
    )
    augment_contrast = models.FloatField(
        "random contrast",
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Change contrast by up to this fraction (0 = off).",
    )
    seed = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MaxValueValidator(2**31 - 1)],
        help_text="Seed of the split and of training; blank for a new one each run. "
        "The same images and seed give the same split.",
    )
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
        if self.validation_split is not None and self.test_split is not None:
            if self.validation_split + self.test_split > 0.9:
                raise ValidationError(
                    {"test_split": "validation and test together may hold out at most 0.9 of the images"}
                )

    @property
    def augmentation(self) -> dict:
        return {
            "flip": self.augment_flip,
            "rotation": self.augment_rotation,
            "zoom": self.augment_zoom,
            "contrast": self.augment_contrast,
        }

    @cached_property
    def latest_run(self) -> "TrainingRun | None":
        return self.runs.order_by("-created_at", "-id").first()


class DataSetItem(models.Model):
    """One labelled image of a dataset."""

    dataset = models.ForeignKey(DataSet, on_delete=models.CASCADE, related_name="items")
    label = models.CharField(max_length=100)
    image = models.ImageField(upload_to=item_image_path, max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dataset", "label", "id"]
        indexes = [models.Index(fields=["dataset", "label"])]
        verbose_name = "dataset item"

    def __str__(self) -> str:
        return f"{self.label} #{self.pk}"


class Phase(models.TextChoices):
    PREPARING = "preparing", "Preparing images"
    BUILDING = "building", "Building the model"
    TRAINING = "training", "Training"
    EVALUATING = "evaluating", "Evaluating"
    SAVING = "saving", "Saving the model"


class ServingEngine(models.TextChoices):
    """What answers a version's predictions in the web process."""

    PENDING = "", "Not decided yet (decided when first used)"
    ONNXRUNTIME = "onnxruntime", "ONNX Runtime (its proven ONNX export)"
    KERAS = "keras", "Keras (fallback: TensorFlow in the web process)"


class TrainingRun(models.Model):
    """One training of a dataset: a snapshot of its options, and its progress and results."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    dataset = models.ForeignKey(DataSet, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0)
    epoch = models.PositiveIntegerField(default=0)

    # The snapshot: what this run trains with, whatever happens to the dataset afterwards.
    process = models.TextField("model code")
    epochs = models.PositiveIntegerField()
    batch_size = models.PositiveIntegerField()
    image_size = models.PositiveIntegerField()
    color_mode = models.CharField(max_length=10, choices=ColorMode.choices)
    validation_split = models.FloatField()
    verbose = models.PositiveSmallIntegerField(choices=Verbosity.choices)
    labels = models.JSONField(default=list, help_text="The labels in model output order.")
    seed = models.PositiveIntegerField(default=0)
    architecture = models.CharField(max_length=30, choices=Architecture.choices, default=Architecture.CODE)
    learning_rate = models.FloatField(default=0.001)
    weights_file = models.CharField(max_length=255, blank=True, help_text="The starting weights, under media.")
    test_split = models.FloatField(default=0.0)
    early_stopping_patience = models.PositiveSmallIntegerField(default=0)
    reduce_lr_on_plateau = models.BooleanField(default=False)
    balance_classes = models.BooleanField(default=False)
    augmentation = models.JSONField(default=dict, blank=True)
    splits = models.JSONField(
        default=dict, blank=True, help_text="The item ids of each split: train, validation, test."
    )

    phase = models.CharField(max_length=10, choices=Phase.choices, blank=True)
    evaluation = models.JSONField(default=dict, blank=True)
    checkpoint = models.CharField(
        max_length=255, blank=True, help_text="The last completed epoch's model and optimizer, for resuming."
    )
    interrupted = models.BooleanField(default=False, help_text="Its process stopped before the run finished.")

    history = models.JSONField(default=list, blank=True)
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
    error = models.TextField(blank=True)
    worker = models.CharField(
        max_length=200,
        blank=True,
        help_text="Who trained it: host and process id (thread runner), or Celery node and process id.",
    )
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="The last sign of life of its training process (about every second)."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "training run"
        constraints = [
            models.UniqueConstraint(
                fields=["dataset"],
                condition=models.Q(status__in=["queued", "running"]),
                name="one_active_run_per_dataset",
            ),
            models.CheckConstraint(
                condition=models.Q(progress__gte=0) & models.Q(progress__lte=100),
                name="progress_between_0_and_100",
            ),
        ]

    def __str__(self) -> str:
        return f"Run {self.pk} of {self.dataset}"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

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

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None
