"""The admin's Dataset → Health page and its actions (each a POST calling one service); the two that delete
images first show a page saying which images go (GET), and act only on its button (POST)."""

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from datasets.models import DataSet
from health import services as health
from health.models import HealthCheck, HealthDismissal
from management import permissions as rules
from management.errors import ServiceError

KINDS = dict(HealthDismissal.Kind.choices)


LABEL_ISSUES_PER_PAGE = 50
GROUPS_PER_PAGE = 20


def health_page(request, dataset_id):
    """The newest check's findings still open, with thumbnails and actions; live progress while it runs."""
    dataset = get_object_or_404(DataSet, pk=dataset_id)
    check = health.health_check_latest(dataset=dataset)
    report = health.health_report_current(check=check, label_issue_urls=False) if check is not None else {}
    suggested_labels = sorted(set(report.get("labels", [])))
    # Thousands of suspects at 60,000 images: a page of them at a time, and only its images' URLs.
    issues = Paginator(report.get("label_issues", []), LABEL_ISSUES_PER_PAGE).get_page(request.GET.get("page"))
    issues.object_list = health.health_with_urls(dataset=dataset, entries=list(issues.object_list))
    context = {
        **admin.site.each_context(request),
        "opts": DataSet._meta,
        "title": f"Health of '{dataset}'",
        "dataset": dataset,
        "check": check,
        "report": report,
        "issues_page": issues,
        # Each group is a form per copy (and its members' ids in each): a page of groups at a time too.
        "duplicates_page": Paginator(report.get("duplicates", []), GROUPS_PER_PAGE).get_page(
            request.GET.get("duplicates_page")
        ),
        "leaks_page": Paginator((report.get("leaks") or {}).get("groups", []), GROUPS_PER_PAGE).get_page(
            request.GET.get("leaks_page")
        ),
        # Reversed once, not once per image and form (thousands of times at 60,000 images).
        "actions": {
            kind: reverse(f"admin:management_dataset_health_{kind}", args=[dataset.pk])
            for kind in ("relabel", "keep", "delete", "keep_one")
        },
        "item_link": _item_link(),
        "labels": suggested_labels,
        "can": rules.allowed(request.user),
    }
    return render(request, "management/health.html", context)


def _item_link() -> tuple[str, str]:
    """An image's admin page as the text before and after its id."""
    before, after = reverse("admin:management_datasetitem_change", args=[0]).rsplit("/0/", 1)
    return f"{before}/", f"/{after}"


def _back(dataset_id):
    return redirect("admin:management_dataset_health", dataset_id)


def _act(request, dataset_id, action) -> object:
    dataset = get_object_or_404(DataSet, pk=dataset_id)
    try:
        message = action(dataset)
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, message)
    return _back(dataset_id)


@require_POST
def health_start(request, dataset_id):
    def start(dataset):
        check, created = health.health_check_start(dataset=dataset, user=request.user)
        return f"Health check {check.pk} {'queued' if created else 'is already ' + check.get_status_display().lower()}."

    return _act(request, dataset_id, start)


@require_POST
def health_cancel(request, dataset_id):
    def cancel(dataset):
        check_id = (request.POST.get("check") or "").strip()
        if not (check_id.isascii() and check_id.isdigit() and len(check_id) <= 18):
            raise ServiceError(f"'{check_id[:30]}' is not a health check's id")
        check = get_object_or_404(HealthCheck, pk=int(check_id), dataset=dataset)
        if not health.health_check_cancel(check=check):
            raise ServiceError(f"health check {check.pk} has already ended")
        return f"Health check {check.pk} cancelled."

    return _act(request, dataset_id, cancel)


@require_POST
def health_relabel(request, dataset_id):
    def relabel(dataset):
        item = health.health_relabel(dataset=dataset, item_id=request.POST.get("item"), label=request.POST.get("label"))
        return f"Image {item.pk} is now labelled '{item.label}'."

    return _act(request, dataset_id, relabel)


@require_POST
def health_keep(request, dataset_id):
    def keep(dataset):
        kind = request.POST.get("kind", "")
        count = health.health_dismiss(
            dataset=dataset, item_ids=request.POST.getlist("item"), kind=kind, user=request.user
        )
        images = "1 image" if count == 1 else f"{count} images"
        return f"Kept {images} as they are: not listed again as {KINDS.get(kind, kind).lower()}."

    return _act(request, dataset_id, keep)


def _confirm(request, dataset, context) -> object:
    """The page a destructive action shows first: what goes, in words and thumbnails, and one button."""
    context = {
        **admin.site.each_context(request),
        "opts": DataSet._meta,
        "dataset": dataset,
        "params": [("item", item.pk) for item in context.get("delete", [])] + context.pop("extra_params", []),
        **context,
    }
    return render(request, "management/health_confirm.html", context)


@require_http_methods(["GET", "POST"])
def health_delete(request, dataset_id):
    """GET: which images would go (a confirmation page); POST: delete them."""
    if request.method == "GET":
        dataset = get_object_or_404(DataSet, pk=dataset_id)
        try:
            items = health.health_items(dataset=dataset, item_ids=request.GET.getlist("item"))
        except ServiceError as error:
            messages.error(request, error.message)
            return _back(dataset_id)
        used = health.health_runs_using(items=items)
        title = f"Delete {_images(len(items))} of '{dataset}'?"
        return _confirm(request, dataset, {"title": title, "delete": items, "used": used, "action": "delete"})

    def delete(dataset):
        count = health.health_delete(dataset=dataset, item_ids=request.POST.getlist("item"))
        return f"Deleted {_images(count)}."

    return _act(request, dataset_id, delete)


@require_http_methods(["GET", "POST"])
def health_keep_one(request, dataset_id):
    """GET: what keeping this copy deletes and keeps (a confirmation page); POST: do it."""
    source = request.GET if request.method == "GET" else request.POST
    keep, item_ids = source.get("keep"), source.getlist("item")
    if request.method == "GET":
        dataset = get_object_or_404(DataSet, pk=dataset_id)
        try:
            plan = health.health_keep_one_plan(dataset=dataset, keep=keep, item_ids=item_ids)
        except ServiceError as error:
            messages.error(request, error.message)
            return _back(dataset_id)
        protected = health.health_items(dataset=dataset, item_ids=plan.used) if plan.used else []
        protected = [(item, plan.used[item.pk]) for item in protected]
        context = {
            "title": f"Keep image {plan.keep.pk} and delete {_images(len(plan.delete))} of '{dataset}'?",
            "keep": plan.keep,
            "delete": plan.delete,
            "protected": protected,
            "action": "keep_one",
            "extra_params": [("keep", plan.keep.pk)] + [("item", pk) for pk in plan.used],
        }
        return _confirm(request, dataset, context)

    def keep_one(dataset):
        count = health.health_keep_one(dataset=dataset, keep=keep, item_ids=item_ids)
        return f"Kept image {keep}, deleted {_images(count)}."

    return _act(request, dataset_id, keep_one)


def _images(count: int) -> str:
    return "1 image" if count == 1 else f"{count} images"
