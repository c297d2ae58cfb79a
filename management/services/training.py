"""Use cases for training: create a run (the snapshot), claim it, execute it, cancel it.

`training_run_execute` is what the training process runs (the `train` command, started by a
runner); the web process only creates, claims and cancels runs and reads their progress.
"""

from __future__ import annotations

import os
import random
import socket
import tempfile
import traceback
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files import File
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from management.ml.images import channels_for, load_image
from management.models import DataSet, DataSetItem, TrainingRun
from management.services.datasets import dataset_labels, delete_files_on_commit
from management.services.errors import Conflict

Status = TrainingRun.Status


class TrainingFailed(Exception):
    """A run cannot go on; the message is shown to the user as the run's error."""


def this_worker(pid: int | None = None) -> str:
    return f"{socket.gethostname()}:{pid or os.getpid()}"


def training_run_create(*, dataset: DataSet, user=None, enqueue: bool = True) -> TrainingRun:
    """Snapshot the dataset into a queued run; refuse while another run of it is queued or running."""
    active = dataset.runs.filter(status__in=TrainingRun.ACTIVE).first()
    if active is not None:
        raise Conflict(
            f"dataset '{dataset.name}' is already being trained (run {active.pk} is {active.status})",
            field="dataset",
        )
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(
                dataset=dataset,
                process=dataset.process,
                epochs=dataset.epochs,
                batch_size=dataset.batch_size,
                image_size=dataset.image_size,
                color_mode=dataset.color_mode,
                validation_split=dataset.validation_split,
                verbose=dataset.verbose,
                labels=dataset_labels(dataset=dataset),
                seed=random.randrange(2**31),
                created_by=user if user is not None and user.is_authenticated else None,
            )
    except IntegrityError:
        # Two requests raced past the check above; the database's constraint settled it.
        raise Conflict(f"dataset '{dataset.name}' is already being trained", field="dataset") from None
    if enqueue:
        from management import runners

        transaction.on_commit(lambda: runners.enqueue(run.pk))
    return run


def training_run_claim(*, run_id: int, worker: str) -> TrainingRun | None:
    """Move a queued run to running for `worker`; None when it was not queued any more."""
    claimed = TrainingRun.objects.filter(pk=run_id, status=Status.QUEUED).update(
        status=Status.RUNNING, started_at=timezone.now(), worker=worker, progress=0, epoch=0
    )
    return TrainingRun.objects.get(pk=run_id) if claimed else None


def training_run_claim_next(*, worker: str, max_running: int) -> TrainingRun | None:
    """Claim the oldest queued run if fewer than `max_running` runs are running."""
    with transaction.atomic():
        if TrainingRun.objects.filter(status=Status.RUNNING).count() >= max_running:
            return None
        run = TrainingRun.objects.filter(status=Status.QUEUED).order_by("created_at", "id").first()
        if run is None:
            return None
        return training_run_claim(run_id=run.pk, worker=worker)


def training_run_cancel(*, run: TrainingRun) -> bool:
    """Cancel a queued or running run; a running one stops after its current batch."""
    cancelled = TrainingRun.objects.filter(pk=run.pk, status__in=TrainingRun.ACTIVE).update(
        status=Status.CANCELLED, finished_at=timezone.now()
    )
    run.refresh_from_db()
    return bool(cancelled)


def training_run_fail(*, run_id: int, message: str) -> bool:
    """End an active run as failed with a readable message; False if it had already ended."""
    return bool(
        TrainingRun.objects.filter(pk=run_id, status__in=TrainingRun.ACTIVE).update(
            status=Status.FAILED, error=message, finished_at=timezone.now()
        )
    )


def training_run_log_path(*, run: TrainingRun) -> Path:
    """Give the run its log file under media and return where to write it."""
    name = f"logs/run_{run.pk}.log"
    path = Path(settings.MEDIA_ROOT) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    TrainingRun.objects.filter(pk=run.pk).update(log_file=name)
    run.log_file.name = name
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def training_runs_fail_interrupted() -> int:
    """Mark runs left 'running' by a training process of this host that no longer exists."""
    host = socket.gethostname()
    failed = 0
    for run in TrainingRun.objects.filter(status=Status.RUNNING, worker__startswith=f"{host}:"):
        pid = run.worker.rsplit(":", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            failed += training_run_fail(
                run_id=run.pk,
                message="interrupted: the training process stopped before the run finished "
                "(was the server restarted?). Train again to start a new run.",
            )
    return failed


def _load_training_images(run: TrainingRun) -> tuple[np.ndarray, np.ndarray]:
    items = list(DataSetItem.objects.filter(dataset_id=run.dataset_id, label__in=run.labels).order_by("id"))
    channels = channels_for(run.color_mode)
    images = np.empty((len(items), run.image_size, run.image_size, channels), dtype=np.uint8)
    index_of = {label: index for index, label in enumerate(run.labels)}
    labels = np.empty(len(items), dtype=np.int32)
    for position, item in enumerate(items):
        try:
            with item.image.open("rb") as file:
                images[position] = load_image(file, image_size=run.image_size, color_mode=run.color_mode)
        except (ValueError, OSError) as error:
            raise TrainingFailed(
                f"item {item.pk} (label '{item.label}', file {Path(item.image.name).name}) "
                f"cannot be read: {error}. Delete or replace it and train again."
            ) from None
        labels[position] = index_of[item.label]
    return images, labels


def _check_labels(run: TrainingRun) -> None:
    if not run.labels:
        raise TrainingFailed("the dataset has no images: add labelled images before training")
    if len(run.labels) < 2:
        raise TrainingFailed(
            f"the dataset has only one label ('{run.labels[0]}'): a classifier needs images of at least two labels"
        )


def _report_progress(run_id: int):
    """A reporter writing progress to the run; it answers False once the run was cancelled."""

    def report(progress) -> bool:
        updated = TrainingRun.objects.filter(pk=run_id, status=Status.RUNNING).update(
            progress=round(progress.percent, 2), epoch=progress.epoch, history=progress.history
        )
        return bool(updated)

    return report


def _save_model(run: TrainingRun, model) -> str:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"run_{run.pk}.keras"
        model.save(path)
        with path.open("rb") as file:
            return run.model_file.storage.save(f"models/run_{run.pk}.keras", File(file))


def training_run_execute(*, run: TrainingRun) -> TrainingRun:
    """Train a claimed (running) run to its end: succeeded, failed with a message, or cancelled.

    Prints Keras' progress to standard output (the run's log). Never raises for a failure of the
    run itself: that failure is recorded on the run.
    """
    try:
        _check_labels(run)
        print(f"Run {run.pk} of dataset '{run.dataset.name}': labels {run.labels}", flush=True)
        images, labels = _load_training_images(run)
        print(f"Loaded {len(images)} images of {run.image_size}x{run.image_size} ({run.color_mode})", flush=True)

        from management.ml import fit as ml_fit
        from management.ml.models import ModelCodeError, ModelSpec, build_model, model_summary

        spec = ModelSpec(
            code=run.process,
            image_size=run.image_size,
            channels=channels_for(run.color_mode),
            num_classes=len(run.labels),
        )
        try:
            model = build_model(spec)
        except ModelCodeError as error:
            raise TrainingFailed(f"model code: {error}") from None
        print(model_summary(model), flush=True)
        options = ml_fit.FitOptions(
            epochs=run.epochs,
            batch_size=run.batch_size,
            validation_split=run.validation_split,
            verbose=run.verbose,
            seed=run.seed,
        )
        try:
            result = ml_fit.fit(model, images, labels, options, _report_progress(run.pk))
        except ValueError as error:
            raise TrainingFailed(str(error)) from None
        if result.stopped:
            print(f"Run {run.pk} was cancelled.", flush=True)
            run.refresh_from_db()
            return run
        model_name = _save_model(run, model)
        with transaction.atomic():
            finished = TrainingRun.objects.filter(pk=run.pk, status=Status.RUNNING).update(
                status=Status.SUCCEEDED,
                progress=100,
                epoch=len(result.history),
                history=result.history,
                metrics=result.metrics,
                model_file=model_name,
                finished_at=timezone.now(),
            )
            if finished:
                # The newest succeeded run is current; an older run finishing late does not win.
                DataSet.objects.filter(pk=run.dataset_id).filter(
                    Q(current_run__isnull=True) | Q(current_run__lt=run.pk)
                ).update(current_run=run.pk)
            else:
                run.model_file.storage.delete(model_name)
        print(f"Run {run.pk} finished: {result.metrics}", flush=True)
    except TrainingFailed as error:
        print(f"Run {run.pk} failed: {error}", flush=True)
        training_run_fail(run_id=run.pk, message=str(error))
    except Exception as error:  # noqa: BLE001 - whatever happens, the run must not stay "running"
        traceback.print_exc()
        training_run_fail(run_id=run.pk, message=f"unexpected error: {type(error).__name__}: {error}")
    run.refresh_from_db()
    return run


@transaction.atomic
def training_run_delete(*, run: TrainingRun) -> None:
    """Delete an ended run and its files; the newest remaining succeeded run becomes current."""
    if run.is_active:
        raise Conflict(f"run {run.pk} is {run.status}: cancel it before deleting it", field="run")
    files = [(field.storage, field.name) for field in (run.model_file, run.log_file)]
    dataset_id = run.dataset_id
    run.delete()
    successor = (
        TrainingRun.objects.filter(dataset_id=dataset_id, status=Status.SUCCEEDED)
        .exclude(model_file="")
        .order_by("-id")
        .first()
    )
    DataSet.objects.filter(pk=dataset_id, current_run__isnull=True).update(current_run=successor)
    delete_files_on_commit(files)
