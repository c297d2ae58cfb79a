"""Comparing runs through the API: GET /api/trainingrun/compare/?ids=3,5."""

import pytest

from datasets.models import DataSet
from tests.runs import finish_run, split_report

IDS = [31, 32, 33, 34]


def evaluated(dataset, predicted, **snapshot):
    evaluation = {"validation": split_report(IDS, [0, 0, 1, 1], predicted, ["a", "b"])}
    return finish_run(dataset, evaluation=evaluation, splits={"validation": IDS}, labels=["a", "b"], **snapshot)


@pytest.fixture
def two_runs(db):
    dataset = DataSet.objects.create(name="Compared through the API")
    first = evaluated(dataset, [0, 0, 1, 1], process="model.add(layers.Flatten())\n")
    second = evaluated(dataset, [0, 0, 1, 0], process="model.add(layers.GlobalAveragePooling2D())\n", epochs=4)
    return first, second


def test_comparing_two_runs_finds_the_flipped_image_and_the_code_diff(api, two_runs):
    first, second = two_runs
    response = api.get(f"/api/trainingrun/compare/?ids={first.pk},{second.pk}")
    assert response.status_code == 200, response.content
    body = response.json()
    assert [run["id"] for run in body["runs"]] == [first.pk, second.pk]
    (pair,) = body["pairs"]
    assert pair["same_images"] is True
    assert [(flip["item"], flip["change"]) for flip in pair["flips"]["items"]] == [(34, "broken")]
    flip = pair["flips"]["items"][0]
    assert (flip["before"]["predicted"], flip["after"]["predicted"]) == ("b", "a")
    assert "-model.add(layers.Flatten())" in pair["code"]["diff"]
    assert "+model.add(layers.GlobalAveragePooling2D())" in pair["code"]["diff"]
    assert {"name": "epochs", "values": [first.epochs, 4]} in body["options_that_differ"]
    assert pair["confusion_difference"]["matrix"] == [[0, 0], [1, -1]]


def test_comparing_refuses_runs_of_different_datasets_and_bad_ids(api, two_runs):
    first, _ = two_runs
    stranger = evaluated(DataSet.objects.create(name="Another dataset"), [0, 0, 1, 1])
    mixed = api.get(f"/api/trainingrun/compare/?ids={first.pk},{stranger.pk}")
    assert mixed.status_code == 400 and "compare runs of one dataset" in mixed.json()["ids"][0]
    for ids in ("", f"{first.pk}", f"{first.pk},x", f"{first.pk},{first.pk}", "1e3,2"):
        response = api.get("/api/trainingrun/compare/", {"ids": ids})
        assert response.status_code == 400 and list(response.json()) == ["ids"], ids
    assert api.get("/api/trainingrun/compare/").status_code == 400
    missing = api.get(f"/api/trainingrun/compare/?ids={first.pk},999999")
    assert missing.status_code == 404 and missing.json() == {"ids": ["no run 999999"]}


def test_comparing_needs_the_permission_to_view_runs(api_as, two_runs):
    ids = ",".join(str(run.pk) for run in two_runs)
    assert api_as("view_dataset").get(f"/api/trainingrun/compare/?ids={ids}").status_code == 403
    assert api_as("view_trainingrun").get(f"/api/trainingrun/compare/?ids={ids}").status_code == 200
