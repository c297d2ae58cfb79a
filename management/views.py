"""The admin's extra pages (zip upload, test, downloads), private media, and the home page."""

import base64
import io
from datetime import datetime

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from datasets.models import DataSet, ImportJob
from datasets.services import ImportReport, dataset_import_request, dataset_item_create
from management import permissions as rules
from management.errors import ServiceError
from management.files import IMAGE_TYPES, media_response
from management.forms import ModelImportForm, TestForm, ValidateForm, ZipUploadForm
from management.management.commands.demo import DEMO_NAME
from management.options import Architecture, ColorMode
from ml.images import image_extension, image_format
from serving.explanations import explanation_budget, explanation_for_image, explanation_run_item
from serving.exports import ExportFile, export_job_request
from serving.prediction import prediction_predict_one, prediction_version_run
from training.compare import compare_ids_parse, compare_thumbnails, runs_compare, runs_for_comparison
from training.evaluations import evaluation_confusion_cell
from training.models import TrainingRun
from training.services import dataset_model_validate
from training.versions import training_run_import, training_run_promote


def home(request):
    return render(request, "home.html")


def _report_lines(report: ImportReport, dataset) -> list[tuple[int, str]]:
    """What an import added, per label, and what it skipped and why: (message level, text) lines."""
    parts = [f"{label}: {count}" for label, count in report.counts.items()]
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


def validate_model(request, dataset_id):
    """The 'Validate the model' page: the saved model built (not trained) in a separate process; or, POSTed
    by the code editor, the model as it is being edited (its code, starting point, size, colour mode)."""
    dataset = get_object_or_404(DataSet, pk=dataset_id)
    form = ValidateForm(request.POST or None)
    overrides = form.overrides() if form.is_valid() else {}
    if not rules.may_send_model_code(request.user, code=overrides.get("process"), current=dataset.process):
        raise PermissionDenied(rules.MODEL_CODE_REFUSAL)
    # A form with errors (an image size out of range) is shown, not built.
    try:
        report = None if form.errors else dataset_model_validate(dataset=dataset, **overrides)
    except ServiceError as error:  # every slot for model jobs is taken
        messages.error(request, error.message)
        return redirect("admin:management_dataset_change", dataset.pk)
    context = {
        **admin.site.each_context(request),
        "opts": DataSet._meta,
        "title": f"Validate the model of '{dataset}'",
        "dataset": dataset,
        "edited": bool(overrides),
        "architecture": Architecture(overrides.get("architecture", dataset.architecture)),
        "image_size": overrides.get("image_size", dataset.image_size),
        "color_mode": ColorMode(overrides.get("color_mode", dataset.color_mode)),
        "form": form,
        "report": report,
        "code_lines": list(enumerate(overrides.get("process", dataset.process).splitlines(), start=1)),
    }
    return render(request, "management/validate_model.html", context)


def _versions(datasets) -> dict[int, list[dict]]:
    """Each dataset's versions (succeeded runs with a model), newest first, as the Test page offers them."""
    current = {dataset.pk: dataset.current_run_id for dataset in datasets}
    versions: dict[int, list[dict]] = {}
    runs = TrainingRun.objects.filter(dataset_id__in=current, status=TrainingRun.Status.SUCCEEDED)
    runs = runs.defer(*TrainingRun.HEAVY_FIELDS)
    for run in runs.exclude(model_file="").order_by("-id"):
        accuracy = f", accuracy {run.accuracy * 100:.1f}%" if run.accuracy is not None else ""
        mark = " (current)" if current[run.dataset_id] == run.pk else ""
        versions.setdefault(run.dataset_id, []).append({"id": run.pk, "text": f"run {run.pk}{accuracy}{mark}"})
    return versions


def test_model(request):
    """The Test page: choose a dataset (and a version), send an image, see the predicted label. The page's
    script posts the dropped image here and shows the result part of the answer."""
    form = TestForm(request.POST or None, request.FILES or None, initial={"dataset": request.GET.get("dataset")})
    result = preview = explanation = None
    if request.method == "POST" and form.is_valid():
        name, data = form.cleaned_data["image"]
        try:
            result = prediction_predict_one(
                dataset=form.cleaned_data["dataset"],
                name=name,
                data=data,
                run_id=form.cleaned_data["run"],
                user_id=request.user.pk,
            )
            if form.cleaned_data["explain"]:
                run = prediction_version_run(run_id=result.run_id)
                with explanation_budget(user_id=request.user.pk, field_name="image"):
                    explanation = explanation_for_image(run=run, name=name, data=data, label=result.label)
        except ServiceError as error:
            result = None
            form.add_error(error.field if error.field in {"image", "run"} else "dataset", error.message)
        else:
            # The preview's type is the detected format's, never the one the file's name claims.
            content_type = IMAGE_TYPES.get(image_extension(image_format(data)), "image/png")
            preview = f"data:{content_type};base64,{base64.b64encode(data).decode()}"
    probabilities = []
    if result:
        probabilities = sorted(result.probabilities.items(), key=lambda pair: pair[1], reverse=True)
        probabilities = [(label, value, round(value * 100, 1)) for label, value in probabilities]
    context = {
        "versions": _versions(form.fields["dataset"].queryset),
        **admin.site.each_context(request),
        "opts": DataSet._meta,
        "title": "Test a model",
        "form": form,
        "result": result,
        "probabilities": probabilities,
        "preview": preview,
        "explanation": explanation,
        "explanation_src": f"data:image/png;base64,{explanation.as_dict()['png_base64']}" if explanation else "",
        "trained_count": DataSet.objects.filter(current_run__isnull=False).count(),
    }
    return render(request, "management/test_model.html", context)


def download_model(request, run_id):
    run = get_object_or_404(TrainingRun, pk=run_id)
    if not run.model_file:
        raise Http404("this run has no model")
    return media_response(run.model_file.name, filename=run.download_name)


def download_export(request, run_id, format):
    """A version's model in a format (?precision=, ?bundle=1) when it is made; else the run's page, which
    shows the export job making it; a refused export says why there."""
    run = get_object_or_404(TrainingRun.objects.select_related("dataset"), pk=run_id)
    try:
        result = export_job_request(
            run=run,
            format=format,
            precision=request.GET.get("precision") or "float32",
            bundle=request.GET.get("bundle") == "1",
            user=request.user,
        )
    except ServiceError as error:
        messages.error(request, f"{format}: {error.message}")
        return redirect("admin:management_trainingrun_change", run.pk)
    if not isinstance(result, ExportFile):
        messages.info(request, f"{format}: export {result.pk} is {result.status}; download it here once it is made.")
        return redirect("admin:management_trainingrun_change", run.pk)
    return media_response(result.name, filename=result.filename)


@require_POST
def promote_run(request, run_id):
    """The Promote button of a dataset's versions: make this one current."""
    run = get_object_or_404(TrainingRun.objects.select_related("dataset"), pk=run_id)
    try:
        training_run_promote(run=run)
    except ServiceError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Run {run.pk} is now the current model of '{run.dataset}'.")
    return redirect("admin:management_dataset_change", run.dataset_id)


def import_model(request, dataset_id):
    """The 'Import a model' page: a trained .keras file and its labels as a new version."""
    dataset = get_object_or_404(DataSet, pk=dataset_id)
    form = ModelImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            run = training_run_import(
                dataset=dataset, file=form.cleaned_data["file"], labels=form.cleaned_data["labels"], user=request.user
            )
        except ServiceError as error:
            form.add_error("labels" if error.field == "labels" else "file", error.message)
        else:
            messages.success(request, f"Imported as run {run.pk}, now the current model of '{dataset}'.")
            return redirect("admin:management_trainingrun_change", run.pk)
    context = {
        **admin.site.each_context(request),
        "opts": DataSet._meta,
        "title": f"Import a model into '{dataset}'",
        "dataset": dataset,
        "form": form,
    }
    return render(request, "management/import_model.html", context)


def download_log(request, run_id):
    run = get_object_or_404(TrainingRun, pk=run_id)
    if not run.log_file:
        if run.is_active:
            return HttpResponse(status=204)  # not written yet: its process is starting (the run page polls it)
        raise Http404("this run has no log")
    return media_response(run.log_file.name)


def explain_run_item(request, run_id, item_id):
    """A heatmap of what a version's model looked at in one of its run's images (made once, then kept),
    served as private media are; the run page's 'why?' buttons show it."""
    run = get_object_or_404(TrainingRun, pk=run_id)
    try:
        relative = explanation_run_item(run=run, item_id=item_id, user_id=request.user.pk)
    except ServiceError as error:
        response = HttpResponse(error.message, status=error.status, content_type="text/plain; charset=utf-8")
        if getattr(error, "retry_after", None):
            response["Retry-After"] = str(error.retry_after)
        return response
    return media_response(relative)


CELL_IMAGES_PER_PAGE = 60


def confusion_cell(request, run_id, split, true_index, predicted_index):
    """The images behind one cell of a run's confusion matrix, with the model's confidence in each."""
    run = get_object_or_404(TrainingRun.objects.select_related("dataset"), pk=run_id)
    try:
        cell = evaluation_confusion_cell(run=run, split=split, true_index=true_index, predicted_index=predicted_index)
    except ServiceError as error:
        if error.status == 404:
            raise Http404(error.message) from None
        messages.error(request, error.message)
        return redirect("admin:management_trainingrun_change", run.pk)
    verdict = "right" if true_index == predicted_index else "wrong"
    # A cell of a large split holds thousands of images: a page of them at a time.
    page = Paginator(cell.images, CELL_IMAGES_PER_PAGE).get_page(request.GET.get("page"))
    context = {
        **admin.site.each_context(request),
        "opts": TrainingRun._meta,
        "title": f"Labelled {cell.true_label}, predicted {cell.predicted_label}",
        "run": run,
        "cell": cell,
        "page": page,
        "verdict": verdict,
    }
    return render(request, "management/confusion_cell.html", context)


def run_link(run: TrainingRun | None) -> str:
    if run is None:
        return "—"
    url = reverse("admin:management_trainingrun_change", args=[run.pk])
    return format_html('<a href="{}">run {}</a>', url, run.pk)


def _diff_lines(diff: str) -> list[tuple[str, str]]:
    """A unified diff's lines with their kind, for the template to colour (and escape)."""
    kinds = []
    for line in diff.splitlines():
        if line.startswith(("+++", "---")):
            kinds.append(("meta", line))
        elif line.startswith("@@"):
            kinds.append(("hunk", line))
        elif line.startswith("+"):
            kinds.append(("add", line))
        elif line.startswith("-"):
            kinds.append(("del", line))
        else:
            kinds.append(("same", line))
    return kinds


def _side_by_side(runs: list[dict]) -> list[dict]:
    """Each evaluated split: a row per measure (and per label's F1), a column per run."""
    tables = []
    for split in ("test", "validation", "training"):
        reports = [run["evaluation"].get(split) for run in runs]
        if not any(reports):
            continue
        labels = []
        for report in reports:
            labels += [label for label in (report or {}).get("labels", []) if label not in labels]
        rows = [
            (title, [(report or {}).get(key) for report in reports])
            for title, key in (
                ("images", "count"),
                ("accuracy", "accuracy"),
                ("loss", "loss"),
                ("macro F1", "macro_f1"),
            )
        ]
        rows += [
            (f"F1 of {label}", [(report or {}).get("per_label_f1", {}).get(label) for report in reports])
            for label in labels
        ]
        matrices = [
            {
                "run": run["id"],
                "labels": report["labels"],
                "rows": list(zip(report["labels"], report["confusion_matrix"], strict=True)),
            }
            for run, report in zip(runs, reports, strict=True)
            if report and report.get("confusion_matrix")
        ]
        tables.append({"split": split, "rows": rows, "matrices": matrices})
    return tables


def compare_runs(request):
    """The Compare page: runs of one dataset (?ids=3,5) side by side, the first the baseline."""
    try:
        values = request.GET.getlist("ids")
        ids = compare_ids_parse(values=values)
        if len(values) > 1:
            # Ticked in a run table (newest first): the oldest is the baseline.
            ids.sort()
        show = rules.VIEW_DATASETS.allows(request.user)
        comparison = runs_compare(runs=runs_for_comparison(ids=ids), show_dataset=show)
    except ServiceError as error:
        messages.error(request, f"Compare: {error.message}")
        return redirect("admin:management_trainingrun_changelist")
    items = compare_thumbnails(comparison=comparison)
    runs = comparison["runs"]
    pairs = []
    for pair in comparison["pairs"]:
        difference = pair["confusion_difference"]
        flips = [
            (flip, items.get(flip["item"]), item_thumbnail(items[flip["item"]], 64) if flip["item"] in items else "")
            for flip in pair["flips"]["items"]
        ]
        pairs.append(
            {
                **pair,
                "code_lines": _diff_lines(pair["code"]["diff"]),
                "difference_rows": list(zip(difference.get("labels", []), difference["matrix"] or [], strict=True)),
                "flip_cards": flips,
            }
        )
    dataset = comparison["dataset"]
    dataset_name = f"'{dataset['name']}'" if dataset["name"] is not None else f"dataset {dataset['id']}"
    context = {
        **admin.site.each_context(request),
        "opts": TrainingRun._meta,
        "title": f"Compare runs {', '.join(str(run['id']) for run in runs)} of {dataset_name}",
        "comparison": comparison,
        "runs": runs,
        "run_rows": [
            {
                **run,
                "status_label": TrainingRun.Status(run["status"]).label,
                "created": datetime.fromisoformat(run["created_at"]) if run["created_at"] else None,
            }
            for run in runs
        ],
        "pairs": pairs,
        "options": [(row["name"], row["values"]) for row in comparison["options_that_differ"]],
        "tables": _side_by_side(runs),
        "chart_data": {"runs": [{"id": run["id"], "history": run["history"]} for run in runs]},
    }
    return render(request, "management/compare.html", context)


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
    job = get_object_or_404(ImportJob.objects.select_related("dataset"), pk=job_id)
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
