"""The home dashboard: every dataset with its size, label balance, current accuracy and training state."""

from django import template
from django.contrib.humanize.templatetags.humanize import naturaltime

from datasets.models import DataSet
from datasets.services import dataset_label_counts, datasets_with_counts
from training.models import TrainingRun

register = template.Library()


@register.filter
def ago(value):
    """'19 seconds ago', '3 hours ago', and 'just now' where humanize says a bare 'now'."""
    said = naturaltime(value)
    return "just now" if said == "now" else said


@register.filter
def percent(value, decimals: int = 1):
    """A fraction as a percentage with `decimals` places: 0.9444 → "94.4%"; anything else unchanged."""
    try:
        return f"{float(value) * 100:.{int(decimals)}f}%"
    except (TypeError, ValueError):
        return value


@register.inclusion_tag("management/dashboard.html", takes_context=True)
def kerasui_dashboard(context):
    datasets = []
    for dataset in datasets_with_counts(DataSet.objects.all()):
        counts = dataset_label_counts(dataset=dataset)
        most = max(counts.values(), default=0)
        balance = [(label, count, round(100 * count / most)) for label, count in counts.items()]
        datasets.append({"dataset": dataset, "balance": balance, "latest": dataset.latest_run})
    active = (
        TrainingRun.objects.filter(status__in=TrainingRun.ACTIVE)
        .select_related("dataset")
        .defer(*TrainingRun.HEAVY_FIELDS)
    )
    return {"datasets": datasets, "active_runs": list(active), "perms": context.get("perms")}


@register.inclusion_tag("management/recent_runs.html")
def kerasui_recent_runs(count: int = 8):
    """The latest runs of every dataset, newest first: the home page's recent activity."""
    runs = (
        TrainingRun.objects.filter(dataset__deleting=False)
        .select_related("dataset")
        .defer(*TrainingRun.HEAVY_FIELDS)
        .order_by("-created_at")
    )
    return {"runs": list(runs[:count])}
