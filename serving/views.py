"""The admin's serving pages: the Test page (a prediction with a chosen version), exports' downloads and
explanations of a run's image."""

import base64

from django.contrib import admin, messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from datasets.models import DataSet
from management.errors import ServiceError
from management.files import IMAGE_TYPES, media_response
from management.forms import TestForm
from ml.images import image_extension, image_format
from serving.explanations import explanation_budget, explanation_for_image, explanation_run_item
from serving.exports import ExportFile, export_job_request
from serving.prediction import prediction_predict_one, prediction_version_run
from training.models import TrainingRun


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


def download_export(request, run_id, format):
    """A version's model in a format (?precision=, ?bundle=1) when it is made; else the run's page, which
    shows the export job making it; a refused export says why there."""
    run = get_object_or_404(TrainingRun.objects.filter(dataset__deleting=False).select_related("dataset"), pk=run_id)
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
