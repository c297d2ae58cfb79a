"""The training runs' lifecycle: the moves of a run (a job of kind "training") and which run is its
dataset's current one.

The only module that writes `DataSet.current_run`. A run's status changes through the job lifecycle
(jobs/lifecycle.py), whose table for training (the common moves plus import, stop, resume, promote)
holds every move a run may make; here are the training-specific rules around those moves. Its callers
(the web use cases, the trainer) import it; it imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from datasets.models import DataSet
from jobs import lifecycle
from jobs.lifecycle import IllegalTransition, this_worker  # noqa: F401 - the run lifecycle's public names
from jobs.registry import kind_get
from management.errors import Conflict
from training.models import RunData, TrainingRun
from training.promotion import promotion_decide

Status = TrainingRun.Status
KIND = TrainingRun.KIND
INTERRUPTED_HINT = kind_get(KIND).lost_hint


def _move(run_id: int, event: str, fields: dict | None = None, narrow: Callable[[QuerySet], QuerySet] | None = None):
    return lifecycle.job_move(kind=KIND, job_id=run_id, event=event, fields=fields, narrow=narrow)


def transition(*, run_id: int, event: str, **fields) -> None:
    """Move run `run_id` by `event`, writing `fields` with it; IllegalTransition when its status forbids it."""
    lifecycle.job_transition(kind=KIND, job_id=run_id, event=event, **fields)


# --- which run answers predictions -----------------------------------------------------------------


def dataset_current_run_choose(*, dataset_id: int, reason: str, run_id: int | None = None) -> bool:
    """The one rule of which run is a dataset's current one (the model that answers predictions).

    trained, imported: the newest version is current; an older run finishing late does not win.
    promoted: a person chose this version (a rollback when it is older).
    deleted: the current run was deleted; the newest remaining version that was current once (promoted when
    it finished, or by a person), else the newest version, unless one was chosen meanwhile. A version the
    promotion policy kept back does not come back through a deletion.
    """
    datasets = DataSet.objects.filter(pk=dataset_id)
    if reason in {"trained", "imported"}:
        fields = {"current_run": run_id} | ({"updated_at": timezone.now()} if reason == "imported" else {})
        datasets = datasets.filter(Q(current_run__isnull=True) | Q(current_run__lt=run_id))
    elif reason == "promoted":
        fields = {"current_run": run_id, "updated_at": timezone.now()}
    elif reason == "deleted":
        versions = TrainingRun.objects.filter(dataset_id=dataset_id, status=Status.SUCCEEDED).exclude(model_file="")
        successor = (
            versions.filter(promotion__promoted=True).order_by("-id").first() or versions.order_by("-id").first()
        )
        fields = {"current_run": successor}
        datasets = datasets.filter(current_run__isnull=True)
    else:
        raise ValueError(f"no rule for making a run current because it was {reason!r}")
    changed = bool(datasets.update(**fields))
    if changed:
        # A new model: its suggestions for the unlabelled images, once this commits.
        from labelling.suggestion_jobs import suggestions_request_on_commit

        # A run that finished did so in the training process: the web process's runner claims the job.
        in_job_process = reason == "trained" and settings.KERASUI_TRAINING_BACKEND == "thread"
        suggestions_request_on_commit(dataset_id=dataset_id, enqueue=not in_job_process)
    return changed


# --- from queued to running --------------------------------------------------------------------------


def _refuse_while_training(dataset: DataSet, *, other_than: TrainingRun | None = None) -> None:
    """Conflict when another run of the dataset is queued or running (the database's constraint
    settles a race past this check)."""
    active = dataset.runs.filter(status__in=TrainingRun.ACTIVE).exclude(pk=getattr(other_than, "pk", None)).first()
    if active is not None:
        raise Conflict(
            f"dataset '{dataset.name}' is already being trained (run {active.pk} is {active.status})",
            field="dataset",
        )


def run_queue(*, snapshot: dict, user=None) -> TrainingRun:
    """A new queued run of `snapshot['dataset']`; refused while another run of it is queued or running."""
    dataset = snapshot["dataset"]
    _refuse_while_training(dataset)
    try:
        with transaction.atomic():
            return lifecycle.job_create(
                kind=KIND,
                fields={**snapshot, "created_by": user if user is not None and user.is_authenticated else None},
            )
    except IntegrityError:
        # Two requests raced past the check above; the database's constraint settled it.
        raise Conflict(f"dataset '{dataset.name}' is already being trained", field="dataset") from None


def run_claim(*, run_id: int, worker: str) -> TrainingRun | None:
    """Move a queued run to running for `worker`; None when it was not queued any more."""
    return lifecycle.job_claim(kind=KIND, job_id=run_id, worker=worker)


def run_log_path(*, run: TrainingRun) -> Path:
    """Give the run its log file under media and return where to write it."""
    return lifecycle.job_log_path(job=run)


# --- while it runs ---------------------------------------------------------------------------------


def run_set_phase(*, run_id: int, phase: str, progress: float = 0.0) -> bool:
    """Show what the training process does now (progress 0–1); False once the run is not running (cancelled)."""
    return lifecycle.job_progress(kind=KIND, job_id=run_id, phase=phase, progress=progress)


def run_progress(*, run_id: int, progress) -> bool:
    """Write an epoch's progress (an ml.fit.Progress) to the run; False once it was cancelled."""
    fields = {"progress": progress.percent / 100, "epoch": progress.epoch, "history": progress.history}
    return lifecycle.job_progress(kind=KIND, job_id=run_id, **fields)


def run_heartbeat(*, run_id: int) -> bool:
    """Record that the run's training process is alive (the database's clock); False once it ended."""
    return lifecycle.job_heartbeat(kind=KIND, job_id=run_id)


# --- how it ends -------------------------------------------------------------------------------------


def run_succeed(*, run: TrainingRun, **results) -> bool:
    """End a running run as succeeded with its results (model_file, metrics, evaluation, …); it becomes
    current when its dataset's promotion policy says so (promotion.py), and the decision and its reason
    are stored with the status. False, with nothing written, when it was not running any more."""
    fields = dict(progress=1.0, phase="", checkpoint="", finished_at=timezone.now(), **results)
    predictions = None
    if "evaluation" in fields:
        fields["evaluation"], predictions = evaluation_split(fields["evaluation"])
    with transaction.atomic():
        # The dataset's row is locked so that a promotion meanwhile cannot slip between reading and choosing.
        current_id = (
            DataSet.objects.select_for_update().filter(pk=run.dataset_id).values_list("current_run", flat=True).first()
        )
        current = TrainingRun.objects.filter(pk=current_id).first() if current_id else None
        splits = RunData.objects.filter(run_id=run.pk).values_list("splits", flat=True).first() or {}
        decision = promotion_decide(
            evaluation=fields.get("evaluation", run.evaluation),
            splits=splits,
            current=current,
            policy=run.promotion_policy,
        )
        if not _move(run.pk, "succeed", {**fields, "promotion": decision}):
            return False
        if predictions is not None:
            RunData.objects.update_or_create(run_id=run.pk, defaults={"predictions": predictions})
        if decision["promoted"] and not dataset_current_run_choose(
            dataset_id=run.dataset_id, run_id=run.pk, reason="trained"
        ):
            newer = DataSet.objects.filter(pk=run.dataset_id).values_list("current_run", flat=True).first()
            decision |= {"promoted": False, "reason": f"a newer version (run {newer}) is current: kept as a version"}
            TrainingRun.objects.filter(pk=run.pk).update(promotion=decision)
    run.promotion = decision
    return True


@transaction.atomic
def run_splits_save(*, run: TrainingRun, splits: dict[str, list[int]]) -> None:
    """Record the item ids of each split of a run (its per-image data) and how many each holds (what lists show)."""
    RunData.objects.update_or_create(run_id=run.pk, defaults={"splits": splits})
    counts = {name: len(ids) for name, ids in splits.items()}
    TrainingRun.objects.filter(pk=run.pk).update(split_counts=counts)
    run.split_counts = counts
    run.per_image = RunData(run=run, splits=splits, predictions=run.predictions)


def evaluation_split(evaluation: dict) -> tuple[dict, dict[str, list[list]]]:
    """An evaluation as ml.evaluate reports it, as it is stored: each split's report without its per-image
    `predictions` (marked `predictions_stored` when it had them), and those predictions by split."""
    summary, predictions = {}, {}
    for name, report in (evaluation or {}).items():
        if isinstance(report, dict) and "predictions" in report:
            report = dict(report)
            predictions[name] = report.pop("predictions")
            report["predictions_stored"] = bool(predictions[name])
        summary[name] = report
    return summary, predictions


def evaluation_joined(*, run: TrainingRun) -> dict:
    """The run's evaluation with each split's per-image predictions back in (the run's own API answer)."""
    predictions = run.predictions
    return {
        name: {**report, "predictions": predictions[name]} if name in predictions else report
        for name, report in (run.evaluation or {}).items()
    }


def run_fail(*, run_id: int, message: str, interrupted: bool = False) -> bool:
    """End an active run as failed with a readable message; False if it had already ended.

    An interrupted run (its process died) keeps its checkpoint and can be resumed.
    """
    return lifecycle.job_fail(kind=KIND, job_id=run_id, message=message, lost=interrupted)


def run_cancel(*, run: TrainingRun) -> bool:
    """Cancel a queued or running run; a running one stops after its current batch."""
    cancelled = lifecycle.job_cancel(kind=KIND, job_id=run.pk)
    run.refresh_from_db()
    return cancelled


def run_keep_epochs(*, run_id: int, history: list[dict]) -> bool:
    """A cancelled run's process stopped: keep its completed epochs, so it resumes from the last of them."""
    return _move(run_id, "stop", {"history": history, "epoch": len(history)})


def run_queue_again(*, run: TrainingRun) -> TrainingRun:
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
    fields = dict(interrupted=False, error="", finished_at=None, phase="")
    try:
        with transaction.atomic():
            resumed = _move(run.pk, "resume", fields, lambda runs: runs.filter(status=run.status))
    except IntegrityError:
        raise Conflict(f"dataset '{run.dataset.name}' is already being trained", field="dataset") from None
    if not resumed:
        raise Conflict(f"run {run.pk} changed meanwhile; reload it", field="run")
    run.refresh_from_db()
    return run


# --- versions ------------------------------------------------------------------------------------------


def run_promote(*, run: TrainingRun) -> TrainingRun:
    """Make a version (a succeeded run with a model) its dataset's current model: a person's choice,
    which overrides the promotion policy (its decision is kept in the reason)."""
    refused = Conflict(
        f"run {run.pk} is {run.status} and has no model: only a succeeded run can be current", field="run"
    )
    if not run.is_version:
        raise refused
    previous = TrainingRun.objects.filter(pk=run.pk).values_list("promotion", flat=True).first() or {}
    # The policy's reason when the run finished is kept through any number of manual promotions.
    finished = previous.get("finished_reason", "" if previous.get("manual") else previous.get("reason", ""))
    reason = "promoted by a person" + (f" (when it finished: {finished})" if finished else "")
    promotion = {**previous, "promoted": True, "manual": True, "reason": reason, "finished_reason": finished}
    with transaction.atomic():
        if not _move(run.pk, "promote", {"promotion": promotion}, narrow=lambda runs: runs.exclude(model_file="")):
            raise refused
        dataset_current_run_choose(dataset_id=run.dataset_id, run_id=run.pk, reason="promoted")
    run.dataset.current_run_id = run.pk
    run.promotion = promotion
    return run


def run_add_imported(*, snapshot: dict, user=None, save_model: Callable[[TrainingRun], str]) -> TrainingRun:
    """A succeeded run for an uploaded model; `save_model(run)` stores its file and returns the name.

    Made current as the newest version, in one transaction with its creation (the dataset object too).
    """
    now = timezone.now()
    with transaction.atomic():
        run = lifecycle.job_create(
            kind=KIND,
            event="import",
            fields={
                **snapshot,
                "progress": 1.0,
                "imported": True,
                "worker": "imported",
                "promotion": {"promoted": True, "manual": True, "reason": "imported by a person: made current"},
                "created_by": user if user is not None and user.is_authenticated else None,
                "started_at": now,
                "finished_at": now,
            },
        )
        TrainingRun.objects.filter(pk=run.pk).update(model_file=save_model(run))
        dataset_current_run_choose(dataset_id=run.dataset_id, run_id=run.pk, reason="imported")
    run.refresh_from_db()
    snapshot["dataset"].current_run = run
    return run
