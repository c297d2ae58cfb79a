"""Datasets: a named collection of images, its items, its label counts and its zip imports.

The models belong to the Django app "management" (app_label), which imports them in management/models.py;
their tables and migrations are that app's. DataSet's training options are fields added there too.
"""

import re
import unicodedata
import uuid
from functools import cached_property
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.fields.files import ImageFieldFile

from jobs.models import Job
from management.options import PRETRAINED_ARCHITECTURES, Architecture, augmentation_of
from ml.backbones import check_image_size
from ml.images import image_file_name, image_format

if TYPE_CHECKING:
    from training.models import TrainingRun


MODEL_CODE_PERMISSION = "management.change_model_code"


def item_image_path(instance: "DataSetItem", filename: str, *, own_thumbnail: bool = False) -> str:
    """datasets/<dataset>/<random>.<ext>: the extension is the server's (see ServerNamedImageField);
    anything but a short alphanumeric extension becomes .bin, which is only ever downloaded. An image
    small enough to be its own thumbnail (`ml.images.is_own_thumbnail`) says so in its name
    (<random>-t.<ext>), so its thumbnail URL is its own without a file or a lookup."""
    extension = PurePosixPath(filename).suffix.lower().lstrip(".")
    if not re.fullmatch(r"[a-z0-9]{1,5}", extension):
        extension = "bin"
    mark = OWN_THUMBNAIL_MARK if own_thumbnail else ""
    return f"datasets/{instance.dataset_id}/{uuid.uuid4().hex[:16]}{mark}.{extension}"


THUMBNAIL_FOLDER = "thumbnails"
OWN_THUMBNAIL_MARK = "-t"


def thumbnail_name(image_name: str) -> str:
    """The thumbnail of datasets/<dataset>/<random>.<ext>: datasets/<dataset>/thumbnails/<random>.webp,
    a name the server made (from the image's), served by the private media view like the image; an
    image named as its own thumbnail (<random>-t.<ext>) is its thumbnail."""
    path = PurePosixPath(image_name)
    if path.stem.endswith(OWN_THUMBNAIL_MARK):
        return image_name
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


def dataset_name_check(name: str) -> None:
    """A dataset's name holds no control or invisible characters (a dataset being deleted is renamed with
    one, so no name a person gives can be the name of a dataset being deleted)."""
    if any(unicodedata.category(char) in {"Cc", "Cf", "Cs"} for char in name or ""):
        raise ValidationError("a name cannot hold control or invisible characters")


class VisibleDataSets(models.Manager):
    """Datasets that are not being deleted: every page, list, count and lookup reads these."""

    def get_queryset(self):
        return super().get_queryset().filter(deleting=False)


class DataSet(models.Model):
    """A named collection of labelled images and the options for training a model on it."""

    name = models.CharField(max_length=200, unique=True, validators=[dataset_name_check])
    deleting = models.BooleanField(
        default=False,
        editable=False,
        help_text='Being deleted by a job of kind "deletion": hidden from every page, list and answer.',
    )
    # The training options: fields added from management/options.py (management/models.py adds them).
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

    # The default manager (admin, API, forms, unique checks) sees no dataset being deleted; the base
    # manager (a run's or an item's `.dataset`) and `all_objects` see every one.
    objects = VisibleDataSets()
    all_objects = models.Manager()

    class Meta:
        app_label = "management"
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
        return self.runs.defer(*self.runs.model.HEAVY_FIELDS).order_by("-created_at", "-id").first()


class DataSetItem(models.Model):
    """One image of a dataset, labelled or not (an empty label: unlabelled, left out of training)."""

    dataset = models.ForeignKey("management.DataSet", on_delete=models.CASCADE, related_name="items")
    label = models.CharField(max_length=100, blank=True, help_text="Empty: unlabelled (not trained on).")
    image = ServerNamedImageField(upload_to=item_image_path, max_length=255)
    original_name = models.CharField(
        max_length=255, blank=True, help_text="The file's name as it was uploaded (the stored name is the server's)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "management"
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

    dataset = models.ForeignKey("management.DataSet", on_delete=models.CASCADE, related_name="label_counts")
    label = models.CharField(max_length=100)
    count = models.PositiveIntegerField(default=0)

    class Meta:
        app_label = "management"
        ordering = ["dataset", "label"]
        constraints = [models.UniqueConstraint(fields=["dataset", "label"], name="one_count_per_dataset_and_label")]

    def __str__(self) -> str:
        return f"{self.label}: {self.count}"


class ImportJob(Job):
    """A zip of images uploaded to a dataset and imported in its own process (a job of kind "import")."""

    KIND = "import"

    dataset = models.ForeignKey("management.DataSet", on_delete=models.CASCADE, related_name="import_jobs")
    upload = models.FileField(upload_to="imports", max_length=255, blank=True, help_text="The zip, until imported.")
    original_name = models.CharField(max_length=255, blank=True)
    label = models.CharField(max_length=100, blank=True, help_text="The label of every image, if given.")
    unlabelled = models.BooleanField(default=False, help_text="Import every image without a label.")
    report = models.JSONField(default=dict, blank=True, help_text="What became of each file of the zip.")

    class Meta(Job.Meta):
        app_label = "management"
        verbose_name = "zip import"

    def __str__(self) -> str:
        return f"Import {self.pk} into {self.dataset}"


class DataSetDeletion(Job):
    """A dataset being deleted in its own process (a job of kind "deletion"): its rows in batches, each
    in a short transaction, then its files and folders, then the dataset's row. Killed midway, it is
    queued again and goes on from what is left (see the kind's `lost_event`)."""

    KIND = "deletion"

    # SET_NULL: the job outlives the dataset's row, which it deletes last.
    dataset = models.ForeignKey(
        "management.DataSet", null=True, blank=True, on_delete=models.SET_NULL, related_name="deletions"
    )
    dataset_number = models.PositiveIntegerField(help_text="The dataset's id, kept once its row is gone.")
    dataset_name = models.CharField(max_length=200, help_text="The dataset's name when it was deleted.")
    images = models.PositiveIntegerField(default=0, help_text="Images of the dataset when it was deleted.")
    images_deleted = models.PositiveIntegerField(default=0)

    class Meta(Job.Meta):
        app_label = "management"
        verbose_name = "dataset deletion"

    def __str__(self) -> str:
        return f"Deletion {self.pk} of {self.dataset_name}"
