"""The promotion policy: a finished run becomes current only when it is at least as good as the current model
(or always, when the dataset says so); otherwise it stays a version with the reason, and a person may promote it."""

import pytest

from datasets.models import DataSet
from tests.runs import finish_run, split_report
from training.models import TrainingRun
from training.services import training_run_delete
from training.versions import training_run_promote

LABELS = ["a", "b"]
VALIDATION = [101, 102, 103, 104]
TRUE = [0, 0, 1, 1]


def validation(predicted: list[int], ids: list[int] = VALIDATION, true: list[int] = TRUE) -> dict:
    return {"validation": split_report(ids, true, predicted, LABELS)}


def current_of(dataset: DataSet) -> int | None:
    return DataSet.objects.get(pk=dataset.pk).current_run_id


@pytest.fixture
def dataset(db):
    return DataSet.objects.create(name="Policy")


@pytest.fixture
def good(dataset):
    """The current model: 4 of 4 validation images right."""
    run = finish_run(dataset, evaluation=validation([0, 0, 1, 1]), splits={"validation": VALIDATION})
    assert current_of(dataset) == run.pk
    return run


def test_the_first_run_is_promoted_because_there_is_no_current_model(dataset):
    run = finish_run(dataset, evaluation=validation([0, 1, 1, 1]), splits={"validation": VALIDATION})
    assert current_of(dataset) == run.pk
    assert run.promotion["promoted"] and run.promotion["reason"] == "the dataset had no model yet: promoted"


def test_a_worse_run_stays_a_version_with_the_reason_on_the_same_images(dataset, good):
    worse = finish_run(dataset, evaluation=validation([0, 1, 1, 1]), splits={"validation": VALIDATION})
    assert worse.status == TrainingRun.Status.SUCCEEDED and worse.is_version
    assert current_of(dataset) == good.pk
    assert worse.promotion["promoted"] is False
    assert worse.promotion["reason"] == (
        f"validation accuracy 0.750 < current 1.000 (on the same 4 validation images as run {good.pk}): "
        "kept as a version, not promoted"
    )
    assert worse.promotion | {"reason": ""} == {
        "promoted": False,
        "policy": "when_better",
        "measure": "validation accuracy",
        "same_images": True,
        "candidate": 0.75,
        "current": 1.0,
        "current_run": good.pk,
        "reason": "",
    }


def test_an_equally_good_run_is_promoted(dataset, good):
    equal = finish_run(dataset, evaluation=validation([0, 0, 1, 1]), splits={"validation": VALIDATION})
    assert current_of(dataset) == equal.pk
    assert equal.promotion["promoted"] and "validation accuracy 1.000 ≥ current 1.000" in equal.promotion["reason"]


def test_a_better_run_is_promoted(dataset):
    weak = finish_run(dataset, evaluation=validation([1, 1, 1, 1]), splits={"validation": VALIDATION})
    better = finish_run(dataset, evaluation=validation([0, 1, 1, 1]), splits={"validation": VALIDATION})
    assert current_of(dataset) == better.pk
    assert better.promotion["reason"].startswith("validation accuracy 0.750 ≥ current 0.500")
    assert better.promotion["current_run"] == weak.pk


def test_policy_always_promotes_a_worse_run_and_still_records_the_comparison(dataset, good):
    DataSet.objects.filter(pk=dataset.pk).update(promotion_policy="always")
    dataset.refresh_from_db()
    worse = finish_run(dataset, evaluation=validation([1, 1, 1, 1]), splits={"validation": VALIDATION})
    assert worse.promotion_policy == "always"  # the run's snapshot of the option
    assert current_of(dataset) == worse.pk
    assert worse.promotion["promoted"] and worse.promotion["reason"].startswith(
        "policy 'always': promoted (validation accuracy 0.500 < current 1.000"
    )


def test_after_a_relabelling_the_held_out_images_differ_and_each_run_is_measured_on_its_own(dataset, good):
    # The same images, one of them relabelled: the split is drawn again, the held-out ids are not the same.
    relabelled = [101, 102, 103, 105]
    worse = finish_run(dataset, evaluation=validation([0, 0, 0, 1], ids=relabelled), splits={"validation": relabelled})
    assert current_of(dataset) == good.pk
    assert worse.promotion["same_images"] is False
    assert worse.promotion["reason"] == (
        f"validation accuracy 0.750 < current 1.000 (each run on its own held-out images: they differ from run "
        f"{good.pk}'s): kept as a version, not promoted"
    )


def test_the_test_images_are_compared_before_the_validation_images(dataset):
    tests = [201, 202, 203, 204]
    test_report = split_report(tests, TRUE, [0, 0, 1, 1], LABELS)
    first = finish_run(
        dataset,
        evaluation={**validation([0, 0, 1, 1]), "test": test_report},
        splits={"validation": VALIDATION, "test": tests},
    )
    # Better on validation, worse on the same test images: the test images decide.
    second = finish_run(
        dataset,
        evaluation={**validation([0, 0, 1, 1]), "test": split_report(tests, TRUE, [1, 0, 1, 1], LABELS)},
        splits={"validation": [105, 106, 107, 108], "test": tests},
    )
    assert current_of(dataset) == first.pk
    assert second.promotion["measure"] == "test accuracy" and second.promotion["same_images"]
    assert second.promotion["reason"].startswith("test accuracy 0.750 < current 1.000 (on the same 4 test images")


def test_a_run_without_held_out_images_is_promoted_and_says_why(dataset, good):
    training_only = {"training": split_report(VALIDATION, TRUE, [1, 1, 1, 1], LABELS)}
    run = finish_run(dataset, evaluation=training_only, splits={"train": VALIDATION, "validation": []})
    assert current_of(dataset) == run.pk
    assert run.promotion["reason"] == (
        "this run has no held-out measure (its validation split was 0): promoted without a comparison"
    )


def test_a_current_model_that_was_imported_cannot_be_compared_so_the_new_run_is_promoted(dataset, good):
    TrainingRun.objects.filter(pk=good.pk).update(evaluation={}, imported=True)
    run = finish_run(dataset, evaluation=validation([1, 1, 1, 1]), splits={"validation": VALIDATION})
    assert current_of(dataset) == run.pk
    assert run.promotion["reason"] == (
        f"the current model (run {good.pk}) has no held-out measure (it was imported): promoted without a comparison"
    )


def test_a_person_promotes_a_version_the_policy_kept_and_the_reason_says_so(dataset, good):
    worse = finish_run(dataset, evaluation=validation([1, 1, 1, 1]), splits={"validation": VALIDATION})
    training_run_promote(run=worse)
    worse.refresh_from_db()
    assert current_of(dataset) == worse.pk
    assert worse.promotion["promoted"] and worse.promotion["manual"]
    assert worse.promotion["reason"].startswith("promoted by a person (when it finished: validation accuracy 0.500 <")


def test_a_run_with_test_images_is_measured_on_them_against_the_current_models_validation_images(dataset, good):
    tests = [301, 302, 303, 304]
    run = finish_run(
        dataset,
        evaluation={
            **validation([0, 0, 1, 1], ids=[105, 106, 107, 108]),
            "test": split_report(tests, TRUE, [0, 0, 0, 1], LABELS),
        },
        splits={"validation": [105, 106, 107, 108], "test": tests},
    )
    assert current_of(dataset) == good.pk
    assert run.promotion["reason"].startswith("test accuracy 0.750 < current's validation accuracy 1.000 (each run on")


def test_deleting_the_current_model_brings_back_the_last_promoted_version_not_a_worse_one_kept_back(dataset, good):
    better = finish_run(dataset, evaluation=validation([0, 0, 1, 1]), splits={"validation": VALIDATION})
    worse = finish_run(dataset, evaluation=validation([1, 1, 1, 1]), splits={"validation": VALIDATION})
    assert current_of(dataset) == better.pk and worse.promotion["promoted"] is False
    training_run_delete(run=better)
    assert current_of(dataset) == good.pk


def test_when_the_held_out_images_differ_the_current_models_score_on_the_new_runs_images_decides(dataset, good):
    # The trainer scored the current model on this run's (different) held-out images: 2 of 4 right there.
    other = [201, 202, 203, 204]
    report = split_report(other, TRUE, [0, 0, 0, 1], LABELS)
    report["current_model"] = {"run": good.pk, "accuracy": 0.5, "count": 4}
    better = finish_run(dataset, evaluation={"validation": report}, splits={"validation": other})

    assert current_of(dataset) == better.pk
    assert better.promotion["same_images"] is True
    assert better.promotion["reason"] == (
        f"validation accuracy 0.750 ≥ current 0.500 (on the same 4 validation images: run {good.pk}'s model "
        "scored on this run's): promoted"
    )
