"""The training options, declared once: each is a dataset field, the run's copy of it, and where it goes.

models.py adds the fields to DataSet and TrainingRun from OPTIONS; the snapshot a run takes, the fit
options of the trainer, the serializers and the admin's fieldsets read OPTIONS too. Adding an option is
one Option(...) below plus a migration (`manage.py makemigrations`), and its use in ml/.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from django.core.validators import FileExtensionValidator, MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.text import get_valid_filename

from ml.models import DEFAULT_PROCESS, PRETRAINED


class ColorMode(models.TextChoices):
    GRAYSCALE = "grayscale", "Grayscale"
    RGB = "rgb", "RGB"


class Architecture(models.TextChoices):
    # The trainer tries the candidates that fit within the time budget and keeps the best (trainer.py).
    AUTO = "auto", "Automatic: the best of a pretrained head, the model code and fine-tuning"
    CODE = "code", "Model code (the default code is a small CNN)"
    DEEP_CNN = "deep_cnn", "Deeper CNN with batch normalisation"
    MOBILENET_V3_SMALL = "mobilenet_v3_small", "MobileNetV3-Small, from scratch"
    EFFICIENTNET_B0 = "efficientnet_b0", "EfficientNet-B0, from scratch"
    # Pretrained on ImageNet (ml/backbones.py): trained by the transfer recipe.
    EFFICIENTNET_LITE0 = "efficientnet_lite0", "EfficientNet-Lite0, pretrained on ImageNet (offline)"
    MOBILENET_V3_SMALL_IMAGENET = "mobilenet_v3_small_imagenet", "MobileNetV3-Small, pretrained on ImageNet"
    MOBILENET_V3_LARGE_IMAGENET = "mobilenet_v3_large_imagenet", "MobileNetV3-Large, pretrained on ImageNet"
    EFFICIENTNET_B0_IMAGENET = "efficientnet_b0_imagenet", "EfficientNet-B0, pretrained on ImageNet"


PRETRAINED_ARCHITECTURES = frozenset(PRETRAINED)


class Flip(models.TextChoices):
    NONE = "none", "No flipping"
    HORIZONTAL = "horizontal", "Left-right"
    VERTICAL = "vertical", "Up-down"
    BOTH = "horizontal_and_vertical", "Left-right and up-down"


class PromotionPolicy(models.TextChoices):
    WHEN_BETTER = "when_better", "When at least as good as the current model"
    ALWAYS = "always", "Always (the newest run becomes current)"


class Verbosity(models.IntegerChoices):
    SILENT = 0, "Silent"
    PROGRESS_BAR = 1, "Progress bar"
    ONE_LINE_PER_EPOCH = 2, "One line per epoch"


def weights_file_path(instance, filename: str) -> str:
    name = get_valid_filename(PurePosixPath(filename).name)[-80:] or "weights.h5"
    return f"weights/{uuid.uuid4().hex[:12]}-{name}"


def dataset_seed(dataset) -> int:
    """The seed of a dataset whose seed is blank: its id, fixed for its life (random before it has one)."""
    return int(dataset.pk) if dataset.pk is not None else random.randrange(2**31)


MODEL, TRAINING, AUGMENTATION = "Model", "Training options", "Augmentation (only while training)"
ANSWERS = "Answers"
# The run's field is the dataset's, without what only editing needs (validators, help, blank).
SAME = object()


@dataclass(frozen=True)
class Option:
    """One training option: the dataset's field, the run's copy, where the admin shows it, what it feeds."""

    name: str
    field: models.Field
    fieldset: str
    # None: not copied to the run as a field (an augmentation's goes into the run's `augmentation`; another
    # is read from the dataset when the model answers, so changing it needs no new training).
    snapshot: models.Field | None | object = SAME
    fit: str | None = None  # the ml.fit.FitOptions argument it is
    augmentation: str | None = None  # its key in the run's `augmentation`
    copy: Callable[[Any], Any] | None = None  # the run's value from the dataset, if not the field's value
    in_run_api: bool = True  # shown with the run in the API

    def snapshot_field(self) -> models.Field | None:
        if self.snapshot is not SAME:
            return self.snapshot
        name, path, args, kwargs = self.field.deconstruct()
        for only_for_editing in ("validators", "help_text", "blank", "null", "verbose_name"):
            kwargs.pop(only_for_editing, None)
        return type(self.field)(*args, **kwargs)

    def value(self, dataset) -> Any:
        return self.copy(dataset) if self.copy is not None else getattr(dataset, self.name)


OPTIONS: tuple[Option, ...] = (
    Option(
        "architecture",
        models.CharField(
            "starting point",
            max_length=30,
            choices=Architecture.choices,
            default=Architecture.AUTO,
            help_text="Automatic (the default) tries, within its time budget, a network pretrained on ImageNet "
            "with a new head trained on your images, your model code trained from scratch, and fine-tuning, "
            "and keeps the best on the validation images; the run page shows what was tried and why the winner "
            "won. Or choose: your model code (below), a built-in network trained from scratch, or a pretrained "
            "network (best for photos; 224 px images).",
        ),
        MODEL,
        snapshot=models.CharField(max_length=30, choices=Architecture.choices, default=Architecture.CODE),
    ),
    Option(
        "weights_file",
        models.FileField(
            "starting weights",
            upload_to=weights_file_path,
            max_length=255,
            blank=True,
            validators=[FileExtensionValidator(["h5", "hdf5", "keras"])],
            help_text="Optional, for MobileNetV3-Small and EfficientNet-B0: a Keras weights file of the network "
            "without its top (e.g. saved with backbone.save_weights('x.weights.h5')) to start from instead of "
            "random weights. Nothing is ever downloaded.",
        ),
        MODEL,
        snapshot=models.CharField(max_length=255, blank=True, help_text="The starting weights, under media."),
        copy=lambda dataset: dataset.weights_file.name or "",
    ),
    Option(
        "fine_tune_seconds",
        models.PositiveIntegerField(
            "fine-tuning time",
            default=0,
            validators=[MaxValueValidator(24 * 3600)],
            help_text="Pretrained starting points: after training the new head, fine-tune the top of the network "
            "for up to this many seconds (0: the head only, which takes seconds).",
        ),
        MODEL,
    ),
    Option(
        "auto_seconds",
        models.PositiveIntegerField(
            "automatic time budget",
            default=180,
            validators=[MinValueValidator(10), MaxValueValidator(24 * 3600)],
            help_text="Automatic starting point: seconds to spend trying candidates. The pretrained head comes "
            "first (seconds once its features are cached), then the model code, then fine-tuning with the time "
            "left.",
        ),
        MODEL,
    ),
    Option(
        "process",
        models.TextField(
            "model code",
            default=DEFAULT_PROCESS,
            help_text=(
                "Python that adds layers to <code>model</code> (a keras.Sequential holding the input, "
                "scaled to 0..1). The final softmax layer is added for you. In scope: model, keras, "
                "layers, every keras.layers name, image_size, channels, num_classes."
            ),
        ),
        MODEL,
        snapshot=models.TextField("model code"),
        in_run_api=False,
    ),
    Option(
        "epochs",
        models.PositiveIntegerField(
            default=10,
            validators=[MinValueValidator(1), MaxValueValidator(1000)],
            help_text="Passes over the training images.",
        ),
        TRAINING,
        snapshot=models.PositiveIntegerField(),
        fit="epochs",
    ),
    Option(
        "batch_size",
        models.PositiveIntegerField(
            default=32,
            validators=[MinValueValidator(1), MaxValueValidator(4096)],
            help_text="Images per training step.",
        ),
        TRAINING,
        snapshot=models.PositiveIntegerField(),
        fit="batch_size",
    ),
    Option(
        "image_size",
        models.PositiveIntegerField(
            default=64,
            validators=[MinValueValidator(8), MaxValueValidator(1024)],
            help_text="Images are resized to this many pixels wide and high.",
        ),
        TRAINING,
        snapshot=models.PositiveIntegerField(),
    ),
    Option(
        "color_mode",
        models.CharField(
            max_length=10,
            choices=ColorMode.choices,
            default=ColorMode.RGB,
            help_text="Whether the model sees colour or grayscale images.",
        ),
        TRAINING,
        snapshot=models.CharField(max_length=10, choices=ColorMode.choices),
    ),
    Option(
        "learning_rate",
        models.FloatField(
            default=0.001,
            validators=[MinValueValidator(1e-6), MaxValueValidator(1.0)],
            help_text="Adam's step size. Lower it (0.0001) if the loss jumps around or becomes NaN.",
        ),
        TRAINING,
    ),
    Option(
        "validation_split",
        models.FloatField(
            default=0.2,
            validators=[MinValueValidator(0.0), MaxValueValidator(0.9)],
            help_text="Fraction of each label's images held out to validate the model (0 for none).",
        ),
        TRAINING,
        snapshot=models.FloatField(),
        fit="validation_split",
    ),
    Option(
        "test_split",
        models.FloatField(
            default=0.0,
            validators=[MinValueValidator(0.0), MaxValueValidator(0.5)],
            help_text="Fraction of each label's images held out from training and validation, "
            "evaluated once at the end (0 for none).",
        ),
        TRAINING,
        fit="test_split",
    ),
    Option(
        "seed",
        models.PositiveIntegerField(
            null=True,
            blank=True,
            validators=[MaxValueValidator(2**31 - 1)],
            help_text="Seed of the split and of training. Blank: a seed fixed for this dataset (its id), so every "
            "run holds out the same images and the promotion policy compares runs on them. The same images and "
            "seed give the same split and the same model.",
        ),
        TRAINING,
        snapshot=models.PositiveIntegerField(default=0),
        fit="seed",
        copy=lambda dataset: dataset.seed if dataset.seed is not None else dataset_seed(dataset),
    ),
    Option(
        "early_stopping_patience",
        models.PositiveSmallIntegerField(
            default=5,
            validators=[MaxValueValidator(1000)],
            help_text="Stop when the validation loss has not improved for this many epochs (0: never stop early). "
            "The best epoch's weights are kept either way.",
        ),
        TRAINING,
        snapshot=models.PositiveSmallIntegerField(default=0),
        fit="patience",
    ),
    Option(
        "reduce_lr_on_plateau",
        models.BooleanField(
            "reduce learning rate on plateau",
            default=False,
            help_text="Halve the learning rate when the validation loss stalls for a few epochs.",
        ),
        TRAINING,
        fit="reduce_lr_on_plateau",
    ),
    Option(
        "balance_classes",
        models.BooleanField(
            default=False,
            help_text="Weight each label inversely to its number of images, so rare labels count as much.",
        ),
        TRAINING,
        fit="balance_classes",
    ),
    Option(
        "promotion_policy",
        models.CharField(
            max_length=20,
            choices=PromotionPolicy.choices,
            default=PromotionPolicy.WHEN_BETTER,
            help_text="When a finished run becomes the current model: only when its accuracy on the held-out "
            "images is at least the current model's (otherwise it is kept as a version you can promote), or always.",
        ),
        TRAINING,
        snapshot=models.CharField(max_length=20, choices=PromotionPolicy.choices, default=PromotionPolicy.WHEN_BETTER),
    ),
    Option(
        "verbose",
        models.PositiveSmallIntegerField(
            choices=Verbosity.choices,
            default=Verbosity.ONE_LINE_PER_EPOCH,
            help_text="How much Keras writes to the run's log.",
        ),
        TRAINING,
        snapshot=models.PositiveSmallIntegerField(choices=Verbosity.choices),
        fit="verbose",
        in_run_api=False,
    ),
    Option(
        "augment_flip",
        models.CharField(
            "random flip",
            max_length=30,
            choices=Flip.choices,
            default=Flip.NONE,
            help_text="Augmentation, applied only while training: flip images at random.",
        ),
        AUGMENTATION,
        snapshot=None,
        augmentation="flip",
    ),
    Option(
        "augment_rotation",
        models.FloatField(
            "random rotation",
            default=0.0,
            validators=[MinValueValidator(0.0), MaxValueValidator(0.5)],
            help_text="Rotate by up to this fraction of a full turn (0.05 = 18 degrees; 0 = off).",
        ),
        AUGMENTATION,
        snapshot=None,
        augmentation="rotation",
    ),
    Option(
        "augment_zoom",
        models.FloatField(
            "random zoom",
            default=0.0,
            validators=[MinValueValidator(0.0), MaxValueValidator(0.9)],
            help_text="Zoom in or out by up to this fraction (0 = off).",
        ),
        AUGMENTATION,
        snapshot=None,
        augmentation="zoom",
    ),
    Option(
        "augment_contrast",
        models.FloatField(
            "random contrast",
            default=0.0,
            validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
            help_text="Change contrast by up to this fraction (0 = off).",
        ),
        AUGMENTATION,
        snapshot=None,
        augmentation="contrast",
    ),
)

OPTIONS += (
    Option(
        "unknown_below",
        models.FloatField(
            "answer unknown below",
            default=0.0,
            validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
            help_text="When the model's (calibrated) confidence in its best label is below this, the Test page, "
            'the API and the exports\' metadata answer "unknown", the top labels still listed (0: always '
            "answer). Pick it from a run's reliability curve: the share of images answered and their accuracy "
            "at each threshold. Takes effect at once, with no new training.",
        ),
        ANSWERS,
        snapshot=None,
    ),
)

# What the API shows of each: a dataset's options, and a run's snapshot of them (`augmentation` is one field).
DATASET_FIELDS = [option.name for option in OPTIONS]
RUN_FIELDS = [option.name for option in OPTIONS if option.snapshot is not None and option.in_run_api]
RUN_SNAPSHOT_FIELDS = [option.name for option in OPTIONS if option.snapshot is not None] + ["augmentation"]


def add_fields(dataset_model: type[models.Model], run_model: type[models.Model]) -> None:
    """Give the dataset model its option fields and the run model its copies (models.py calls this)."""
    for option in OPTIONS:
        dataset_model.add_to_class(option.name, option.field)
        snapshot = option.snapshot_field()
        if snapshot is not None:
            run_model.add_to_class(option.name, snapshot)


def augmentation_of(dataset) -> dict:
    """The dataset's augmentation options as the run keeps them: {"flip": …, "rotation": …}."""
    return {option.augmentation: getattr(dataset, option.name) for option in OPTIONS if option.augmentation}


def snapshot_of(dataset) -> dict:
    """The options a run copies from its dataset when it is created."""
    values = {option.name: option.value(dataset) for option in OPTIONS if option.snapshot is not None}
    return {**values, "augmentation": augmentation_of(dataset)}


def fit_arguments(run) -> dict:
    """The run's options that ml.fit.FitOptions takes, by their names there."""
    return {option.fit: getattr(run, option.name) for option in OPTIONS if option.fit}


def fieldsets(*titles: str) -> list[tuple[str, dict]]:
    """The admin's fieldsets of the dataset's options, in declaration order."""
    return [(title, {"fields": [option.name for option in OPTIONS if option.fieldset == title]}) for title in titles]
