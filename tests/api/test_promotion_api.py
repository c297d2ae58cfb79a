"""The promotion policy through the API: a run says whether it became current and why; promote overrides it."""

from datasets.models import DataSet
from tests.runs import finish_run, split_report

IDS = [11, 12, 13, 14]


def finished(dataset, predicted):
    evaluation = {"validation": split_report(IDS, [0, 0, 1, 1], predicted, ["a", "b"])}
    return finish_run(dataset, evaluation=evaluation, splits={"validation": IDS})


def test_the_run_resource_says_a_worse_run_was_kept_and_promote_makes_it_current(api, db):
    dataset = DataSet.objects.create(name="Policy API")
    response = api.post("/api/dataset/", {"name": "Defaults"}, format="json")
    assert response.status_code == 201 and response.json()["promotion_policy"] == "when_better"
    good, worse = finished(dataset, [0, 0, 1, 1]), finished(dataset, [0, 0, 0, 0])

    body = api.get(f"/api/trainingrun/{worse.pk}/").json()
    assert body["is_current"] is False and body["promotion_policy"] == "when_better"
    assert body["promotion"]["promoted"] is False
    assert body["promotion"]["reason"].startswith("validation accuracy 0.500 < current 1.000")
    assert body["promotion"]["candidate"] == 0.5 and body["promotion"]["current"] == 1.0
    assert api.get(f"/api/trainingrun/{good.pk}/").json()["promotion"]["promoted"] is True

    promoted = api.post(f"/api/trainingrun/{worse.pk}/promote/").json()
    assert promoted["is_current"] is True and promoted["promotion"]["manual"] is True
    assert promoted["promotion"]["reason"].startswith("promoted by a person (when it finished: validation accuracy")
    assert DataSet.objects.get(pk=dataset.pk).current_run_id == worse.pk


def test_a_dataset_set_to_always_promotes_a_worse_run(api, db):
    dataset = DataSet.objects.create(name="Always API")
    response = api.patch(f"/api/dataset/{dataset.pk}/", {"promotion_policy": "always"}, format="json")
    assert response.status_code == 200
    assert api.patch(f"/api/dataset/{dataset.pk}/", {"promotion_policy": "sometimes"}, format="json").json() == {
        "promotion_policy": ['"sometimes" is not a valid choice.']
    }
    dataset.refresh_from_db()
    finished(dataset, [0, 0, 1, 1])
    worse = finished(dataset, [0, 0, 0, 0])
    body = api.get(f"/api/trainingrun/{worse.pk}/").json()
    assert body["is_current"] is True and body["promotion"]["reason"].startswith("policy 'always': promoted")
