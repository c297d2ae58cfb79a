"""The admin's dataset pages beside Django's own: zip upload and its progress, the demo dataset, thumbnails."""

import io

from django.contrib import admin, messages
from django.core.management import call_command
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from datasets.models import DataSet, ImportJob
from datasets.services import ImportReport, dataset_import_request, dataset_item_create
from management.errors import ServiceError
from management.forms import ZipUploadForm
from management.management.commands.demo import DEMO_NAME


def _report_lines(report: ImportReport, dataset) -> list[tuple[int, str]]:
    """What an import added, per label, and what it skipped and why: (message level, text) lines."""
    # Sorted here: PostgreSQL's jsonb keeps a stored report's keys by length, not as written.
    parts = [f"{label}: {count}" for label, count in sorted(report.counts.items())]
    parts += [f"unlabelled: {report.unlabelled}"] if report.unlabelled else []
    counts = ", ".join(parts) or "none"
    images = "image" if report.added == 1 else "images"
    lines = [
        (
            messages.SUCCESS if report.added else messages.WARNING,
            f"Imported {report.added} {images} into '{dataset}' ({counts}).",
        )
    ]
    if report.skipped:
        shown = "; ".join(f"{entry['name']}: {entry['reason']}" for entry in report.skipped[:20])
        more = f" and {len(report.skipped) - 20} more" if len(report.skipped) > 20 else ""
        entries = "entry" if len(report.skipped) == 1 else "entries"
        lines.append((messages.WARNING, f"Skipped {len(report.skipped)} {entries}: {shown}{more}."))
    return lines


def upload_zip(request, dataset_id=None):
    """The 'Upload a zip' page, and the door of the dataset page's drop zone (one file per request):
    a zip (stored, and imported by a job whose page shows its progress and report), or an image and its
    label (added at once)."""
    initial = {"dataset": dataset_id} if dataset_id else {}
    form = ZipUploadForm(request.POST or None, request.FILES or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        dataset, file, label = form.cleaned_data["dataset"], form.cleaned_data["file"], form.cleaned_data["label"]
        unlabelled = form.cleaned_data["unlabelled"]
        try:
            if form.is_zip():
                job = dataset_import_request(
                    dataset=dataset, file=file, label=label or None, unlabelled=unlabelled, user=request.user
                )
            else:
                item = dataset_item_create(
                    dataset=dataset, label="" if unlabelled else label, file=file, name=file.name
                )
                job = None
        except ServiceError as error:
            form.add_error("file" if error.field in {"file", "image"} else "label", error.message)
        else:
            if job is None:
                added = ImportReport(counts={item.label: 1}) if item.label else ImportReport(unlabelled=1)
                for level, text in _report_lines(added, dataset):
                    messages.add_message(request, level, text)
            else:
                messages.info(
                    request,
                    f"Importing {job.original_name or 'the zip'} into '{dataset}' (import {job.pk}): "
                    "its progress and report are on the dataset's page.",
                )
            # The drop zone reads the messages from the page it names (a light one), then reloads the dataset.
            after = request.GET.get("next", "")
            if url_has_allowed_host_and_scheme(after, allowed_hosts={request.get_host()}):
                return redirect(after)
            if job is not None:
                return redirect("admin:management_dataset_import", job.pk)
            return redirect("admin:management_dataset_change", dataset.pk)
    context = {
        **admin.site.each_context(request),
        "opts": DataSet._meta,
        "title": "Upload a zip of images",
        "form": form,
    }
    return render(request, "management/upload_zip.html", context)


@require_POST
def load_demo(request):
    """The dashboard's 'Load the demo dataset' button: the `demo` command, then the new dataset's page."""
    call_command("demo", stdout=io.StringIO())
    dataset = DataSet.objects.get(name=DEMO_NAME)
    messages.success(request, f"The demo dataset '{dataset}' is ready: press Train to train a model on it.")
    return redirect("admin:management_dataset_change", dataset.pk)


def item_thumbnail(item, size: int = 48) -> str:
    """The item's small thumbnail (never the original, which may weigh megabytes) at `size` px: every
    gallery of the admin (dataset, items, runs, compare) shows images through here."""
    return format_html(
        '<img src="{}" alt="{}" title="{}" loading="lazy" width="{}" height="{}" class="kerasui-thumb">',
        item.thumbnail_url,
        item.label,
        item.label,
        size,
        size,
    )


def import_progress(request, job_id):
    """A zip import's page: its progress while it runs (the page reloads itself), then its report."""
    job = get_object_or_404(ImportJob.objects.filter(dataset__deleting=False).select_related("dataset"), pk=job_id)
    report = ImportReport(counts=job.report.get("counts", {}), skipped=job.report.get("skipped", []))
    succeeded = job.status == ImportJob.Status.SUCCEEDED
    context = {
        **admin.site.each_context(request),
        "opts": DataSet._meta,
        "title": f"Import {job.pk} into {job.dataset}",
        "job": job,
        "report": report if succeeded else None,
        # The same lines the drop zone shows once the import has ended (dataset.js reads them here).
        "lines": [
            {"level": messages.DEFAULT_TAGS[level], "text": text} for level, text in _report_lines(report, job.dataset)
        ]
        if succeeded
        else [],
    }
    return render(request, "management/import_progress.html", context)
