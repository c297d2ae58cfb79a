"""The job lifecycle: one table per kind, the only writer of a job's status, the same moves for every kind."""

import pytest
from django.db import IntegrityError

from datasets.models import DataSet
from jobs import lifecycle
from jobs.models import Job, JobStatus
from jobs.registry import KINDS, UnknownKind, kind_get
from training.services import run_snapshot

MOVES = [
    (kind, event, sources, target)
    for kind in KINDS
    for event, (sources, target) in lifecycle.transitions(kind).items()
    if sources
]


def fields_for(kind: str, dataset: DataSet) -> dict:
    if kind == "training":
        return run_snapshot(dataset=dataset)
    if kind == "export":
        run = lifecycle.job_create(kind="training", event="import", fields=run_snapshot(dataset=dataset))
        return {"dataset": dataset, "run": run, "format": "onnx"}
    if kind == "deletion":
        return {"dataset": dataset, "dataset_number": dataset.pk, "dataset_name": dataset.name}
    return {"dataset": dataset}


def job_in(kind: str, status: str) -> Job:
    dataset = DataSet.objects.create(name=f"{kind} {status}")
    job = lifecycle.job_create(kind=kind, fields=fields_for(kind, dataset))
    type(job).objects.filter(pk=job.pk).update(status=status)  # set up the starting point directly
    return type(job).objects.get(pk=job.pk)


def test_every_kind_is_a_job_model_and_its_table_names_only_real_statuses():
    for name in KINDS:
        kind = kind_get(name)
        assert issubclass(kind.model_class, Job) and kind.model_class.KIND == name
        table = lifecycle.transitions(name)
        assert {status for sources, target in table.values() for status in (*sources, target)} <= set(JobStatus.values)
        assert kind.function("execute")  # its entry point exists
    with pytest.raises(UnknownKind):
        kind_get("teleport")


@pytest.mark.parametrize("kind, event, sources, target", MOVES, ids=[f"{k}-{e}" for k, e, _, _ in MOVES])
@pytest.mark.parametrize("status", JobStatus.values)
def test_a_job_moves_only_from_the_statuses_its_kinds_table_allows(db, kind, event, sources, target, status):
    job = job_in(kind, status)
    if status in sources:
        lifecycle.job_transition(kind=kind, job_id=job.pk, event=event)
        assert type(job).objects.get(pk=job.pk).status == target
    else:
        with pytest.raises(lifecycle.IllegalTransition):
            lifecycle.job_transition(kind=kind, job_id=job.pk, event=event)
        assert type(job).objects.get(pk=job.pk).status == status


@pytest.mark.parametrize("kind", list(KINDS))
def test_at_most_one_active_job_of_a_kind_per_dataset_and_progress_stays_between_0_and_1(db, kind):
    job = job_in(kind, "running")
    with pytest.raises(IntegrityError):
        lifecycle.job_create(kind=kind, fields=fields_for(kind, job.dataset))
    assert lifecycle.job_progress(kind=kind, job_id=job.pk, progress=7)
    job.refresh_from_db()
    assert job.progress == 1.0 and job.heartbeat_at is not None
    lifecycle.job_cancel(kind=kind, job_id=job.pk)
    assert lifecycle.job_create(kind=kind, fields=fields_for(kind, job.dataset)).status == "queued"
