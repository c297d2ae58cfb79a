"""Use cases for datasets and their images: add one image, import a zip, count labels, delete.

A zip sent through the web is a job of kind "import" (dataset_import_request stores it and queues the
job; import_job_execute decodes its entries in the job's own process); dataset_import_zip imports one
in the caller's process (the shell, the demo, tests). Deleting a dataset is a job of kind "deletion" too:
dataset_delete marks it (hidden at once) and queues it; dataset_deletion_execute deletes it in batches.
"""

from __future__ import annotations

import errno
import logging
import shutil
import unicodedata
import uuid
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Count, F, IntegerField, OuterRef, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from datasets.models import (
    DataSet,
    DataSetDeletion,
    DataSetItem,
    ImportJob,
    LabelCount,
    item_image_path,
    original_file_name,
    thumbnail_image_prefix,
    thumbnail_name,
)
from health.models import HealthCheck, HealthDismissal
from jobs import lifecycle, runner
from labelling.models import Suggestion, SuggestionJob
from management.budgets import image_too_large, pixel_budget_charge, pixels_budget_charge
from management.errors import Conflict, InsufficientStorage, NotFound, ServiceError
from management.journal import MediaJournal, media_journal
from ml.images import (
    ImageInfo,
    InspectedImage,
    TooManyPixels,
    image_file_name,
    inspect_image,
    make_thumbnail,
    open_image,
    verify_image,
)
from serving.models import ExportJob
from training.models import TrainingRun

MAX_LABEL_LENGTH = DataSetItem._meta.get_field("label").max_length
UNLABELLED = ""  # an item's label when it has none: kept, shown, suggested for, never trained on
log = logging.getLogger(__name__)


@dataclass
class ImportReport:
    """What a zip import added, per label, and which entries it skipped and why."""

    counts: dict[str, int] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    unlabelled: int = 0

    @property
    def added(self) -> int:
        return sum(self.counts.values()) + self.unlabelled

    def as_dict(self) -> dict:
        return {"added": self.added, "counts": self.counts, "unlabelled": self.unlabelled, "skipped": self.skipped}


# Unicode categories refused in a label: controls (Cc), format characters (Cf: the bidirectional
# overrides, isolates and marks U+202A-202E, U+2066-2069, U+200E/F, U+061C; the zero-width U+200B-200D,
# U+2060, U+FEFF; soft hyphens...) and lone surrogates (Cs). Each makes two labels that look alike
# differ, or makes a label display as another text.
REFUSED_CATEGORIES = {"Cc": "a control character", "Cf": "an invisible or direction-changing character"}


def clean_label(label: str, *, field_name: str = "label") -> str:
    """The one check of a label, wherever it comes in: API, admin, zip label and folder names, model import.

    NFC-normalised (a label typed as 'é' or as 'e' + combining accent is one label), whitespace runs
    made one space; control, invisible and direction-changing characters are refused, naming the field.
    """
    label = " ".join(unicodedata.normalize("NFC", label or "").split())
    if not label:
        raise ServiceError("a label cannot be empty", field=field_name)
    for character in label:
        category = unicodedata.category(character)
        if category in REFUSED_CATEGORIES or category == "Cs":
            kind = REFUSED_CATEGORIES.get(category, "a lone surrogate")
            name = unicodedata.name(character, "")
            raise ServiceError(
                f"a label cannot contain {kind}: U+{ord(character):04X}{f' {name}' if name else ''}",
                field=field_name,
            )
    if len(label) > MAX_LABEL_LENGTH:
        raise ServiceError(f"a label has at most {MAX_LABEL_LENGTH} characters", field=field_name)
    return label


def label_or_unlabelled(label: str | None, *, field_name: str = "label") -> str:
    """A label checked by clean_label, or "" (unlabelled) when none is given or it is only whitespace."""
    if label is None or not label.strip():
        return UNLABELLED
    return clean_label(label, field_name=field_name)


def image_size_check(data: bytes, *, name: str, field_name: str = "image") -> None:
    """Refuse an empty or oversize file before any decoding."""
    if not data:
        raise ServiceError(f"{name}: the file is empty", field=field_name)
    if len(data) > settings.KERASUI_MAX_IMAGE_BYTES:
        raise ServiceError(
            f"{name}: the file is larger than {settings.KERASUI_MAX_IMAGE_BYTES} bytes", field=field_name
        )


def image_check(data: bytes, *, name: str, field_name: str = "image", user_id: int | None = None) -> ImageInfo:
    """Refuse anything that is not a whole, decodable image of acceptable size; say what it is.

    Its pixels are held to the budgets (413/429, management/budgets.py) from its header, before decoding."""
    image_size_check(data, name=name, field_name=field_name)
    pixel_budget_charge(images=[(name, data)], user_id=user_id, field_name=field_name)
    try:
        return verify_image(data, max_pixels=settings.KERASUI_MAX_IMAGE_PIXELS)
    except ValueError as error:
        raise ServiceError(f"{name}: {error}", field=field_name) from None


def image_inspect(data: bytes, *, name: str, field_name: str = "image", user_id: int | None = None) -> InspectedImage:
    """`image_check`'s checks (whole and decodable, its pixels within the budgets from its header before
    decoding) and the image's thumbnail, from one opening and one decoding of the image: what a new
    image goes through (one image, or each of a zip's)."""
    image_size_check(data, name=name, field_name=field_name)
    try:
        image = open_image(data, settings.KERASUI_MAX_IMAGE_PIXELS or None)
    except TooManyPixels as error:
        raise image_too_large(name=name, error=error, field_name=field_name) from None
    except ValueError as error:
        raise ServiceError(f"{name}: {error}", field=field_name) from None
    with image:
        pixels_budget_charge(pixels=image.width * image.height, user_id=user_id, field_name=field_name)
        try:
            return inspect_image(image, size_bytes=len(data))
        except ValueError as error:
            raise ServiceError(f"{name}: {error}", field=field_name) from None


def _item_files_write(item: DataSetItem, data: bytes, inspected: InspectedImage, journal: MediaJournal) -> None:
    """Keep a new image and its thumbnail (none when it is its own) under names the server makes
    (random, from the detected format), journalled first; `item.image` then names the image."""
    storage = item.image.storage
    # item_image_path is the field's upload_to: a fresh random name, so no storage is asked whether it is free.
    name = item_image_path(item, image_file_name(inspected.info.format), own_thumbnail=inspected.own_thumbnail)
    item.image = journal.create(storage, name, data)
    if inspected.thumbnail is not None:
        name = thumbnail_name(item.image.name)
        saved = journal.create(storage, name, inspected.thumbnail)
        if saved != name:  # a file had that name already: keep it
            storage.delete(saved)


def _thumbnail_save(storage, name: str, data: bytes, journal: MediaJournal | None = None) -> bool:
    """Write the thumbnail `name` from the image `data` unless it exists; False when the image cannot be
    made smaller (the lists then show nothing for it, never the original)."""
    if storage.exists(name):
        return True
    try:
        thumbnail = make_thumbnail(data, max_pixels=settings.KERASUI_MAX_IMAGE_PIXELS)
    except ValueError:
        return False
    if journal is not None:
        journal.add(name)
    saved = storage.save(name, ContentFile(thumbnail))
    if saved != name:  # another request made it meanwhile: keep theirs
        storage.delete(saved)
    return True


def dataset_item_thumbnail_source(*, name: str) -> str | None:
    """The media file that answers a request for the thumbnail `name` when it has no file: the thumbnail
    made now from the item's original (items added before thumbnails existed), kept, so this is done once
    per image; None when `name` is no item's thumbnail or none can be made. (An image small enough to be
    its own thumbnail is named so at import, and its thumbnail URL is its own: it never comes here.)"""
    prefix = thumbnail_image_prefix(name)
    if prefix is None:
        return None
    item = DataSetItem.objects.filter(image__startswith=prefix).first()
    if item is None or thumbnail_name(item.image.name) != name:
        return None
    storage = item.image.storage
    if storage.exists(name):
        return name
    try:
        with item.image.open("rb") as file:
            data = file.read()
    except OSError:
        return None
    return name if _thumbnail_save(storage, name, data) else None


def _files_of(item: DataSetItem) -> list[tuple[object, str]]:
    """An item's files: its image and its thumbnail."""
    if not item.image.name:
        return []
    names = dict.fromkeys([item.image.name, thumbnail_name(item.image.name)])  # one when its own thumbnail
    return [(item.image.storage, name) for name in names]


def dataset_item_create(
    *, dataset: DataSet, label: str, file: BinaryIO, name: str = "", user_id: int | None = None
) -> DataSetItem:
    """Add one verified image to a dataset, stored under a name the server gives it from its format;
    `name` (the sender's) is kept as the item's original name. `user_id`: whose pixel budget it spends.
    An empty `label` adds it unlabelled."""
    name = name or getattr(file, "name", "") or ""
    label = label_or_unlabelled(label)
    data = file.read()
    inspected = image_inspect(data, name=name or "image", user_id=user_id)
    item = DataSetItem(dataset=dataset, label=label, original_name=original_file_name(name))
    with media_journal() as journal:
        try:
            _item_files_write(item, data, inspected, journal)
            with transaction.atomic():
                item.save()
                label_counts_add(changes=Counter({(dataset.pk, item.label): 1}))
                if item.label == UNLABELLED:
                    _suggestions_follow(dataset_id=dataset.pk)
        except BaseException:
            for storage, stored in _files_of(item):
                storage.delete(stored)
            raise
    return item


def dataset_item_update(
    *, item: DataSetItem, label: str | None = None, dataset: DataSet | None = None, file: BinaryIO | None = None
) -> DataSetItem:
    """Change an item's label (empty: unlabelled), move it to another dataset, or replace its image
    (verified first)."""
    was = (item.dataset_id, item.label)
    if label is not None:
        item.label = label_or_unlabelled(label)
    if dataset is not None:
        item.dataset = dataset
    old_files: list[tuple[object, str]] = []
    if file is not None:
        name = getattr(file, "name", "") or ""
        data = file.read()
        inspected = image_inspect(data, name=name or "image")
        old_files = _files_of(item)
        item.original_name = original_file_name(name)
    with media_journal() as journal:
        try:
            if file is not None:
                _item_files_write(item, data, inspected, journal)
            with transaction.atomic():
                item.save()
                changes = Counter({was: -1})
                changes[(item.dataset_id, item.label)] += 1
                label_counts_add(changes=changes)
                _suggestions_after_change(items=[item], was={item.pk: was})
                if old_files:
                    delete_files_on_commit(old_files)
        except BaseException:
            # The new image's files, if any was written (never the old ones: they stay the item's).
            for storage, stored in _files_of(item) if old_files else []:
                if stored not in {name for _, name in old_files}:
                    storage.delete(stored)
            raise
    return item


@transaction.atomic
def dataset_item_save(*, item: DataSetItem) -> DataSetItem:
    """Save an item a form has filled in (the admin's add and change pages), keeping the counts."""
    was = DataSetItem.objects.filter(pk=item.pk).values_list("dataset_id", "label").first() if item.pk else None
    item.label = label_or_unlabelled(item.label)
    item.save()
    changes = Counter({(item.dataset_id, item.label): 1})
    if was is not None:
        changes[was] -= 1
    label_counts_add(changes=changes)
    _suggestions_after_change(items=[item], was={item.pk: was} if was else {})
    return item


def _suggestions_follow(*, dataset_id: int) -> None:
    """Images without a label arrived: queue the job that suggests theirs (after the commit)."""
    from labelling.suggestion_jobs import suggestions_request_on_commit

    suggestions_request_on_commit(dataset_id=dataset_id)


def suggestions_mark_labelled(*, items: list[DataSetItem], was_unlabelled: set[int]) -> None:
    """A suggestion outlives its image's labelling, marked with when it was labelled, so that the dataset
    page can say whether the model was right; an image unlabelled again is back in the queue."""
    now = timezone.now()
    labelled = [item.pk for item in items if item.label != UNLABELLED and item.pk in was_unlabelled]
    Suggestion.objects.filter(item__in=labelled).update(labelled_at=now)
    unlabelled = [item.pk for item in items if item.label == UNLABELLED]
    Suggestion.objects.filter(item__in=unlabelled, labelled_at__isnull=False).update(labelled_at=None)


def _suggestions_after_change(*, items: list[DataSetItem], was: dict) -> None:
    """A labelled item's suggestion is marked labelled; an item that moved loses it (it was the other
    dataset's model's); an item that became unlabelled, or moved, needs one."""
    moved = [item.pk for item in items if item.pk in was and was[item.pk][0] != item.dataset_id]
    Suggestion.objects.filter(item__in=moved).delete()
    suggestions_mark_labelled(
        items=items, was_unlabelled={pk for pk, before in was.items() if before and before[1] == UNLABELLED}
    )
    for item in items:
        before = was.get(item.pk)
        if item.label == UNLABELLED and (before is None or before != (item.dataset_id, UNLABELLED)):
            _suggestions_follow(dataset_id=item.dataset_id)


def _zip_entry_label(parts: tuple[str, ...], label: str | None) -> tuple[str | None, str | None]:
    """The label for an entry and, when it has none, the reason it is skipped."""
    if label:
        return label, None
    if len(parts) < 2:
        return None, "not in a folder: type a label, or put each image in a folder named after its label"
    try:
        return clean_label(parts[0]), None
    except ServiceError as error:
        return None, f"the folder name is not a usable label: {error.message}"


def _is_ignored(parts: tuple[str, ...]) -> bool:
    """Entries nobody means to import: macOS resource forks, hidden files and folders."""
    return parts[0] == "__MACOSX" or any(part.startswith(".") for part in parts)


def _zip_entries(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The zip's file entries, refused (naming the limit) when it has too many, too many bytes, or is a
    bomb. Reads the central directory only: nothing is decompressed."""
    entries = [info for info in archive.infolist() if not info.is_dir()]
    if len(entries) > settings.KERASUI_MAX_ZIP_ENTRIES:
        raise ServiceError(
            f"the zip has {len(entries)} entries; at most {settings.KERASUI_MAX_ZIP_ENTRIES} are accepted",
            field="file",
        )
    total = sum(info.file_size for info in entries)
    if total > settings.KERASUI_MAX_ZIP_BYTES:
        raise ServiceError(
            f"the zip holds {total} bytes uncompressed; at most {settings.KERASUI_MAX_ZIP_BYTES} are accepted",
            field="file",
        )
    # Images barely compress; a zip that inflates hundreds of times is a zip bomb.
    compressed = sum(info.compress_size for info in entries)
    ratio = total / max(compressed, 1)
    if total > 1024 * 1024 and ratio > settings.KERASUI_MAX_ZIP_RATIO:
        raise ServiceError(
            f"the zip inflates {ratio:.0f} times ({compressed} bytes to {total}); at most "
            f"{settings.KERASUI_MAX_ZIP_RATIO} times is accepted (a zip bomb?)",
            field="file",
        )
    return entries


def _open_zip(file: BinaryIO) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError):
        raise ServiceError("the file is not a zip archive", field="file") from None


class ImportStopped(Exception):
    """The import job was cancelled while its entries were read: nothing of it is kept."""


def dataset_import_zip(
    *,
    dataset: DataSet,
    file: BinaryIO,
    label: str | None = None,
    unlabelled: bool = False,
    progress: Callable[[int, int], bool] | None = None,
) -> ImportReport:
    """Import every image of a zip, labelled by `label` or else by its top-level folder; with `unlabelled`,
    every image without a label (its folders are ignored).

    Entries that are not usable images are skipped and reported. Either every accepted image is
    saved with its row, or (on an unexpected error, or `progress(done, total)` answering False) nothing
    is left behind.
    """
    label = None if unlabelled else (clean_label(label) if label and label.strip() else None)
    with _open_zip(file) as archive:
        entries = _zip_entries(archive)
        report = ImportReport()
        items: list[DataSetItem] = []
        with media_journal() as journal:
            _import_entries(archive, entries, dataset, label, report, items, journal, progress, unlabelled)
    counts = Counter(item.label for item in items)
    report.unlabelled = counts.pop(UNLABELLED, 0)
    report.counts = dict(sorted(counts.items()))
    return report


@transaction.atomic
def dataset_import_request(
    *, dataset: DataSet, file, label: str | None = None, unlabelled: bool = False, user=None
) -> ImportJob:
    """Keep an uploaded zip and queue the job that imports it (202 for the API): the request only checks
    that it is a zip within the limits (its directory, nothing decoded) and stores it. `unlabelled`: its
    images are imported without labels (a label given too is refused)."""
    if unlabelled and label and label.strip():
        raise ServiceError("give a label or ask for unlabelled images, not both", field="label")
    label = clean_label(label) if label and label.strip() else ""
    with _open_zip(file) as archive:
        _zip_entries(archive)
    file.seek(0)
    try:
        name = default_storage.save(f"imports/{uuid.uuid4().hex}.zip", file)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise InsufficientStorage("the server's disk is full: the zip cannot be kept", field="file") from None
        raise
    fields = {
        "dataset": dataset,
        "upload": name,
        "original_name": original_file_name(getattr(file, "name", "")),
        "label": label,
        "unlabelled": unlabelled,
        "created_by": user if getattr(user, "pk", None) else None,
    }
    try:
        with transaction.atomic():
            job = lifecycle.job_create(kind=ImportJob.KIND, fields=fields)
    except IntegrityError:
        default_storage.delete(name)
        active = dataset.import_jobs.filter(status__in=ImportJob.ACTIVE).first()
        raise Conflict(
            f"import {getattr(active, 'pk', '')} of this dataset is still under way: one zip at a time; "
            "send this one when it has ended",
            field="file",
        ) from None
    runner.enqueue_on_commit(kind=ImportJob.KIND, job_id=job.pk)
    return job


def import_job_execute(*, job: ImportJob) -> None:
    """Import a claimed job's zip (the job kind's entry): succeeded with the per-file report, failed with
    the reason; the stored zip is deleted either way. Progress is written at most about once a second."""
    kind = ImportJob.KIND
    last = 0.0

    def progress(done: int, total: int) -> bool:
        nonlocal last
        import time

        if done < total and time.monotonic() - last < 1.0:
            return True
        last = time.monotonic()
        return lifecycle.job_progress(kind=kind, job_id=job.pk, phase="importing", progress=done / max(1, total))

    try:
        if DataSet.all_objects.filter(pk=job.dataset_id, deleting=True).exists():
            lifecycle.job_fail(kind=kind, job_id=job.pk, message="its dataset is being deleted: nothing was imported")
            return
        with job.upload.open("rb") as file:
            report = dataset_import_zip(
                dataset=job.dataset,
                file=file,
                label=job.label or None,
                unlabelled=job.unlabelled,
                progress=progress,
            )
        lifecycle.job_succeed(kind=kind, job_id=job.pk, report=report.as_dict())
    except ImportStopped:
        log.info("Import %s was cancelled: nothing of it was kept.", job.pk)
    except ServiceError as error:
        lifecycle.job_fail(kind=kind, job_id=job.pk, message=error.message)
    finally:
        job.upload.storage.delete(job.upload.name)


def _import_entries(
    archive: zipfile.ZipFile,
    entries: list[zipfile.ZipInfo],
    dataset: DataSet,
    label: str | None,
    report: ImportReport,
    items: list[DataSetItem],
    journal: MediaJournal,
    progress: Callable[[int, int], bool] | None = None,
    unlabelled: bool = False,
) -> None:
    """Save every usable entry's file, then all their rows in one transaction; on any error delete
    the files again (and a killed process's files are deleted by `media_journals_recover`)."""
    try:
        for number, info in enumerate(entries):
            if progress is not None and not progress(number, len(entries)):
                raise ImportStopped
            # "..", "." and leading slashes mean nothing inside a dataset: drop them.
            name = info.filename.replace("\\", "/")
            parts = tuple(part for part in name.split("/") if part not in {"", ".", ".."})
            if not parts or _is_ignored(parts):
                continue
            reason = None
            if info.file_size > settings.KERASUI_MAX_IMAGE_BYTES:
                reason = f"larger than {settings.KERASUI_MAX_IMAGE_BYTES} bytes"
            else:
                try:
                    data = archive.read(info)
                    inspected = image_inspect(data, name=info.filename)
                except ServiceError as error:
                    reason = error.message.removeprefix(f"{info.filename}: ")
                except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as error:
                    reason = f"cannot be extracted ({error})"
            entry_label = None
            if reason is None and unlabelled:
                entry_label = UNLABELLED
            elif reason is None:
                entry_label, reason = _zip_entry_label(parts, label)
            if reason is not None:
                report.skipped.append({"name": info.filename, "reason": reason})
                continue
            item = DataSetItem(dataset=dataset, label=entry_label, original_name=original_file_name(parts[-1]))
            # The server names the file from its format; the entry's name is kept only as data. Listed
            # before its files are written, so that whatever fails deletes what was written of them.
            items.append(item)
            _item_files_write(item, data, inspected, journal)
        with transaction.atomic():
            DataSetItem.objects.bulk_create(items, batch_size=500)
            label_counts_add(changes=Counter((dataset.pk, item.label) for item in items))
            if any(item.label == UNLABELLED for item in items):
                _suggestions_follow(dataset_id=dataset.pk)
    except OSError as error:
        _delete_images(items)
        if error.errno == errno.ENOSPC:
            raise InsufficientStorage(
                "the server's disk is full: nothing of this zip was imported", field="file"
            ) from None
        raise
    except BaseException:
        _delete_images(items)
        raise


def _delete_images(items: list[DataSetItem]) -> None:
    for item in items:
        for storage, name in _files_of(item):
            storage.delete(name)


def label_counts_add(*, changes: Counter) -> None:
    """Add `changes` ((dataset id, label) -> images added, negative for images removed) to the counts kept
    as data. Called inside the transaction of the write that makes the change, so the counts and the
    items commit or roll back together; the datasets' rows are locked first (in id order) so that two
    writers of one dataset's counts take turns instead of both creating a label's row."""
    changes = Counter({key: delta for key, delta in changes.items() if delta})
    if not changes:
        return
    dataset_ids = sorted({dataset_id for dataset_id, _ in changes})
    list(DataSet.objects.select_for_update().filter(pk__in=dataset_ids).order_by("pk").values_list("pk", flat=True))
    for (dataset_id, label), delta in sorted(changes.items()):
        updated = LabelCount.objects.filter(dataset_id=dataset_id, label=label).update(count=F("count") + delta)
        if not updated and delta > 0:
            LabelCount.objects.create(dataset_id=dataset_id, label=label, count=delta)
    LabelCount.objects.filter(dataset_id__in=dataset_ids, count__lte=0).delete()


def label_counts_recount(*, dataset: DataSet) -> dict[str, int]:
    """Count a dataset's images per label again from its items and keep that (the migration's backfill,
    and a repair after writes that went around this service). Reads every item: not for a request."""

    with transaction.atomic():
        list(DataSet.objects.select_for_update().filter(pk=dataset.pk).values_list("pk", flat=True))
        rows = dataset.items.order_by().values("label").annotate(count=Count("id"))
        counts = {row["label"]: row["count"] for row in rows}
        LabelCount.objects.filter(dataset=dataset).delete()
        LabelCount.objects.bulk_create(
            [LabelCount(dataset=dataset, label=label, count=count) for label, count in counts.items()]
        )
    return dict(sorted(counts.items()))


def dataset_label_counts(*, dataset: DataSet) -> dict[str, int]:
    """Number of images per label, labels sorted: the counts kept as data (one query, or none when
    prefetched with `datasets_with_counts`)."""
    rows = sorted((row.label, row.count) for row in dataset.label_counts.all() if row.count > 0 and row.label)
    return dict(rows)


def dataset_unlabelled_count(*, dataset: DataSet) -> int:
    """How many images of a dataset have no label: the counts kept as data (one query, or none when
    prefetched with `datasets_with_counts`)."""
    return sum(row.count for row in dataset.label_counts.all() if row.label == UNLABELLED)


def dataset_labels(*, dataset: DataSet) -> list[str]:
    """This dataset's labels, sorted: the order of a model's outputs."""
    return list(dataset_label_counts(dataset=dataset))


def datasets_with_counts(queryset: QuerySet | None = None, *, label_counts: bool = True) -> QuerySet:
    """Datasets as lists show them: `item_count` summed from the counts kept as data (a subquery over a
    dataset's labels, never its images), each dataset's label counts prefetched (unless `label_counts`
    is False: the API's answer does not show them, and the prefetch is one more query), and its current
    run joined without the run's per-image data."""
    total = (
        LabelCount.objects.filter(dataset=OuterRef("pk"))
        .order_by()
        .values("dataset")
        .annotate(total=Sum("count"))
        .values("total")
    )
    queryset = DataSet.objects.all() if queryset is None else queryset
    queryset = (
        queryset.annotate(item_count=Coalesce(Subquery(total, output_field=IntegerField()), Value(0)))
        .select_related("current_run")
        .defer(*(f"current_run__{name}" for name in TrainingRun.HEAVY_FIELDS))
    )
    return queryset.prefetch_related("label_counts") if label_counts else queryset


def delete_files_on_commit(names: list[tuple[object, str]]) -> None:
    """Delete (storage, name) files once the current transaction commits; empty names are skipped."""

    def delete() -> None:
        for storage, name in names:
            if name:
                storage.delete(name)

    transaction.on_commit(delete)


def delete_folders_on_commit(names: list[str]) -> None:
    """Delete folders of media (checkpoints, exports) once the current transaction commits."""

    def delete() -> None:
        for name in names:
            if name:
                storage_folder_delete(storage=default_storage, name=name)

    transaction.on_commit(delete)


def storage_folder_delete(*, storage, name: str, keep: frozenset[str] | set[str] = frozenset()) -> None:
    """Delete every file under the folder `name` of `storage` but those named in `keep`. A local folder
    with nothing to keep goes at once (one tree removal, not one call per file); a bucket has no folders,
    only names with a common prefix: its objects go in batches of a thousand when its storage allows."""
    if not keep:
        try:
            local = storage.path(name)
        except NotImplementedError:  # a bucket
            local = None
        if local is not None:
            shutil.rmtree(local, ignore_errors=True)
            return
        bucket = getattr(storage, "bucket", None)
        normalize = getattr(storage, "_normalize_name", None)
        if bucket is not None and normalize is not None:
            bucket.objects.filter(Prefix=normalize(name).rstrip("/") + "/").delete()
            return
    try:
        folders, files = storage.listdir(name)
    except (FileNotFoundError, NotADirectoryError):
        return
    for file in files:
        if f"{name}/{file}" not in keep:
            storage.delete(f"{name}/{file}")
    for folder in folders:
        storage_folder_delete(storage=storage, name=f"{name}/{folder}", keep=keep)
    if keep:
        return
    try:
        local = storage.path(name)
    except NotImplementedError:  # a bucket
        return
    shutil.rmtree(local, ignore_errors=True)


@transaction.atomic
def dataset_items_delete(*, items) -> int:
    """Delete items and, once that is committed, their image files."""
    items = list(items)
    files = [file for item in items for file in _files_of(item)]
    deleted = DataSetItem.objects.filter(pk__in=[item.pk for item in items])
    removed = Counter(deleted.values_list("dataset_id", "label"))
    deleted.delete()
    label_counts_add(changes=Counter({key: -count for key, count in removed.items()}))
    delete_files_on_commit(files)
    return len(items)


# The other jobs of a dataset, which a deletion ends: (kind, related name).
DATASET_JOBS = (
    (HealthCheck.KIND, "health_checks"),
    (ExportJob.KIND, "export_jobs"),
    (ImportJob.KIND, "import_jobs"),
    (SuggestionJob.KIND, "suggestion_jobs"),
)
# A marked dataset's name, which no one can give (names refuse control characters): its own name is free.
MARKED_NAME_PREFIX = "\x7f"
# Images deleted per transaction by a deletion job: each transaction holds SQLite's write lock briefly.
DELETION_BATCH = 2000


@transaction.atomic
def dataset_delete(*, dataset: DataSet, user=None) -> DataSetDeletion:
    """Mark a dataset as being deleted and queue the job that deletes it; refused while it is being
    trained. Constant work whatever its size: from this commit on it is gone from every page, list,
    count and answer, and its name is free (the marked row takes a name nobody chose); its other jobs
    end; the job deletes its rows in batches, then its files, then its row."""
    locked = DataSet.objects.select_for_update().filter(pk=dataset.pk).values_list("pk", "name").first()
    if locked is None:
        raise NotFound(f"dataset {dataset.pk} does not exist or is already being deleted", field="dataset")
    active = dataset.runs.filter(status__in=TrainingRun.ACTIVE).first()
    if active is not None:
        raise Conflict(
            f"dataset '{locked[1]}' is being trained (run {active.pk} is {active.status}): cancel the run first",
            field="dataset",
        )
    images = LabelCount.objects.filter(dataset_id=dataset.pk).aggregate(total=Sum("count"))["total"] or 0
    DataSet.all_objects.filter(pk=dataset.pk).update(
        deleting=True, name=f"{MARKED_NAME_PREFIX}{uuid.uuid4().hex} (being deleted)", updated_at=timezone.now()
    )
    for kind, related in DATASET_JOBS:
        for job_id in getattr(dataset, related).filter(status__in=DataSetDeletion.ACTIVE).values_list("pk", flat=True):
            lifecycle.job_fail(kind=kind, job_id=job_id, message=f"its dataset '{locked[1]}' was deleted")
    fields = {
        "dataset": dataset,
        "dataset_number": dataset.pk,
        "dataset_name": locked[1],
        "images": images,
        "created_by": user if getattr(user, "pk", None) else None,
    }
    job = lifecycle.job_create(kind=DataSetDeletion.KIND, fields=fields)
    runner.enqueue_on_commit(kind=DataSetDeletion.KIND, job_id=job.pk)
    dataset.deleting, dataset.name = True, locked[1]
    return job


def dataset_deletion_retry(*, dataset_id: int) -> DataSetDeletion:
    """Queue again the failed deletion of a dataset already marked (its rows and files go on from what is
    left); Conflict while one is queued or running."""
    job = DataSetDeletion.objects.filter(dataset_id=dataset_id).order_by("-id").first()
    if job is None:
        raise NotFound(f"dataset {dataset_id} has no deletion to run again", field="dataset")
    if job.is_active:
        raise Conflict(f"deletion {job.pk} of dataset {dataset_id} is {job.status}", field="dataset")
    lifecycle.job_transition(kind=DataSetDeletion.KIND, job_id=job.pk, event="retry", finished_at=None, error="")
    job.refresh_from_db()
    return job


def dataset_deletion_execute(*, job: DataSetDeletion) -> None:
    """Delete a marked dataset (the "deletion" job kind's entry), each step in its own short transaction
    and each one idempotent, so a job killed midway and queued again goes on from what is left: its other
    jobs with their logs, its images in batches, its runs with their files, the folder of its images and
    thumbnails, then its row. Files go before the rows that name them: a rerun never loses track of one."""
    kind = DataSetDeletion.KIND
    dataset_id = job.dataset_number
    dataset = DataSet.all_objects.filter(pk=dataset_id).first()
    if dataset is None:
        lifecycle.job_succeed(kind=kind, job_id=job.pk)
        return
    if not dataset.deleting:
        lifecycle.job_fail(kind=kind, job_id=job.pk, message=f"dataset {dataset_id} is not marked for deletion")
        return
    storage = default_storage

    lifecycle.job_progress(kind=kind, job_id=job.pk, phase="jobs")
    for _kind, related in DATASET_JOBS:
        jobs = getattr(dataset, related).all()
        for name in jobs.exclude(log_file="").values_list("log_file", flat=True):
            storage.delete(name)
        if related == "import_jobs":
            for name in jobs.exclude(upload="").values_list("upload", flat=True):
                storage.delete(name)
        jobs.delete()

    images = DataSetItem._meta.get_field("image").storage
    folder = f"datasets/{dataset_id}"
    done, total = job.images_deleted, max(1, job.images)
    while True:
        rows = list(
            # Any 2,000 of them, unsorted: sorting what is left for every batch would grow with it.
            DataSetItem.objects.filter(dataset_id=dataset_id).order_by().values_list("pk", "image")[:DELETION_BATCH]
        )
        if not rows:
            break
        for _pk, name in rows:
            # An image moved here from another dataset has its file in that one's folder: deleted one by one.
            if name and not name.startswith(f"{folder}/"):
                images.delete(name)
                images.delete(thumbnail_name(name))
        ids = [pk for pk, _name in rows]
        done += len(ids)
        with transaction.atomic():
            # What refers to images first (Suggestion.item and HealthDismissal.item cascade), then the
            # images, without Django's collector reading them again.
            Suggestion.objects.filter(item_id__in=ids)._raw_delete(Suggestion.objects.db)
            HealthDismissal.objects.filter(item_id__in=ids)._raw_delete(HealthDismissal.objects.db)
            DataSetItem.objects.filter(pk__in=ids)._raw_delete(DataSetItem.objects.db)
            still = lifecycle.job_progress(
                kind=kind, job_id=job.pk, phase="images", progress=0.9 * min(1.0, done / total), images_deleted=done
            )
        if not still:
            return  # failed or queued again by the watchdog meanwhile: the job's next run goes on

    lifecycle.job_progress(kind=kind, job_id=job.pk, phase="runs", progress=0.9)
    for run in dataset.runs.defer(*TrainingRun.HEAVY_FIELDS).order_by("pk"):
        weights = dataset.weights_file
        # A run's starting weights are the name of the dataset's file when it was made (a snapshot).
        for file_storage, name in (
            (run.model_file.storage, run.model_file.name),
            (run.log_file.storage, run.log_file.name),
            (weights.storage, run.weights_file),
        ):
            if name and name != weights.name:
                file_storage.delete(name)
        for run_folder in (run.checkpoint, f"exports/run_{run.pk}", f"explanations/run_{run.pk}"):
            if run_folder:
                storage_folder_delete(storage=storage, name=run_folder)
        # The dataset's current_run is SET_NULL by the run's deletion (no successor is chosen: it goes too).
        run.delete()

    lifecycle.job_progress(kind=kind, job_id=job.pk, phase="files", progress=0.95)
    # Images moved from here to another dataset kept their files here: those stay.
    moved = set(DataSetItem.objects.filter(image__startswith=f"{folder}/").values_list("image", flat=True))
    keep = frozenset(moved | {thumbnail_name(name) for name in moved})
    storage_folder_delete(storage=images, name=folder, keep=keep)
    if dataset.weights_file.name:
        dataset.weights_file.storage.delete(dataset.weights_file.name)
    with transaction.atomic():
        # Left: its label counts and the suggestions' and jobs' rows; the collector takes them.
        DataSet.all_objects.filter(pk=dataset_id).delete()
        lifecycle.job_succeed(kind=kind, job_id=job.pk)
