"""What deleting a dataset, a run or images takes with it, in words, for the admin's confirmation pages.

Django's own page lists every related row (one line per image: thousands of lines, and a query per
relation); this says the same in a few counted sentences, with a constant number of queries per object.
"""

from django.db.models import Count, Q, Sum

from datasets.models import DataSet
from training.models import TrainingRun


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def dataset_losses(dataset: DataSet) -> list[str]:
    runs = dataset.runs.aggregate(total=Count("id"), models=Count("id", filter=~Q(model_file="")))
    # The counts kept as data: counting the images themselves would grow with them.
    images = dataset.label_counts.aggregate(total=Sum("count"))["total"] or 0
    lines = [f"the dataset '{dataset.name}': its options and model code"]
    if images:
        lines.append(f"{_plural(images, 'image', 'images')} with their files and thumbnails")
    if runs["total"]:
        lines.append(
            f"{_plural(runs['total'], 'training run', 'training runs')}, "
            f"{_plural(runs['models'], 'trained model', 'trained models')} among them, "
            "with their exports, logs and checkpoints"
            + (" — the API and the Test page stop answering for it" if dataset.current_run_id else "")
        )
    checks = dataset.health_checks.count()
    if checks:
        lines.append(f"{_plural(checks, 'health check', 'health checks')} and what they found")
    return lines


def run_losses(run: TrainingRun) -> list[str]:
    lines = [f"run {run.pk} of '{run.dataset}' ({run.get_status_display().lower()}), its history and evaluation"]
    if run.model_file:
        lines.append(
            "its trained model file" + (f" and {_plural(len(run.exports), 'export', 'exports')}" if run.exports else "")
        )
    if run.log_file:
        lines.append("its training log")
    if run.dataset.current_run_id == run.pk:
        lines.append(
            f"it is the current model of '{run.dataset}': the newest other version that was current once becomes "
            "current instead; without one the dataset has no model and predictions stop"
        )
    return lines


def item_losses(item) -> list[str]:
    name = f" ({item.original_name})" if item.original_name else ""
    return [f"image #{item.pk} labelled '{item.label}'{name}, its file and thumbnail"]


def deleted_objects(objs, request, describe) -> tuple[list, dict, set, list]:
    """The `get_deleted_objects` answer of a ModelAdmin, from `describe(obj) -> [sentence, ...]`."""
    objs = list(objs)
    deleted = []
    for obj in objs:
        first, *rest = describe(obj)
        deleted += [first, rest] if rest else [first]
    model = objs[0]._meta if objs else None
    counts = {str(model.verbose_name_plural): len(objs)} if model else {}
    needed = set()
    if model is not None and not request.user.has_perm(f"{model.app_label}.delete_{model.model_name}"):
        needed.add(str(model.verbose_name))
    return deleted, counts, needed, []
