"""Comparing runs of a dataset: options and code diffs, curves, evaluation side by side, the confusion matrices'
difference, and the held-out images that flipped between right and wrong."""

import pytest

from management.errors import NotFound, ServiceError
from management.models import DataSet, RunData, TrainingRun
from tests.runs import finish_run, split_report
from training.compare import compare_ids_parse, runs_compare, runs_for_comparison

LABELS = ["a", "b"]
IDS = [101, 102, 103, 104]
TRUE = [0, 0, 1, 1]
CODE = 'model.add(layers.Flatten())\nmodel.add(layers.Dense(8, activation="relu"))\n'


def evaluated(dataset, predicted, *, ids=IDS, labels=LABELS, **snapshot):
    evaluation = {"validation": split_report(ids, TRUE, predicted, labels)}
    return finish_run(dataset, evaluation=evaluation, splits={"validation": ids}, labels=labels, **snapshot)


@pytest.fixture
def dataset(db):
    return DataSet.objects.create(name="Compared")


@pytest.fixture
def two_runs(dataset):
    # 101 wrong then right (fixed), 102 right then wrong (broken), 103 and 104 right in both.
    first = evaluated(dataset, [1, 0, 1, 1], epochs=3, process=CODE)
    second = evaluated(dataset, [0, 1, 1, 1], epochs=5, process=CODE.replace("Dense(8", "Dense(16"))
    return first, second


def test_two_runs_on_the_same_images_show_the_images_that_flipped_with_both_predictions(two_runs):
    first, second = two_runs
    comparison = runs_compare(runs=[first, second])
    (pair,) = comparison["pairs"]
    assert pair["same_images"] and pair["split"] == "validation"
    flips = pair["flips"]
    assert (flips["fixed"], flips["broken"]) == (1, 1)
    broken, fixed = flips["items"]  # the newly wrong first
    assert broken == {
        "item": 102,
        "label": "a",
        "label_before": "a",
        "change": "broken",
        "before": {"run": first.pk, "predicted": "a", "confidence": 0.9, "right": True},
        "after": {"run": second.pk, "predicted": "b", "confidence": 0.9, "right": False},
    }
    assert fixed["item"] == 101 and fixed["before"]["predicted"] == "b" and fixed["after"]["right"]
    # Both wrong once on label a, the difference of the matrices is zero; predicted-b of true-b unchanged.
    assert pair["confusion_difference"]["matrix"] == [[0, 0], [0, 0]]


def test_the_comparison_diffs_the_model_code_and_lists_only_the_options_that_differ(two_runs):
    first, second = two_runs
    comparison = runs_compare(runs=[first, second])
    code = comparison["pairs"][0]["code"]
    assert not code["same"]
    assert '-model.add(layers.Dense(8, activation="relu"))' in code["diff"].splitlines()
    assert '+model.add(layers.Dense(16, activation="relu"))' in code["diff"].splitlines()
    differing = {row["name"]: row["values"] for row in comparison["options_that_differ"]}
    assert differing["epochs"] == [3, 5] and "labels" not in differing and "image_size" not in differing
    runs = comparison["runs"]
    assert [run["id"] for run in runs] == [first.pk, second.pk] and comparison["baseline"] == first.pk
    assert runs[0]["history"][0]["val_accuracy"] == 0.5
    assert runs[1]["evaluation"]["validation"]["per_label_f1"] == {"a": 0.6667, "b": 0.8}
    assert runs[1]["evaluation"]["validation"]["confusion_matrix"] == [[1, 1], [0, 2]]


def test_the_confusion_difference_is_the_others_counts_minus_the_baselines(dataset):
    first = evaluated(dataset, [0, 0, 1, 1])
    second = evaluated(dataset, [1, 1, 1, 1])
    assert runs_compare(runs=[first, second])["pairs"][0]["confusion_difference"]["matrix"] == [[-2, 2], [0, 0]]


def test_runs_of_different_datasets_are_refused_naming_ids(two_runs):
    other = evaluated(DataSet.objects.create(name="Other"), [0, 0, 1, 1])
    with pytest.raises(ServiceError, match=f"run {other.pk} of dataset {other.dataset_id}") as refused:
        runs_compare(runs=[two_runs[0], other])
    assert refused.value.field == "ids" and refused.value.status == 400


def test_after_a_relabelling_the_held_out_images_differ_and_no_flip_is_claimed(dataset):
    first = evaluated(dataset, [0, 0, 1, 1])
    second = evaluated(dataset, [0, 0, 1, 0], ids=[101, 102, 103, 105])
    (pair,) = runs_compare(runs=[first, second])["pairs"]
    assert not pair["same_images"] and pair["flips"]["items"] == []
    assert "not evaluated on the same held-out images" in pair["flips"]["note"]
    assert pair["note"] == "evaluated on different images: each run's own validation images"


def test_runs_evaluated_before_predictions_were_stored_say_so(dataset):
    first, second = evaluated(dataset, [0, 0, 1, 1]), evaluated(dataset, [0, 1, 1, 1])
    RunData.objects.filter(run=first).update(predictions={})
    first = TrainingRun.objects.get(pk=first.pk)
    flips = runs_compare(runs=[first, second])["pairs"][0]["flips"]
    assert flips["note"] == f"predictions not stored for run {first.pk} (trained before this version)"


def test_different_label_orders_are_not_subtracted_and_the_reason_is_given(dataset):
    first = evaluated(dataset, [0, 0, 1, 1])
    second = evaluated(dataset, [0, 0, 1, 1], labels=["b", "a"])
    difference = runs_compare(runs=[first, second])["pairs"][0]["confusion_difference"]
    assert difference["matrix"] is None and "the label orders differ" in difference["note"]


@pytest.mark.parametrize(
    "values, message",
    [
        (["3"], "at least two"),
        (["3,3"], "at least two"),
        ([""], "at least two"),
        (["3,x"], "'x' is not a run id"),
        (["3,-5"], "'-5' is not a run id"),
        ([",".join(map(str, range(1, 13)))], "at most 10"),
    ],
)
def test_bad_run_ids_are_refused_naming_ids(values, message):
    with pytest.raises(ServiceError, match=message) as refused:
        compare_ids_parse(values=values)
    assert refused.value.field == "ids"


def test_run_ids_come_comma_separated_or_repeated_in_order(db):
    assert compare_ids_parse(values=["5, 3", "7", "3"]) == [5, 3, 7]
    with pytest.raises(NotFound, match="no run 999") as missing:
        runs_for_comparison(ids=[999, 998])
    assert missing.value.field == "ids"
