"""Queueing the job that suggests labels for a dataset's unlabelled images (see suggestions.py): asked for
by the writes that add unlabelled images (datasets.py) and by those that change the current model (runs.py),
after their commit. Kept apart so that those modules do not import the suggestions' use cases.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction

from datasets.models import DataSet, DataSetItem
from jobs import lifecycle, runner
from labelling.models import SuggestionJob
from training.models import TrainingRun


def current_model_run(dataset_id: int) -> TrainingRun | None:
    """The dataset's current version when it has a model to predict with, else None."""
    dataset = DataSet.objects.filter(pk=dataset_id).select_related("current_run").first()
    run = dataset.current_run if dataset is not None else None
    if run is None or run.status != TrainingRun.Status.SUCCEEDED or not run.model_file:
        return None
    return run


def suggestions_request(*, dataset_id: int, user=None, enqueue: bool = True) -> SuggestionJob | None:
    """Queue the job that suggests labels for a dataset's unlabelled images with its current model.

    None when the dataset has no model, no unlabelled image, or a suggestions job already queued (that
    one reads the images and the model when it starts, so it covers this request too)."""
    run = current_model_run(dataset_id)
    if run is None or not DataSetItem.objects.filter(dataset_id=dataset_id, label="").exists():
        return None
    if SuggestionJob.objects.filter(dataset_id=dataset_id, status=SuggestionJob.Status.QUEUED).exists():
        return None
    fields = {"dataset_id": dataset_id, "run": run, "created_by": user if getattr(user, "pk", None) else None}
    try:
        with transaction.atomic():
            job = lifecycle.job_create(kind=SuggestionJob.KIND, fields=fields)
    except IntegrityError:
        # One is running: it may have read the images before these arrived; the next one is queued when it ends.
        return None
    if enqueue:
        runner.enqueue_on_commit(kind=SuggestionJob.KIND, job_id=job.pk)
    return job


def suggestions_request_on_commit(*, dataset_id: int, enqueue: bool = True) -> None:
    """suggestions_request once the current transaction (which adds images or changes the model) commits.

    `enqueue` False: only the queued row is written, for the thread runner's loop to claim (a job's own
    process, such as training's, must not start a runner of its own)."""
    transaction.on_commit(lambda: suggestions_request(dataset_id=dataset_id, enqueue=enqueue))
