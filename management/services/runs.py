"""The run lifecycle: every change of a TrainingRun's status, and of which run is its dataset's current one.

The only module that writes `TrainingRun.status` and `DataSet.current_run`. The moves a run may make
are the table TRANSITIONS; each is a compare-and-set on the status in the database, so processes racing
for one run (a cancel during a claim, a watchdog and a finishing process) settle there. Its callers (the
web use cases, the runners, the Celery tasks, the trainer) import it; it imports none of them.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import DateTimeField, ExpressionWrapper, Q, QuerySet
from django.db.models.functions import Coalesce, Now
from django.utils import timezone

from management import heartbeat
from management.models import DataSet, TrainingRun
from management.processes import pid_alive
from management.services.errors import Conflict
from management.services.promotion import promotion_decide

Status = TrainingRun.Status

# event: (the statuses a run may make it from, the status it leaves the run in). No source: a new run.
# An event whose source is its target records something about a run in that status (progress, a beat).
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "queue": ((), Status.QUEUED),  # a person asks for a training: the snapshot is taken
    "import": ((), Status.SUCCEEDED),  # a trained model uploaded as a version
    "claim": ((Status.QUEUED,), Status.RUNNING),  # a runner or worker takes it
    "start": ((Status.RUNNING,), Status.RUNNING),  # its training process started
    "progress": ((Status.RUNNING,), Status.RUNNING),  # phase, epoch, history, heartbeat
    "succeed": ((Status.RUNNING,), Status.SUCCEEDED),  # its model saved; it may become current
    "fail": ((Status.QUEUED, Status.RUNNING), Status.FAILED),  # it cannot go on (its own error)
    "interrupt": ((Status.QUEUED, Status.RUNNING), Status.FAILED),  # its process was lost; resumable
    "cancel": ((Status.QUEUED, Status.RUNNING), Status.CANCELLED),  # a person stopped it
    "stop": ((Status.CANCELLED,), Status.CANCELLED),  # its process stopped; completed epochs kept
    "resume": ((Status.CANCELLED, Status.FAILED), Status.QUEUED),  # continue from its checkpoint
    "promote": ((Status.SUCCEEDED,), Status.SUCCEEDED),  # a person makes this version current
}

INTERRUPTED_HINT = "Resume the run to continue from its last completed epoch, or train again."


class IllegalTransition(Conflict):
    """A run asked to make a move that TRANSITIONS does not allow from its status."""

    def __init__(self, run_id: int, event: str, status: str | None):
        super().__init__(f"run {run_id} cannot {event}: it is {status or 'deleted'}", field="run")
        self.run_id, self.event, self.status = run_id, event, status


def _move(run_id: int, event: str, fields: dict | None = None, narrow: Callable[[QuerySet], QuerySet] | None = None):
    """The one write of a status: compare-and-set from the event's sources; True when it happened."""
    sources, target = TRANSITIONS[event]
    if not sources:
        raise ValueError(f"'{event}' makes a new run; it is not a move of run {run_id}")
    runs = TrainingRun.objects.filter(pk=run_id, status__in=sources)
    if narrow is not None:
        runs = narrow(runs)
    return bool(runs.update(status=target, **(fields or {})))


def _status(run_id: int) -> str | None:
    return TrainingRun.objects.filter(pk=run_id).values_list("status", flat=True).first()


def transition(*, run_id: int, event: str, **fields) -> None:
    """Move run `run_id` by `event`, writing `fields` with it; IllegalTransition when its status forbids it."""
    if not _move(run_id, event, fields):
        raise IllegalTransition(run_id, event, _status(run_id))


def _create(event: str, fields: dict) -> TrainingRun:
    sources, target = TRANSITIONS[event]
    if sources:
        raise ValueError(f"'{event}' moves an existing run; it does not make one")
    return TrainingRun.objects.create(**fields, status=target)


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
    return bool(datasets.update(**fields))


# --- from queued to running --------------------------------------------------------------------------


def this_worker(pid: int | None = None) -> str:
    return f"{socket.gethostname()}:{pid or os.getpid()}"


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
            return _create(
                "queue", {**snapshot, "created_by": user if user is not None and user.is_authenticated else None}
            )
    except IntegrityError:
        # Two requests raced past the check above; the database's constraint settled it.
        raise Conflict(f"dataset '{dataset.name}' is already being trained", field="dataset") from None


def run_claim(*, run_id: int, worker: str) -> TrainingRun | None:
    """Move a queued run to running for `worker`; None when it was not queued any more."""
    fields = dict(started_at=timezone.now(), heartbeat_at=Now(), worker=worker, progress=0, phase="")
    return TrainingRun.objects.get(pk=run_id) if _move(run_id, "claim", fields) else None


def run_claim_next(*, worker: str, max_running: int) -> TrainingRun | None:
    """Claim the oldest queued run if fewer than `max_running` runs are running."""
    with transaction.atomic():
        if TrainingRun.objects.filter(status=Status.RUNNING).count() >= max_running:
            return None
        run = TrainingRun.objects.filter(status=Status.QUEUED).order_by("created_at", "id").first()
        if run is None:
            return None
        return run_claim(run_id=run.pk, worker=worker)


def run_log_path(*, run: TrainingRun) -> Path:
    """Give the run its log file under media and return where to write it."""
    name = f"logs/run_{run.pk}.log"
    path = Path(settings.MEDIA_ROOT) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    TrainingRun.objects.filter(pk=run.pk).update(log_file=name)
    run.log_file.name = name
    return path


def run_start(*, run_id: int, worker: str) -> bool:
    """Record which process trains the run (`host:pid`, or a Celery node's); False once it is not running."""
    return _move(run_id, "start", {"worker": worker})


# --- while it runs ---------------------------------------------------------------------------------


def run_set_phase(*, run_id: int, phase: str, progress: float = 0.0) -> bool:
    """Show what the training process does now; False once the run is not running (cancelled)."""
    return _move(run_id, "progress", {"phase": phase, "progress": progress})


def run_progress(*, run_id: int, progress) -> bool:
    """Write an epoch's progress (an ml.fit.Progress) to the run; False once it was cancelled."""
    fields = {"progress": round(progress.percent, 2), "epoch": progress.epoch, "history": progress.history}
    return _move(run_id, "progress", fields)


def run_heartbeat(*, run_id: int) -> bool:
    """Record that the run's training process is alive (the database's clock); False once it ended."""
    return _move(run_id, "progress", {"heartbeat_at": Now()})


class Heartbeat(heartbeat.Heartbeat):
    """Beats for a run about once a second while the training process works; stops when the run is
    no longer running (a thread, not the progress callback: see management/heartbeat.py)."""

    def __init__(self, run_id: int, interval: float = 1.0) -> None:
        self.run_id = run_id
        super().__init__(lambda: run_heartbeat(run_id=run_id), interval=interval, name=f"heartbeat-run-{run_id}")


# --- how it ends -------------------------------------------------------------------------------------


def run_succeed(*, run: TrainingRun, **results) -> bool:
    """End a running run as succeeded with its results (model_file, metrics, evaluation, …); it becomes
    current when its dataset's promotion policy says so (promotion.py), and the decision and its reason
    are stored with the status. False, with nothing written, when it was not running any more."""
    fields = dict(progress=100, phase="", checkpoint="", finished_at=timezone.now(), **results)
    with transaction.atomic():
        # The dataset's row is locked so that a promotion meanwhile cannot slip between reading and choosing.
        current_id = (
            DataSet.objects.select_for_update().filter(pk=run.dataset_id).values_list("current_run", flat=True).first()
        )
        current = TrainingRun.objects.filter(pk=current_id).first() if current_id else None
        splits = TrainingRun.objects.filter(pk=run.pk).values_list("splits", flat=True).first() or run.splits
        decision = promotion_decide(
            evaluation=fields.get("evaluation", run.evaluation),
            splits=splits,
            current=current,
            policy=run.promotion_policy,
        )
        if not _move(run.pk, "succeed", {**fields, "promotion": decision}):
            return False
        if decision["promoted"] and not dataset_current_run_choose(
            dataset_id=run.dataset_id, run_id=run.pk, reason="trained"
        ):
            newer = DataSet.objects.filter(pk=run.dataset_id).values_list("current_run", flat=True).first()
            decision |= {"promoted": False, "reason": f"a newer version (run {newer}) is current: kept as a version"}
            TrainingRun.objects.filter(pk=run.pk).update(promotion=decision)
    run.promotion = decision
    return True


def run_fail(*, run_id: int, message: str, interrupted: bool = False, only_if_stale_before=None) -> bool:
    """End an active run as failed with a readable message; False if it had already ended.

    An interrupted run (its process died) keeps its checkpoint and can be resumed.
    `only_if_stale_before` (a time expression) leaves the run alone if it beat since.
    """

    def stale(runs: QuerySet) -> QuerySet:
        return runs.alias(last_sign=Coalesce("heartbeat_at", "started_at")).filter(last_sign__lt=only_if_stale_before)

    fields = {"error": message, "finished_at": timezone.now(), "interrupted": interrupted}
    return _move(run_id, "interrupt" if interrupted else "fail", fields, stale if only_if_stale_before else None)


def run_cancel(*, run: TrainingRun) -> bool:
    """Cancel a queued or running run; a running one stops after its current batch."""
    cancelled = _move(run.pk, "cancel", {"finished_at": timezone.now()})
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
        run = _create(
            "import",
            {
                **snapshot,
                "progress": 100,
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


# --- runs whose process was lost (the watchdogs) -------------------------------------------------------


def runs_fail_stale(*, timeout: int | None = None) -> int:
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
        failed += run_fail(
            run_id=run.pk,
            message=(
                f"interrupted: no sign of life from its training process ({run.worker or 'unknown worker'}) "
                f"for more than {timeout} s: the process, its worker or its machine stopped. {INTERRUPTED_HINT}"
            ),
            interrupted=True,
            only_if_stale_before=limit,
        )
    return failed


def runs_fail_interrupted() -> int:
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
            failed += run_fail(
                run_id=run.pk,
                message="interrupted: the training process stopped before the run finished "
                f"(was the server restarted?). {INTERRUPTED_HINT}",
                interrupted=True,
            )
    return failed
