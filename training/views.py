"""The admin's run pages beside Django's own: model code validation, promotion, import, log and model
downloads, a confusion cell's images, and the comparison of runs."""

from datetime import datetime

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from datasets.models import DataSet
from datasets.views import item_thumbnail
from management import permissions as rules
from management.errors import ServiceError
from management.files import media_response
from management.forms import ModelImportForm, ValidateForm
from management.options import Architecture, ColorMode
from training.compare import compare_ids_parse, compare_thumbnails, runs_compare, runs_for_comparison
from training.evaluations import evaluation_confusion_cell
from training.models import TrainingRun
from training.services import dataset_model_validate
from training.versions import training_run_import, training_run_promote


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


def download_model(request, run_id):
    run = get_object_or_404(TrainingRun, pk=run_id)
    if not run.model_file:
        raise Http404("this run has no model")
    return media_response(run.model_file.name, filename=run.download_name)


@require_POST
def promote_run(request, run_id):
    """The Promote button of a dataset's versions: make this one current."""
    run = get_object_or_404(TrainingRun.objects.filter(dataset__deleting=False).select_related("dataset"), pk=run_id)
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
    # Not written yet while the run is active: its process is starting, or (with a bucket) has not sent its
    # first copy; the run page polls it, so that is "nothing yet" (204), not a missing page.
    if run.is_active and not (run.log_file and default_storage.exists(run.log_file.name)):
        return HttpResponse(status=204)
    if not run.log_file:
        raise Http404("this run has no log")
    return media_response(run.log_file.name)


CELL_IMAGES_PER_PAGE = 60


def confusion_cell(request, run_id, split, true_index, predicted_index):
    """The images behind one cell of a run's confusion matrix, with the model's confidence in each."""
    run = get_object_or_404(TrainingRun.objects.filter(dataset__deleting=False).select_related("dataset"), pk=run_id)
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
