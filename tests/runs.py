"""Succeeded training runs for the tests, without training: a trained model file copied in."""

import shutil
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from management.models import DataSet, TrainingRun
from management.services.training import training_run_create


def install_model(dataset: DataSet, model_file: Path, *, labels: list[str] | None = None) -> TrainingRun:
    """Give `dataset` a succeeded run whose model is a copy of `model_file`, and make it current."""
    run = training_run_create(dataset=dataset, enqueue=False)
    name = f"models/run_{run.pk}.keras"
    target = Path(settings.MEDIA_ROOT) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(model_file, target)
    fields = {
        "status": TrainingRun.Status.SUCCEEDED,
        "progress": 100,
        "model_file": name,
        "metrics": {"val_accuracy": 1.0},
        "started_at": timezone.now(),
        "finished_at": timezone.now(),
    }
    if labels is not None:
        fields["labels"] = labels
    TrainingRun.objects.filter(pk=run.pk).update(**fields)
    dataset.current_run = TrainingRun.objects.get(pk=run.pk)
    dataset.save(update_fields=["current_run", "updated_at"])
    return dataset.current_run
