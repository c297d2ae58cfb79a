"""Use cases for training: create a run (the snapshot), claim it, execute it, cancel it.

`training_run_execute` is what the training process runs (the `train` command, started by a
runner); the web process only creates, claims and cancels runs and reads their progress.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import socket
import tempfile
import threading
import time
import traceback
from datetime import timedelta
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files import File
from django.db import IntegrityError, connection, transaction
from django.db.models import DateTimeField, ExpressionWrapper, Q
from django.db.models.functions import Coalesce, Now
from django.utils import timezone

from management.ml.images import channels_for
from management.models import DataSet, DataSetItem, Phase, TrainingRun
from management.processes import pid_alive
from management.services.datasets import dataset_labels, delete_files_on_commit, delete_folders_on_commit
from management.services.errors import Conflict
from management.services.journal import MediaJournal, media_journal
from management.services.serving import serving_prepare_run

Status = TrainingRun.Status


class TrainingFailed(Exception):
    """A run cannot go on; the message is shown to the user as the run's error."""


def this_worker(pid: int | None = None) -> str:
    return f"{socket.gethostname()}:{pid or os.getpid()}"


def run_snapshot(*, dataset: DataSet) -> dict:
    """The fields a run copies from its dataset when it is created: what it trains with."""
    return dict(
        dataset=dataset,
        process=dataset.process,
        epochs=dataset.epochs,
        batch_size=dataset.batch_size,
        image_size=dataset.image_size,
        color_mode=dataset.color_mode,
        validation_split=dataset.validation_split,
        verbose=dataset.verbose,
        labels=dataset_labels(dataset=dataset),
        seed=dataset.seed if dataset.seed is not None else random.randrange(2**31),
        architecture=dataset.architecture,
        learning_rate=dataset.learning_rate,
        weights_file=dataset.weights_file.name or "",
        test_split=dataset.test_split,
        early_stopping_patience=dataset.early_stopping_patience,
        reduce_lr_on_plateau=dataset.reduce_lr_on_plateau,
        balance_classes=dataset.balance_classes,
        augmentation=dataset.augmentation,
    )


def _refuse_while_training(dataset: DataSet, *, other_than: TrainingRun | None = None) -> None:
    """Conflict when another run of the dataset is queued or running (the database's constraint
    settles a race past this check)."""
    active = dataset.runs.filter(status__in=TrainingRun.ACTIVE).exclude(pk=getattr(other_than, "pk", None)).first()
    if active is not None:
        raise Conflict(
            f"dataset '{dataset.name}' is already being trained (run {active.pk} is {active.status})",
            field="dataset",
        )


def training_run_create(*, dataset: DataSet, user=None, enqueue: bool = True) -> TrainingRun:
    """Snapshot the dataset into a queued run; refuse while another run of it is queued or running."""
    _refuse_while_training(dataset)
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(
                **run_snapshot(dataset=dataset),
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
        status=Status.RUNNING, started_at=timezone.now(), heartbeat_at=Now(), worker=worker, progress=0, phase=""
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


def training_run_fail(*, run_id: int, message: str, interrupted: bool = False, only_if_stale_before=None) -> bool:
    """End an active run as failed with a readable message; False if it had already ended.

    An interrupted run (its process died) keeps its checkpoint and can be resumed.
    `only_if_stale_before` (a time expression) leaves the run alone if it beat since.
    """
    runs = TrainingRun.objects.filter(pk=run_id, status__in=TrainingRun.ACTIVE)
    if only_if_stale_before is not None:
        runs = runs.alias(last_sign=Coalesce("heartbeat_at", "started_at")).filter(last_sign__lt=only_if_stale_before)
    return bool(runs.update(status=Status.FAILED, error=message, finished_at=timezone.now(), interrupted=interrupted))


INTERRUPTED_HINT = "Resume the run to continue from its last completed epoch, or train again."


def training_run_resume(*, run: TrainingRun, enqueue: bool = True) -> TrainingRun:
    """Queue a cancelled or interrupted run again; it continues from its last completed epoch."""
    if not run.resumable:
        if run.status in TrainingRun.ACTIVE:
            reason = f"it is {run.status}"
        elif run.status == Status.SUCCEEDED:
            reason = "it succeeded"
        elif run.status == Status.FAILED and not run.interrupted:
            reason = "it failed by itself (see its error); train again instead"
        elif len(run.history) >= run.epochs:
            reason = "all its epochs are completed"
        else:
            reason = "it has no checkpoint"
        raise Conflict(f"run {run.pk} cannot be resumed: {reason}", field="run")
    _refuse_while_training(run.dataset, other_than=run)
    try:
        with transaction.atomic():
            resumed = TrainingRun.objects.filter(pk=run.pk, status=run.status).update(
                status=Status.QUEUED, interrupted=False, error="", finished_at=None, phase=""
            )
    except IntegrityError:
        raise Conflict(f"dataset '{run.dataset.name}' is already being trained", field="dataset") from None
    if not resumed:
        raise Conflict(f"run {run.pk} changed meanwhile; reload it", field="run")
    if enqueue:
        from management import runners

        transaction.on_commit(lambda: runners.enqueue(run.pk))
    run.refresh_from_db()
    return run


def training_run_log_path(*, run: TrainingRun) -> Path:
    """Give the run its log file under media and return where to write it."""
    name = f"logs/run_{run.pk}.log"
    path = Path(settings.MEDIA_ROOT) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    TrainingRun.objects.filter(pk=run.pk).update(log_file=name)
    run.log_file.name = name
    return path


def training_run_heartbeat(*, run_id: int) -> bool:
    """Record that the run's training process is alive (the database's clock); False once it ended."""
    return bool(TrainingRun.objects.filter(pk=run_id, status=Status.RUNNING).update(heartbeat_at=Now()))


class Heartbeat:
    """A daemon thread beating for a run about once a second while the training process works.

    A thread, not the progress callback, so that long steps without callbacks (the first epoch's
    compilation, evaluation, saving a large model) still show the process alive.
    """

    def __init__(self, run_id: int, interval: float = 1.0) -> None:
        self.run_id = run_id
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-run-{run_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _beat(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    if not training_run_heartbeat(run_id=self.run_id):
                        return
                except Exception:  # noqa: BLE001 - a missed beat is retried; the training goes on
                    time.sleep(self.interval)
        finally:
            connection.close()


def training_runs_fail_stale(*, timeout: int | None = None) -> int:
    """Mark running runs whose heartbeat is older than `timeout` seconds failed and interrupted.

    Their process or machine stopped without ending them (killed, crashed, powered off, cut off).
    The comparison uses the database's clock, which every machine shares.
    """
    timeout = settings.KERASUI_HEARTBEAT_TIMEOUT if timeout is None else timeout
    limit = ExpressionWrapper(Now() - timedelta(seconds=timeout), output_field=DateTimeField())
    stale = (
        TrainingRun.objects.filter(status=Status.RUNNING)
        .alias(last_sign=Coalesce("heartbeat_at", "started_at"))
        .filter(last_sign__lt=limit)
    )
    failed = 0
    for run in stale.only("pk", "worker"):
        failed += training_run_fail(
            run_id=run.pk,
            message=(
                f"interrupted: no sign of life from its training process ({run.worker or 'unknown worker'}) "
                f"for more than {timeout} s: the process, its worker or its machine stopped. {INTERRUPTED_HINT}"
            ),
            interrupted=True,
            only_if_stale_before=limit,
        )
    return failed


def training_runs_fail_interrupted() -> int:
    """Mark runs left 'running' by a training process of this host that no longer exists.

    `worker` is `host:pid` (thread runner, `train`) or `node@host:pid` (a Celery worker's).
    """
    host = socket.gethostname()
    failed = 0
    candidates = TrainingRun.objects.filter(status=Status.RUNNING).filter(
        Q(worker__startswith=f"{host}:") | Q(worker__contains=f"@{host}:")
    )
    for run in candidates:
        where, _, pid = run.worker.rpartition(":")
        if where.rpartition("@")[2] == host and pid.isdigit() and not pid_alive(int(pid)):
            failed += training_run_fail(
                run_id=run.pk,
                message="interrupted: the training process stopped before the run finished "
                f"(was the server restarted?). {INTERRUPTED_HINT}",
                interrupted=True,
            )
    return failed


class Cancelled(Exception):
    """The run was cancelled while it was being prepared."""


def _set_phase(run_id: int, phase: str, progress: float = 0.0) -> None:
    updated = TrainingRun.objects.filter(pk=run_id, status=Status.RUNNING).update(phase=phase, progress=progress)
    if not updated:
        raise Cancelled


def _run_items(run: TrainingRun) -> list[DataSetItem]:
    """The run's items in row order: the recorded ones when resuming, else the dataset's labelled ones."""
    recorded = [item_id for ids in run.splits.values() for item_id in ids]
    if not recorded:
        return list(DataSetItem.objects.filter(dataset_id=run.dataset_id, label__in=run.labels).order_by("id"))
    items = list(DataSetItem.objects.filter(pk__in=recorded).order_by("id"))
    missing = len(set(recorded)) - len(items)
    if missing:
        raise TrainingFailed(
            f"{missing} image(s) this run trained on were deleted since it started: train again instead of resuming"
        )
    relabelled = [item for item in items if item.label not in run.labels]
    if relabelled:
        raise TrainingFailed(
            f"item {relabelled[0].pk} now has the label '{relabelled[0].label}', which this run's model does not "
            "have: train again instead of resuming"
        )
    return items


def _local_paths(items: list[DataSetItem], folder: Path) -> list[str]:
    """Paths the decoding processes can open: the files themselves, or copies from a remote storage."""
    paths = []
    for item in items:
        try:
            paths.append(item.image.path)
        except NotImplementedError:
            copy = folder / f"{item.pk}{Path(item.image.name).suffix}"
            with item.image.open("rb") as source, copy.open("wb") as target:
                shutil.copyfileobj(source, target)
            paths.append(str(copy))
    return paths


def _prepare_images(run: TrainingRun, items: list[DataSetItem]) -> np.ndarray:
    """The run's images, decoded once per dataset version, size and colour mode into the cache."""
    from management.ml.cache import ImageDecodeError, build_image_cache, cache_key, prune_image_cache

    folder = Path(settings.KERASUI_CACHE_DIR)
    key = cache_key(
        [(item.pk, item.image.name) for item in items], image_size=run.image_size, color_mode=run.color_mode
    )
    last_report = 0.0

    def report(done: int, total: int) -> None:
        nonlocal last_report
        if time.monotonic() - last_report >= 1.0 or done == total:
            last_report = time.monotonic()
            _set_phase(run.pk, Phase.PREPARING, round(100.0 * done / max(1, total), 2))

    with tempfile.TemporaryDirectory() as copies:
        try:
            images = build_image_cache(
                _local_paths(items, Path(copies)),
                folder=folder,
                key=key,
                image_size=run.image_size,
                color_mode=run.color_mode,
                workers=settings.KERASUI_PREPROCESS_WORKERS,
                report=report,
                max_pixels=settings.KERASUI_MAX_IMAGE_PIXELS,
            )
        except ImageDecodeError as error:
            item = items[error.index]
            raise TrainingFailed(
                f"item {item.pk} (label '{item.label}', file {Path(item.image.name).name}) "
                f"cannot be read: {error}. Delete or replace it and train again."
            ) from None
    prune_image_cache(folder, max_bytes=settings.KERASUI_CACHE_MAX_BYTES, keep={key})
    return images


def _splits(run: TrainingRun, items: list[DataSetItem], labels: np.ndarray):
    """The recorded splits as row indices, or new stratified ones (recorded on the run)."""
    from management.ml.fit import Splits, split_indices

    if run.splits:
        row_of = {item.pk: row for row, item in enumerate(items)}
        rows = {
            name: np.array([row_of[item_id] for item_id in run.splits.get(name, [])], dtype=np.int64)
            for name in ("train", "validation", "test")
        }
        return Splits(**rows)
    splits = split_indices(labels, validation_split=run.validation_split, test_split=run.test_split, seed=run.seed)
    run.splits = {name: [items[row].pk for row in getattr(splits, name)] for name in ("train", "validation", "test")}
    TrainingRun.objects.filter(pk=run.pk).update(splits=run.splits)
    return splits


def _checkpoint_folder(run: TrainingRun) -> Path:
    name = f"checkpoints/run_{run.pk}"
    if run.checkpoint != name:
        TrainingRun.objects.filter(pk=run.pk).update(checkpoint=name)
        run.checkpoint = name
    return Path(settings.MEDIA_ROOT) / name


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


def _save_model(run: TrainingRun, model, journal: MediaJournal) -> str:
    """Save the model under media through a temporary file; a failed write leaves no partial file."""
    storage = run.model_file.storage
    name = storage.get_available_name(f"models/run_{run.pk}.keras")
    journal.add(name)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"run_{run.pk}.keras"
        model.save(path)
        try:
            with path.open("rb") as file:
                return storage.save(name, File(file))
        except BaseException:
            storage.delete(name)
            raise


def _model_spec(run: TrainingRun):
    from management.ml.models import Augmentation, ModelSpec

    return ModelSpec(
        code=run.process,
        image_size=run.image_size,
        channels=channels_for(run.color_mode),
        num_classes=len(run.labels),
        learning_rate=run.learning_rate,
        architecture=run.architecture,
        augmentation=Augmentation(**run.augmentation, seed=run.seed),
        weights_path=str(Path(settings.MEDIA_ROOT) / run.weights_file) if run.weights_file else None,
    )


def dataset_model_validate(
    *,
    dataset: DataSet,
    process: str | None = None,
    architecture: str | None = None,
    image_size: int | None = None,
    color_mode: str | None = None,
):
    """Build (not train) the dataset's model in a child process, with a time limit: its layers or
    the error and the line that caused it. Options given override the saved ones."""
    from management.ml.models import Augmentation, ModelSpec
    from management.ml.validate import validate_model

    spec = ModelSpec(
        code=dataset.process if process is None else process,
        image_size=image_size or dataset.image_size,
        channels=channels_for(color_mode or dataset.color_mode),
        num_classes=max(2, len(dataset_labels(dataset=dataset))),
        learning_rate=dataset.learning_rate,
        architecture=architecture or dataset.architecture,
        augmentation=Augmentation(**dataset.augmentation),
        weights_path=dataset.weights_file.path if dataset.weights_file else None,
    )
    return validate_model(spec, timeout=settings.KERASUI_VALIDATE_TIMEOUT)


def _build_or_resume(run: TrainingRun, folder: Path) -> tuple[object, list[dict]]:
    """A new model, or the last checkpoint's (with its optimizer) and the history up to it."""
    import keras

    from management.ml.fit import last_checkpoint
    from management.ml.models import ModelCodeError, build_model, model_summary

    checkpoint = last_checkpoint(folder)
    if checkpoint is not None and run.history:
        epoch, path = checkpoint
        model = keras.saving.load_model(path)
        history = [row for row in run.history if row["epoch"] <= epoch]
        print(f"Resuming from the checkpoint of epoch {epoch}", flush=True)
        return model, history
    try:
        model = build_model(_model_spec(run))
    except (ModelCodeError, ValueError) as error:
        raise TrainingFailed(f"model code: {error}" if run.architecture == "code" else str(error)) from None
    print(model_summary(model), flush=True)
    return model, []


def _evaluation(model, images, labels, splits, run: TrainingRun, items: list[DataSetItem]) -> dict:
    """Validation and test reports; the training images' when nothing was held out."""
    from management.ml.evaluate import evaluate

    item_ids = [item.pk for item in items]
    parts = {"validation": splits.validation, "test": splits.test}
    if not len(splits.validation) and not len(splits.test):
        parts = {"training": np.sort(splits.train)}
    return {
        name: evaluate(
            model, images, labels, rows, label_names=run.labels, item_ids=item_ids, batch_size=max(run.batch_size, 64)
        )
        for name, rows in parts.items()
        if len(rows)
    }


def training_run_execute(*, run: TrainingRun) -> TrainingRun:
    """Train a claimed (running) run to its end: succeeded, failed with a message, or cancelled.

    Prints Keras' progress to standard output (the run's log). Never raises for a failure of the
    run itself: that failure is recorded on the run.
    """
    try:
        _check_labels(run)
        print(f"Run {run.pk} of dataset '{run.dataset.name}': labels {run.labels}", flush=True)
        items = _run_items(run)
        _set_phase(run.pk, Phase.PREPARING)
        started = time.monotonic()
        images = _prepare_images(run, items)
        index_of = {label: index for index, label in enumerate(run.labels)}
        labels = np.array([index_of[item.label] for item in items], dtype=np.int32)
        print(
            f"Prepared {len(images)} images of {run.image_size}x{run.image_size} ({run.color_mode}) "
            f"in {time.monotonic() - started:.1f} s",
            flush=True,
        )
        splits = _splits(run, items, labels)
        print(
            f"Split (seed {run.seed}): {len(splits.train)} training, {len(splits.validation)} validation, "
            f"{len(splits.test)} test images",
            flush=True,
        )

        from management.ml import fit as ml_fit

        _set_phase(run.pk, Phase.BUILDING)
        folder = _checkpoint_folder(run)
        model, history = _build_or_resume(run, folder)
        _set_phase(run.pk, Phase.TRAINING, 100.0 * len(history) / run.epochs)
        options = ml_fit.FitOptions(
            epochs=run.epochs,
            batch_size=run.batch_size,
            validation_split=run.validation_split,
            test_split=run.test_split,
            verbose=run.verbose,
            seed=run.seed,
            patience=run.early_stopping_patience,
            reduce_lr_on_plateau=run.reduce_lr_on_plateau,
            balance_classes=run.balance_classes,
        )
        try:
            result = ml_fit.fit(
                model,
                images,
                labels,
                options,
                _report_progress(run.pk),
                splits=splits,
                checkpoint_folder=folder,
                history=history,
            )
        except ValueError as error:
            raise TrainingFailed(str(error)) from None
        if result.stopped:
            # Keep the completed epochs with the run: it resumes from the last of them.
            TrainingRun.objects.filter(pk=run.pk, status=Status.CANCELLED).update(
                history=result.history, epoch=len(result.history)
            )
            raise Cancelled
        if result.stopped_early:
            print(f"Stopped early: no improvement since epoch {result.best_epoch}", flush=True)

        _set_phase(run.pk, Phase.EVALUATING, 100)
        evaluation = _evaluation(model, images, labels, splits, run, items)
        metrics = dict(result.metrics)
        for name in ("validation", "test"):
            if name in evaluation:
                prefix = "val" if name == "validation" else "test"
                metrics[f"{prefix}_loss"] = evaluation[name]["loss"]
                metrics[f"{prefix}_accuracy"] = evaluation[name]["accuracy"]
        _set_phase(run.pk, Phase.SAVING, 100)
        with media_journal() as journal:
            model_name = _save_model(run, model, journal)
            # Issue 17 (serving): the ONNX export is made and proven before the run becomes current.
            serving_prepare_run(run=run, model_path=run.model_file.storage.path(model_name))
            try:
                with transaction.atomic():
                    finished = TrainingRun.objects.filter(pk=run.pk, status=Status.RUNNING).update(
                        status=Status.SUCCEEDED,
                        progress=100,
                        phase="",
                        epoch=len(result.history),
                        history=result.history,
                        metrics=metrics,
                        evaluation=evaluation,
                        model_file=model_name,
                        checkpoint="",
                        finished_at=timezone.now(),
                    )
                    if finished:
                        # The newest succeeded run is current; an older run finishing late does not win.
                        DataSet.objects.filter(pk=run.dataset_id).filter(
                            Q(current_run__isnull=True) | Q(current_run__lt=run.pk)
                        ).update(current_run=run.pk)
                        transaction.on_commit(lambda: shutil.rmtree(folder, ignore_errors=True))
                    else:
                        run.model_file.storage.delete(model_name)
            except BaseException:
                run.model_file.storage.delete(model_name)
                raise
        print(f"Run {run.pk} finished: {metrics}", flush=True)
    except Cancelled:
        print(f"Run {run.pk} was cancelled.", flush=True)
    except TrainingFailed as error:
        print(f"Run {run.pk} failed: {error}", flush=True)
        training_run_fail(run_id=run.pk, message=str(error))
    except OSError as error:
        traceback.print_exc()
        reason = "the disk is full" if error.errno == errno.ENOSPC else (error.strerror or str(error))
        where = f" ({error.filename})" if error.filename else ""
        training_run_fail(
            run_id=run.pk,
            message=f"a file could not be written{where}: {reason}. Nothing of this run became current; "
            "free some space and resume the run or train again.",
            interrupted=True,
        )
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
    folders = [run.checkpoint, f"exports/run_{run.pk}"]
    run.delete()
    successor = (
        TrainingRun.objects.filter(dataset_id=dataset_id, status=Status.SUCCEEDED)
        .exclude(model_file="")
        .order_by("-id")
        .first()
    )
    DataSet.objects.filter(pk=dataset_id, current_run__isnull=True).update(current_run=successor)
    delete_files_on_commit(files)
    delete_folders_on_commit(folders)
