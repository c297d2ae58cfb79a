"""The run lifecycle: the moves a run may make, written once in the job lifecycle's table for training
(jobs/lifecycle.py), and which run is current."""

import pytest

from datasets.models import DataSet
from jobs import lifecycle
from management.errors import Conflict
from training import runs
from training.models import TrainingRun
from training.services import run_snapshot

Status = TrainingRun.Status
TRANSITIONS = lifecycle.transitions("training")
MOVES = [(event, sources, target) for event, (sources, target) in TRANSITIONS.items() if sources]


def run_in(status: str, dataset: DataSet | None = None) -> TrainingRun:
    dataset = dataset or DataSet.objects.create(name=f"In {status}")
    run = runs.run_queue(snapshot=run_snapshot(dataset=dataset))
    TrainingRun.objects.filter(pk=run.pk).update(status=status)  # set up the starting point directly
    return TrainingRun.objects.get(pk=run.pk)


def test_the_table_names_every_status_and_only_real_ones():
    statuses = {status for sources, target in TRANSITIONS.values() for status in (*sources, target)}
    assert statuses == set(Status.values)
    # A succeeded run is a version: no move takes it anywhere else.
    leaving = [event for event, (sources, target) in TRANSITIONS.items() if Status.SUCCEEDED in sources]
    assert all(TRANSITIONS[event][1] == Status.SUCCEEDED for event in leaving)


@pytest.mark.parametrize("event, sources, target", MOVES, ids=[event for event, _, _ in MOVES])
@pytest.mark.parametrize("status", Status.values)
def test_a_run_moves_only_from_the_statuses_the_table_allows(db, event, sources, target, status):
    run = run_in(status)
    if status in sources:
        runs.transition(run_id=run.pk, event=event)
        assert TrainingRun.objects.get(pk=run.pk).status == target
    else:
        with pytest.raises(runs.IllegalTransition) as refused:
            runs.transition(run_id=run.pk, event=event)
        assert refused.value.status == status and refused.value.event == event
        assert TrainingRun.objects.get(pk=run.pk).status == status  # nothing was written


def test_an_illegal_transition_is_a_conflict_naming_the_run_and_its_status(db):
    run = run_in(Status.SUCCEEDED)
    with pytest.raises(Conflict, match=f"run {run.pk} cannot claim: it is succeeded"):
        runs.transition(run_id=run.pk, event="claim")
    with pytest.raises(runs.IllegalTransition, match="it is deleted"):
        runs.transition(run_id=run.pk + 1000, event="cancel")


def test_events_that_make_a_run_are_not_moves_and_unknown_events_are_refused(db):
    run = run_in(Status.QUEUED)
    with pytest.raises(ValueError, match="makes a new training job"):
        runs.transition(run_id=run.pk, event="queue")
    with pytest.raises(KeyError):
        runs.transition(run_id=run.pk, event="teleport")


def test_the_routine_moves_answer_false_instead_of_writing_over_an_ended_run(db):
    run = run_in(Status.SUCCEEDED)
    assert runs.run_claim(run_id=run.pk, worker="here:1") is None
    assert not runs.run_cancel(run=run)
    assert not runs.run_fail(run_id=run.pk, message="late", interrupted=True)
    assert not runs.run_heartbeat(run_id=run.pk)
    assert not runs.run_set_phase(run_id=run.pk, phase="training")
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED and run.error == ""


def test_the_newest_version_is_current_and_an_older_run_finishing_late_does_not_win(db):
    dataset = DataSet.objects.create(name="Versions")
    older, newer = run_in(Status.SUCCEEDED, dataset), run_in(Status.SUCCEEDED, dataset)
    assert runs.dataset_current_run_choose(dataset_id=dataset.pk, run_id=newer.pk, reason="trained")
    assert not runs.dataset_current_run_choose(dataset_id=dataset.pk, run_id=older.pk, reason="trained")
    assert DataSet.objects.get(pk=dataset.pk).current_run_id == newer.pk
    # A person's choice wins over age: a rollback.
    assert runs.dataset_current_run_choose(dataset_id=dataset.pk, run_id=older.pk, reason="promoted")
    assert DataSet.objects.get(pk=dataset.pk).current_run_id == older.pk
    with pytest.raises(ValueError, match="no rule"):
        runs.dataset_current_run_choose(dataset_id=dataset.pk, run_id=older.pk, reason="liked")


def test_deleting_the_current_run_makes_the_newest_remaining_version_current(db):
    dataset = DataSet.objects.create(name="Successor")
    older, newer = run_in(Status.SUCCEEDED, dataset), run_in(Status.SUCCEEDED, dataset)
    without_model = run_in(Status.SUCCEEDED, dataset)
    TrainingRun.objects.filter(pk__in=[older.pk, newer.pk]).update(model_file="models/x.keras")
    runs.dataset_current_run_choose(dataset_id=dataset.pk, run_id=without_model.pk, reason="promoted")
    without_model.delete()
    assert runs.dataset_current_run_choose(dataset_id=dataset.pk, reason="deleted")
    assert DataSet.objects.get(pk=dataset.pk).current_run_id == newer.pk


def test_promoting_a_run_without_a_model_is_refused_and_changes_nothing(db):
    dataset = DataSet.objects.create(name="No model")
    run = run_in(Status.SUCCEEDED, dataset)
    with pytest.raises(Conflict, match="has no model"):
        runs.run_promote(run=run)
    assert DataSet.objects.get(pk=dataset.pk).current_run_id is None
