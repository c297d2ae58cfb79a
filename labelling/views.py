"""Dataset → Label: one unlabelled image at a time, least sure first, labelled from the keyboard.

The page reads its queue from the API (`/api/dataset/{id}/suggestions/`, then the unlabelled images
without a suggestion); labelling goes through `label_set` here (the labelling use case's admin door).
"""

from django.contrib import admin
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_POST

from datasets.models import DataSet
from datasets.services import dataset_labels
from labelling.services import dataset_items_label, suggestions_progress
from management import permissions as rules
from management.errors import ServiceError


def label_page(request, dataset_id):
    """The labelling page: the first screen only; the queue is fetched by management/labelling.js."""
    dataset = get_object_or_404(DataSet.objects.prefetch_related("label_counts"), pk=dataset_id)
    progress = suggestions_progress(dataset=dataset)
    context = {
        **admin.site.each_context(request),
        "opts": DataSet._meta,
        "title": f"Label '{dataset}'",
        "dataset": dataset,
        "progress": progress,
        "labels": dataset_labels(dataset=dataset),
        "has_model": dataset.current_run_id is not None,
        "can": rules.allowed(request.user),
    }
    return render(request, "management/labelling.html", context)


@require_POST
def label_set(request, dataset_id):
    """Give items of the dataset one label (`ids`, comma-separated, and `label`; an empty label: unlabelled
    again, the page's undo). JSON: how many changed, or the field at fault."""
    dataset = get_object_or_404(DataSet, pk=dataset_id)
    try:
        ids = [int(part) for part in request.POST.get("ids", "").split(",") if part.strip()]
    except ValueError:
        return JsonResponse({"ids": ["ids are item numbers separated by commas"]}, status=400)
    if not ids:
        return JsonResponse({"ids": ["give the items to label"]}, status=400)
    try:
        labelled = dataset_items_label(dataset=dataset, ids=ids, label=request.POST.get("label", ""), allow_empty=True)
    except ServiceError as error:
        return JsonResponse({error.field or "label": [error.message]}, status=400)
    return JsonResponse({"labelled": labelled})
