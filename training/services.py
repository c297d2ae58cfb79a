"""Training as a person asks for it: create a run (the snapshot), cancel, resume or delete it, validate a model.

The web requests' use cases. The run's state changes are the lifecycle's (runs.py); what the training
process does with a run is the trainer's (trainer.py, entered by training_job.py); how a queued run gets
executed is the job runner's (jobs/runner.py).
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from datasets.models import DataSet
from datasets.services import (
    dataset_labels,
    dataset_unlabelled_count,
    delete_files_on_commit,
    delete_folders_on_commit,
)
from jobs import runner
from jobs.budgets import model_job_slot
from management.errors import Conflict
from management.files import media_local_copy
from management.options import snapshot_of
from ml.images import channels_for
from ml.models import Augmentation, ModelSpec
from ml.validate import ValidationReport, validate_model
from training import runs
from training.models import TrainingRun


def run_snapshot(*, dataset: DataSet) -> dict:
    """The fields a run copies from its dataset when it is created: what it trains with (its labelled
    images; how many unlabelled ones it leaves out is kept beside)."""
    return {
        "dataset": dataset,
        "labels": dataset_labels(dataset=dataset),
        "unlabelled_count": dataset_unlabelled_count(dataset=dataset),
        **snapshot_of(dataset),
    }


def training_run_problem(*, run: TrainingRun) -> str | None:
    """Why a run cannot train at all, known before any work (and before Keras loads): its dataset is being
    deleted, no images, one label."""
    if DataSet.all_objects.filter(pk=run.dataset_id, deleting=True).exists():
        return "its dataset is being deleted: nothing was trained"
    if not run.labels:
        return "the dataset has no images: add labelled images before training"
    if len(run.labels) < 2:
        return f"the dataset has only one label ('{run.labels[0]}'): a classifier needs images of at least two labels"
    return None


def training_run_create(*, dataset: DataSet, user=None, enqueue: bool = True) -> TrainingRun:
    """Snapshot the dataset into a queued run; refuse while another run of it is queued or running."""
    run = runs.run_queue(snapshot=run_snapshot(dataset=dataset), user=user)
    if enqueue:
        runner.enqueue_on_commit(kind=TrainingRun.KIND, job_id=run.pk)
    return run


def training_run_cancel(*, run: TrainingRun) -> bool:
    """Cancel a queued or running run (a running one stops after its current batch); False if it had ended."""
    return runs.run_cancel(run=run)


def training_run_resume(*, run: TrainingRun, enqueue: bool = True) -> TrainingRun:
    """Queue a cancelled or interrupted run again; it continues from its last completed epoch."""
    run = runs.run_queue_again(run=run)
    if enqueue:
        runner.enqueue_on_commit(kind=TrainingRun.KIND, job_id=run.pk)
    return run


@transaction.atomic
def training_run_delete(*, run: TrainingRun) -> None:
    """Delete an ended run and its files; when it was current, the newest remaining version that was current
    once becomes current (runs.dataset_current_run_choose)."""
    if run.is_active:
        raise Conflict(f"run {run.pk} is {run.status}: cancel it before deleting it", field="run")
    files = [(field.storage, field.name) for field in (run.model_file, run.log_file)]
    # The logs of its export jobs, deleted with it (CASCADE), go too.
    files += [
        (run.log_file.storage, name) for name in run.export_jobs.exclude(log_file="").values_list("log_file", flat=True)
    ]
    dataset_id = run.dataset_id
    folders = [run.checkpoint, f"exports/run_{run.pk}", f"explanations/run_{run.pk}"]
    run.delete()
    runs.dataset_current_run_choose(dataset_id=dataset_id, reason="deleted")
    delete_files_on_commit(files)
    delete_folders_on_commit(folders)


def dataset_model_validate(
    *,
    dataset: DataSet,
    process: str | None = None,
    architecture: str | None = None,
    image_size: int | None = None,
    color_mode: str | None = None,
) -> ValidationReport:
    """Build (not train) the dataset's model in a child process, with a time limit: its layers or
    the error and the line that caused it. Options given override the saved ones."""
    spec = ModelSpec(
        code=dataset.process if process is None else process,
        image_size=image_size or dataset.image_size,
        channels=channels_for(color_mode or dataset.color_mode),
        num_classes=max(2, len(dataset_labels(dataset=dataset))),
        learning_rate=dataset.learning_rate,
        architecture=architecture or dataset.architecture,
        augmentation=Augmentation(**dataset.augmentation),
        weights_path=str(media_local_copy(name=dataset.weights_file.name)) if dataset.weights_file else None,
    )
    with model_job_slot(what="validating the model"):
        return validate_model(spec, timeout=settings.KERASUI_VALIDATE_TIMEOUT)
