"""Dataset health checks as the web asks for them: start, cancel, read the report, act on its findings.

A check is a job of kind "health": computed in its own process (`manage.py job health ID`, see
health_job.py), its status changed only by the job lifecycle. The actions go through the datasets' own
services.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from datasets.models import DataSet, DataSetItem, thumbnail_name
from datasets.services import dataset_item_update, dataset_items_delete
from health.models import HealthCheck, HealthDismissal
from jobs import lifecycle, runner, watchdog
from jobs.budgets import job_rate_check
from management.errors import Conflict, ServiceError
from training.models import TrainingRun

KIND = HealthCheck.KIND
Status = HealthCheck.Status

# --- what the web asks for ---------------------------------------------------------------------------


def health_check_start(*, dataset: DataSet, user=None, enqueue: bool = True) -> tuple[HealthCheck, bool]:
    """Queue a check of `dataset`; (check, True), or (its queued or running check, False) if it has one.

    A check whose process was lost is failed first (the watchdog), so a new one can start. A user's
    starts count against KERASUI_HEALTH_STARTS_PER_MINUTE (429 beyond it).
    """
    watchdog.jobs_watch(kinds=[KIND])
    if not dataset.items.exclude(label="").exists():
        raise ServiceError("the dataset has no images: add labelled images before checking its health", field="dataset")
    existing = dataset.health_checks.filter(status__in=HealthCheck.ACTIVE).first()
    if existing is not None:
        waited = timezone.now() - existing.created_at
        if enqueue and existing.status == Status.QUEUED and waited.total_seconds() > settings.KERASUI_HEARTBEAT_TIMEOUT:
            # Queued before the server restarted, or its message was lost: hand it over again (a
            # process that finds it taken already exits at once).
            runner.enqueue_on_commit(kind=KIND, job_id=existing.pk)
        return existing, False
    job_rate_check(kind=KIND, user=user, setting="KERASUI_HEALTH_STARTS_PER_MINUTE")
    try:
        check = lifecycle.job_create(
            kind=KIND, fields={"dataset": dataset, "created_by": user if getattr(user, "pk", None) else None}
        )
    except IntegrityError:
        # Another request queued one a moment ago.
        existing = dataset.health_checks.filter(status__in=HealthCheck.ACTIVE).first()
        if existing is None:
            raise Conflict("a health check of this dataset was just started; try again", field="dataset") from None
        return existing, False
    if enqueue:
        runner.enqueue_on_commit(kind=KIND, job_id=check.pk)
    return check, True


def health_check_cancel(*, check: HealthCheck) -> bool:
    """Stop a queued check (its process never starts) or a running one (it stops within a second);
    False if it had ended."""
    moved = lifecycle.job_cancel(kind=KIND, job_id=check.pk)
    check.refresh_from_db()
    return moved


def health_check_latest(*, dataset: DataSet) -> HealthCheck | None:
    return dataset.health_checks.defer("label_quality").order_by("-created_at", "-id").first()


# --- the report as the page and the API show it, and its actions ----------------------------------------


def health_dismissed(*, dataset: DataSet) -> dict[str, set[int]]:
    """The item ids a person kept as they are, by kind of finding."""
    dismissed: dict[str, set[int]] = {kind: set() for kind in HealthDismissal.Kind.values}
    for item_id, kind in HealthDismissal.objects.filter(item__dataset=dataset).values_list("item_id", "kind"):
        dismissed[kind].add(item_id)
    return dismissed


def health_report_current(*, check: HealthCheck, label_issue_urls: bool = True) -> dict:
    """The check's report without what was acted on since: deleted items, relabelled suspects, kept findings.

    Every listed item gets its current label, its image's URL and its thumbnail's (the media door); with
    `label_issue_urls=False` the suspects get none (thousands at 60,000 images: the page gives a page of
    them theirs with `health_with_urls`).
    """
    report = dict(check.report or {})
    if not report:
        return report
    dataset = check.dataset
    # Only the items the report names (a few thousand), never every image of the dataset; as plain values,
    # not model instances.
    named = {issue["item"] for issue in report.get("label_issues", [])}
    named |= {outlier["item"] for outlier in report.get("outliers", [])}
    for group in [*report.get("duplicates", []), *(report.get("leaks") or {}).get("groups", [])]:
        named |= set(group["items"])
    items = _labels_and_images(dataset, named)
    dismissed = health_dismissed(dataset=dataset)
    storage = DataSetItem._meta.get_field("image").storage

    def shown(item_id: int) -> dict | None:
        if item_id not in items:
            return None
        label, image = items[item_id]
        # The page's galleries show the small thumbnail; the original stays one click away.
        return {"item": item_id, "label": label, **_urls(storage, image)}

    label_issues = []
    for issue in report.get("label_issues", []):
        label, _ = items.get(issue["item"], (None, ""))
        if label is None or label != issue["given"] or issue["item"] in dismissed[HealthDismissal.Kind.LABEL]:
            continue
        label_issues.append({**issue, **(shown(issue["item"]) if label_issue_urls else {"label": label})})
    report["label_issues"] = label_issues

    def groups(found: list[dict]) -> list[dict]:
        kept = []
        for group in found:
            members = [shown(item_id) for item_id in group["items"]]
            members = [member for member in members if member is not None]
            if len(members) < 2 or all(m["item"] in dismissed[HealthDismissal.Kind.DUPLICATE] for m in members):
                continue
            kept.append({**group, "items": members})
        return kept

    report["duplicates"] = groups(report.get("duplicates", []))
    if report.get("leaks"):
        report["leaks"] = {**report["leaks"], "groups": groups(report["leaks"].get("groups", []))}
    report["outliers"] = [
        {**outlier, **shown(outlier["item"])}
        for outlier in report.get("outliers", [])
        if outlier["item"] in items and outlier["item"] not in dismissed[HealthDismissal.Kind.OUTLIER]
    ]
    return report


def health_with_urls(*, dataset: DataSet, entries: list[dict]) -> list[dict]:
    """These findings (each naming its `item`) with their image's URL and thumbnail's: a page of suspects."""
    items = _labels_and_images(dataset, {entry["item"] for entry in entries})
    storage = DataSetItem._meta.get_field("image").storage
    return [{**entry, **_urls(storage, items[entry["item"]][1])} for entry in entries if entry["item"] in items]


def _labels_and_images(dataset: DataSet, item_ids: set[int]) -> dict[int, tuple[str, str]]:
    ids, found = sorted(item_ids), {}
    for start in range(0, len(ids), 5000):  # below every database's limit of parameters in one statement
        rows = DataSetItem.objects.filter(dataset=dataset, pk__in=ids[start : start + 5000])
        found |= {pk: (label, image) for pk, label, image in rows.values_list("pk", "label", "image")}
    return found


def _urls(storage, image: str) -> dict:
    return {
        "image": storage.url(image) if image else "",
        "thumbnail": storage.url(thumbnail_name(image)) if image else "",
    }


def _items_of(dataset: DataSet, item_ids) -> list[DataSetItem]:
    try:
        ids = {int(item_id) for item_id in item_ids}
    except (TypeError, ValueError):
        raise ServiceError("items must be a list of item ids", field="items") from None
    if any(not 0 < item_id < 2**63 for item_id in ids):
        # No row has such an id, and SQLite cannot even compare one beyond 64 bits.
        raise ServiceError("every item must be an image of this dataset", field="items")
    items = list(DataSetItem.objects.filter(dataset=dataset, pk__in=ids))
    if len(items) != len(ids) or not items:
        raise ServiceError("every item must be an image of this dataset", field="items")
    return items


@transaction.atomic
def health_dismiss(*, dataset: DataSet, item_ids, kind: str, user=None) -> int:
    """Keep these items as they are for this kind of finding: not listed again."""
    if kind not in HealthDismissal.Kind.values:
        raise ServiceError(f"kind must be one of {', '.join(HealthDismissal.Kind.values)}", field="kind")
    items = _items_of(dataset, item_ids)
    creator = user if getattr(user, "pk", None) else None
    for item in items:
        HealthDismissal.objects.get_or_create(item=item, kind=kind, defaults={"created_by": creator})
    return len(items)


def health_relabel(*, dataset: DataSet, item_id, label: str) -> DataSetItem:
    """Give a suspect the suggested (or any) label, through the datasets' own update."""
    (item,) = _items_of(dataset, [item_id])
    if not isinstance(label, str) or not label.strip():
        raise ServiceError("give the new label", field="label")
    return dataset_item_update(item=item, label=label)


def health_items(*, dataset: DataSet, item_ids) -> list[DataSetItem]:
    """These images of this dataset, in id order; a ServiceError naming `items` when one is not."""
    return sorted(_items_of(dataset, item_ids), key=lambda item: item.pk)


def health_delete(*, dataset: DataSet, item_ids) -> int:
    return dataset_items_delete(items=_items_of(dataset, item_ids))


@dataclass(frozen=True)
class KeepOnePlan:
    """What "Keep this one" does to a group of copies: the image kept, the images deleted, and the images
    kept anyway because a trained run used them and not the one kept (those run ids per image id)."""

    keep: DataSetItem
    delete: list[DataSetItem]
    used: dict[int, list[int]]


def health_runs_using(*, items: list[DataSetItem]) -> dict[int, list[int]]:
    """The trained runs (not imported) whose snapshot held each item: it existed when the run was created.

    Deleting such an image makes those runs' splits and evaluations point at an image that is gone.
    """
    if not items:
        return {}
    dataset_id = items[0].dataset_id
    versions = list(
        TrainingRun.objects.filter(dataset_id=dataset_id, status=TrainingRun.Status.SUCCEEDED, imported=False)
        .exclude(model_file="")
        .order_by("created_at")
        .values_list("pk", "created_at")
    )
    used = {item.pk: [pk for pk, created in versions if created >= item.created_at] for item in items}
    return {pk: runs for pk, runs in used.items() if runs}


def health_keep_one_plan(*, dataset: DataSet, keep, item_ids) -> KeepOnePlan:
    """Of a group of copies, keep `keep`, and delete the others, except one a trained run used when the image
    kept was not in that run (the original of a copy added later): that run would lose its copy."""
    items = _items_of(dataset, [*item_ids, keep])
    kept = next(item for item in items if item.pk == int(keep))
    using = health_runs_using(items=items)
    runs_of_kept = set(using.get(kept.pk, []))
    used = {pk: runs for pk, runs in using.items() if pk != kept.pk and not set(runs) <= runs_of_kept}
    others = [item for item in items if item.pk != kept.pk]
    return KeepOnePlan(keep=kept, delete=[item for item in others if item.pk not in used], used=used)


@transaction.atomic
def health_keep_one(*, dataset: DataSet, keep, item_ids) -> int:
    """Of a duplicate group, keep `keep` and delete the others; the number deleted.

    An image a trained run used (often the original the copy was made from) is kept too, and the group
    is kept as it is for duplicates, so that run's splits and evaluation still point at its images.
    """
    plan = health_keep_one_plan(dataset=dataset, keep=keep, item_ids=item_ids)
    if plan.used:
        for item in [plan.keep, *(item for item in _items_of(dataset, plan.used))]:
            HealthDismissal.objects.get_or_create(item=item, kind=HealthDismissal.Kind.DUPLICATE)
    return dataset_items_delete(items=plan.delete) if plan.delete else 0
