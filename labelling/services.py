"""Suggested labels for a dataset's unlabelled images: the job that predicts them with the current model,
the least-sure-first list a person labels from, and the bulk actions (accept suggestions, set a label).

A job of kind "suggestions" (suggestion_job_execute, in its own process) predicts every unlabelled image
with the model that is current when it runs, through the serving engine (ONNX Runtime where proven);
it is queued after the commit that makes a model current or adds unlabelled images. Requests only read
the stored rows, a page at a time. "Least sure" is the margin: top-1 minus top-2 probability.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet

from datasets.models import DataSet, DataSetItem
from datasets.services import UNLABELLED, clean_label, label_counts_add, label_or_unlabelled, suggestions_mark_labelled
from jobs import lifecycle
from labelling.models import Suggestion, SuggestionJob
from labelling.suggestion_jobs import current_model_run, suggestions_request
from management.errors import ServiceError
from ml.images import load_image
from serving.services import serving_predictor

log = logging.getLogger(__name__)

TOP_LABELS = 5  # labels kept per suggestion: the labelling page's buttons
BATCH = 64  # images decoded and predicted at once
MAX_IDS = 1000  # ids one bulk request may name


@dataclass(frozen=True)
class Suggested:
    """One image's answer: the predicted label, its probability, the margin and the top labels."""

    label: str
    confidence: float
    margin: float
    top: list[list]


def suggestion_of(probabilities: np.ndarray, labels: list[str]) -> Suggested:
    """The suggestion for one image's probabilities (rounded as /api/test/ rounds them)."""
    order = np.argsort(-probabilities, kind="stable")
    best = int(order[0])
    second = float(probabilities[order[1]]) if len(order) > 1 else 0.0
    top = [[labels[int(index)], round(float(probabilities[index]), 6)] for index in order[:TOP_LABELS]]
    return Suggested(
        label=labels[best],
        confidence=round(float(probabilities[best]), 6),
        margin=round(float(probabilities[best]) - second, 6),
        top=top,
    )


def suggestion_job_execute(*, job: SuggestionJob) -> None:
    """Predict every unlabelled image of the job's dataset with its current model (the kind's entry).

    Items labelled while it runs are left alone; an image that cannot be read is reported, not fatal."""
    kind = SuggestionJob.KIND
    run = current_model_run(job.dataset_id)
    if run is None:
        lifecycle.job_fail(kind=kind, job_id=job.pk, message="the dataset has no trained model to suggest labels")
        return
    predictor = serving_predictor(run=run)
    ids = list(
        DataSetItem.objects.filter(dataset_id=job.dataset_id, label=UNLABELLED)
        .order_by("id")
        .values_list("pk", flat=True)
    )
    skipped: list[dict] = []
    done, last = 0, 0.0
    for start in range(0, len(ids), BATCH):
        items = list(DataSetItem.objects.filter(pk__in=ids[start : start + BATCH], label=UNLABELLED).order_by("id"))
        arrays, readable = [], []
        for item in items:
            try:
                with item.image.open("rb") as file:
                    data = file.read()
                arrays.append(
                    load_image(
                        data,
                        image_size=run.image_size,
                        color_mode=run.color_mode,
                        max_pixels=settings.KERASUI_MAX_IMAGE_PIXELS,
                    )
                )
                readable.append(item)
            except (OSError, ValueError) as error:
                skipped.append({"item": item.pk, "reason": str(error)})
        if readable:
            probabilities = predictor.predict(np.stack(arrays))
            rows = []
            for item, row in zip(readable, probabilities, strict=True):
                suggested = suggestion_of(np.asarray(row, dtype=np.float64), run.labels)
                rows.append(Suggestion(item=item, dataset_id=job.dataset_id, run=run, **suggested.__dict__))
            with transaction.atomic():
                # Only items still unlabelled get one (a person may have labelled some meanwhile).
                still = set(
                    DataSetItem.objects.filter(pk__in=[row.item_id for row in rows], label=UNLABELLED).values_list(
                        "pk", flat=True
                    )
                )
                Suggestion.objects.bulk_create(
                    [row for row in rows if row.item_id in still],
                    update_conflicts=True,
                    unique_fields=["item"],
                    update_fields=["dataset", "run", "label", "confidence", "margin", "top", "created_at"],
                )
        done += len(items)
        if time.monotonic() - last >= 1.0:
            last = time.monotonic()
            if not lifecycle.job_progress(kind=kind, job_id=job.pk, phase="predicting", progress=done / len(ids)):
                return  # cancelled
    # Suggestions of an earlier model are stale: those of images this job predicted were replaced above.
    Suggestion.objects.filter(dataset_id=job.dataset_id).exclude(run=run).delete()
    report = {"run": run.pk, "predicted": done - len(skipped), "skipped": skipped}
    lifecycle.job_succeed(kind=kind, job_id=job.pk, report=report)


def suggestion_job_after(*, job_id: int) -> None:
    """After its process succeeded (in the thread runner's process): images that arrived while it ran were
    not read, so ask again (nothing is queued when none lacks a suggestion)."""
    dataset_id = SuggestionJob.objects.filter(pk=job_id).values_list("dataset_id", flat=True).first()
    if dataset_id is None:
        return
    if DataSetItem.objects.filter(dataset_id=dataset_id, label=UNLABELLED, suggestion__isnull=True).exists():
        suggestions_request(dataset_id=dataset_id)


ORDERINGS = {
    "margin": ("margin", "item_id"),
    "-margin": ("-margin", "item_id"),
    "-confidence": ("-confidence", "item_id"),
    "confidence": ("confidence", "item_id"),
}


def suggestions_list(*, dataset: DataSet, label: str | None = None, ordering: str = "margin") -> QuerySet:
    """The suggestions of a dataset's unlabelled images, least sure first by default (smallest margin),
    optionally only those predicting `label`. Page it: the query is indexed on (dataset, margin)."""
    if ordering not in ORDERINGS:
        raise ServiceError(f"ordering is one of {', '.join(ORDERINGS)}", field="ordering")
    suggestions = Suggestion.objects.filter(dataset=dataset, item__label=UNLABELLED).select_related("item")
    if label:
        suggestions = suggestions.filter(label=label)
    return suggestions.order_by(*ORDERINGS[ordering])


def _check_ids(ids: list[int]) -> list[int]:
    if len(ids) > MAX_IDS:
        raise ServiceError(f"at most {MAX_IDS} ids at once", field="ids")
    return list(dict.fromkeys(ids))


def _relabel(*, dataset: DataSet, labels: dict[int, str]) -> int:
    """Give items of `dataset` (still unlabelled or not) their new labels, keeping the counts; their
    suggestions stay, marked labelled (see suggestions_mark_labelled). Returns how many items changed."""
    items = list(DataSetItem.objects.select_for_update().filter(dataset=dataset, pk__in=list(labels)))
    before = {item.pk: item.label for item in items}
    changes: Counter = Counter()
    changed = []
    for item in items:
        new = labels[item.pk]
        if new != item.label:
            changes[(dataset.pk, item.label)] -= 1
            changes[(dataset.pk, new)] += 1
            item.label = new
            changed.append(item)
    DataSetItem.objects.bulk_update(changed, ["label"], batch_size=500)
    label_counts_add(changes=changes)
    suggestions_mark_labelled(items=changed, was_unlabelled={pk for pk, label in before.items() if label == UNLABELLED})
    return len(changed)


@transaction.atomic
def suggestions_accept(*, dataset: DataSet, ids: list[int] | None = None, min_confidence: float | None = None) -> int:
    """Label unlabelled images with their suggestions: those of `ids`, or every one whose confidence is at
    least `min_confidence`. Returns how many images were labelled."""
    if (ids is None) == (min_confidence is None):
        raise ServiceError("give either ids or min_confidence", field="ids")
    suggestions = Suggestion.objects.filter(dataset=dataset, item__label=UNLABELLED)
    if ids is not None:
        suggestions = suggestions.filter(item_id__in=_check_ids(ids))
    else:
        if not 0.0 <= min_confidence <= 1.0:
            raise ServiceError("min_confidence is between 0 and 1", field="min_confidence")
        suggestions = suggestions.filter(confidence__gte=min_confidence)
    labels = dict(suggestions.values_list("item_id", "label"))
    return _relabel(dataset=dataset, labels=labels)


@transaction.atomic
def dataset_items_label(*, dataset: DataSet, ids: list[int], label: str, allow_empty: bool = False) -> int:
    """Give a list of a dataset's items one label (checked as every label is; with `allow_empty`, an empty
    label makes them unlabelled again: the labelling page's undo). Returns how many changed."""
    label = label_or_unlabelled(label) if allow_empty else clean_label(label)
    ids = _check_ids(ids)
    found = set(DataSetItem.objects.filter(dataset=dataset, pk__in=ids).values_list("pk", flat=True))
    unknown = [pk for pk in ids if pk not in found]
    if unknown:
        raise ServiceError(f"no image {unknown[0]} in dataset '{dataset.name}'", field="ids")
    return _relabel(dataset=dataset, labels=dict.fromkeys(ids, label))


def suggestions_progress(*, dataset: DataSet) -> dict:
    """What the labelling page shows: labelled and unlabelled images (counts kept as data), how many
    unlabelled ones have a suggestion, and the latest suggestions job."""
    counts = {row.label: row.count for row in dataset.label_counts.all()}
    unlabelled = counts.pop(UNLABELLED, 0)
    job = dataset.suggestion_jobs.order_by("-created_at", "-id").first()
    return {
        "labelled": sum(counts.values()),
        "unlabelled": unlabelled,
        "job": {"id": job.pk, "status": job.status, "progress": job.progress, "error": job.error} if job else None,
    }


RETRAIN_AFTER = 20  # images labelled since the current model was trained before the dataset page offers to train again


def dataset_labelled_since_current(*, dataset: DataSet) -> int | None:
    """How many more labelled images the dataset has than its current model was trained and evaluated on
    (the counts kept as data against the run's split counts: no image is read); None without a trained model."""
    run = dataset.current_run
    if run is None or not run.split_counts:
        return None
    labelled = sum(row.count for row in dataset.label_counts.all() if row.label != UNLABELLED)
    return max(0, labelled - sum(run.split_counts.values()))


SCORE_LIMIT = 1000  # the newest labels the dataset page scores the current model on (a bounded query)


@dataclass(frozen=True)
class SuggestionScore:
    """How the current model's suggestions fared against the labels people gave since."""

    run_id: int
    right: int
    total: int
    capped: bool  # only the newest SCORE_LIMIT labels were read

    @property
    def wrong(self) -> int:
        return self.total - self.right

    @property
    def percent(self) -> int:
        return round(100 * self.right / self.total)


def dataset_suggestions_score(*, dataset: DataSet) -> SuggestionScore | None:
    """What the current model would have predicted for the images labelled since it suggested theirs: its
    stored suggestions against the labels people gave (no inference; the newest SCORE_LIMIT at most).
    None without a current model or such labels."""
    run_id = dataset.current_run_id
    if run_id is None:
        return None
    rows = list(
        Suggestion.objects.filter(run_id=run_id, labelled_at__isnull=False)
        .exclude(item__label=UNLABELLED)
        .order_by("-labelled_at", "-item_id")
        .values_list("label", "item__label")[: SCORE_LIMIT + 1]
    )
    if not rows:
        return None
    capped = len(rows) > SCORE_LIMIT
    rows = rows[:SCORE_LIMIT]
    right = sum(1 for suggested, given in rows if suggested == given)
    return SuggestionScore(run_id=run_id, right=right, total=len(rows), capped=capped)


def items_judged_by_suggestion(*, items: QuerySet, right: bool) -> QuerySet:
    """Of `items`, those labelled since their dataset's current model suggested a label, where the
    suggestion was right (or wrong): the dataset page's link to the ones it got wrong. Page it."""
    since = items.filter(suggestion__labelled_at__isnull=False, suggestion__run=F("dataset__current_run")).exclude(
        label=UNLABELLED
    )
    same = Q(label=F("suggestion__label"))
    return since.filter(same) if right else since.exclude(same)
