"""Suggested labels (issue 27, item 2): a job predicts the unlabelled images with the current model, the API
lists them least sure first, and bulk actions accept them or set a label."""

import base64
import io

import pytest

from datasets.models import DataSet, DataSetItem
from datasets.services import dataset_item_create, dataset_label_counts, dataset_unlabelled_count
from jobs.process import job_execute
from labelling.models import Suggestion, SuggestionJob
from labelling.services import suggestion_of
from tests.images import colour_image, png
from training import runs

MIXED = [(0.5, 0.5, 0.0), (0.3, 0.3, 0.4)]  # colours between two labels: the model is unsure of these


def mixed_image(weights, seed: int) -> bytes:
    """A 16 px image whose colour is a blend of the labels' colours (unsure answers)."""
    from PIL import Image

    from tests.images import COLOURS

    colours = [COLOURS[name] for name in sorted(COLOURS)]
    colour = tuple(int(sum(w * c[channel] for w, c in zip(weights, colours, strict=True))) for channel in range(3))
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def unlabelled(trained_dataset, django_capture_on_commit_callbacks):
    """The trained colour dataset with 9 unlabelled images: 6 clear ones and 3 blends; the job queued by
    their arrival, run here as its process would."""
    images = [colour_image(name, seed=500 + n) for name in ("red", "green", "blue") for n in range(2)]
    images += [mixed_image(MIXED[n % 2], seed=n) for n in range(3)]
    with django_capture_on_commit_callbacks(execute=True):
        items = [dataset_item_create(dataset=trained_dataset, label="", file=io.BytesIO(data)) for data in images]
    job = SuggestionJob.objects.get(dataset=trained_dataset, status="queued")
    job = job_execute(kind="suggestions", job_id=job.pk, worker="test:1")
    assert job.status == "succeeded", job.error
    assert job.report["predicted"] == 9
    return trained_dataset, items, images


def test_images_arriving_without_labels_queue_one_job_and_every_one_gets_a_suggestion(unlabelled):
    dataset, items, _ = unlabelled
    assert SuggestionJob.objects.filter(dataset=dataset).count() == 1
    assert set(Suggestion.objects.filter(dataset=dataset).values_list("item_id", flat=True)) == {i.pk for i in items}
    assert not Suggestion.objects.filter(dataset=dataset, item__label="cat").exists()


def test_suggestions_equal_what_api_test_answers_for_the_same_image(api, unlabelled):
    dataset, items, images = unlabelled
    for item, data in zip(items, images, strict=True):
        answer = api.post(
            "/api/test/", {"image": base64.b64encode(data).decode(), "dataset": dataset.pk}, format="json"
        )
        assert answer.status_code == 200
        answer = answer.json()
        suggestion = Suggestion.objects.get(item=item)
        assert suggestion.run_id == answer["run"]
        assert suggestion.label == answer["result"] and suggestion.confidence == answer["confidence"]
        assert {label: p for label, p in suggestion.top} == answer["probabilities"]
        ranked = sorted(answer["probabilities"].values(), reverse=True)
        assert [p for _, p in suggestion.top] == ranked
        assert suggestion.margin == pytest.approx(ranked[0] - ranked[1], abs=2e-6)


def test_the_list_is_least_sure_first_paged_and_filtered_by_predicted_label(api, unlabelled):
    dataset, items, _ = unlabelled
    body = api.get(f"/api/dataset/{dataset.pk}/suggestions/?page_size=4").json()
    assert body["count"] == 9 and len(body["results"]) == 4 and body["next"]
    everything = api.get(f"/api/dataset/{dataset.pk}/suggestions/?page_size=100").json()["results"]
    margins = [row["margin"] for row in everything]
    assert margins == sorted(margins) and margins[0] < margins[-1]
    # The blends (the last three items) are the least sure.
    assert {row["id"] for row in everything[:3]} == {item.pk for item in items[6:]}
    assert everything[0]["top"][0][0] == everything[0]["label"] and everything[0]["image"].startswith("http")
    assert body["progress"] == {"labelled": 30, "unlabelled": 9, "job": body["progress"]["job"]}

    red = api.get(f"/api/dataset/{dataset.pk}/suggestions/?label=red&page_size=100").json()["results"]
    assert red and {row["label"] for row in red} == {"red"}
    surest = api.get(f"/api/dataset/{dataset.pk}/suggestions/?ordering=-confidence&page_size=100").json()["results"]
    assert [row["confidence"] for row in surest] == sorted((row["confidence"] for row in surest), reverse=True)
    assert api.get(f"/api/dataset/{dataset.pk}/suggestions/?ordering=nope").status_code == 400


def test_the_list_reads_a_constant_number_of_queries(api, unlabelled, django_assert_max_num_queries):
    dataset, _, _ = unlabelled
    with django_assert_max_num_queries(12):
        assert api.get(f"/api/dataset/{dataset.pk}/suggestions/?page_size=100").status_code == 200


def test_accepting_by_ids_and_by_confidence_labels_them_and_keeps_the_counts(api, unlabelled):
    dataset, items, _ = unlabelled
    first = Suggestion.objects.get(item=items[0])
    response = api.post(f"/api/dataset/{dataset.pk}/suggestions/accept/", {"ids": [items[0].pk]}, format="json")
    assert response.status_code == 200 and response.json() == {"labelled": 1}
    assert DataSetItem.objects.get(pk=items[0].pk).label == first.label
    # Kept, marked labelled (the dataset page scores the model with it), and off the list.
    assert Suggestion.objects.get(item=items[0]).labelled_at is not None
    listed = api.get(f"/api/dataset/{dataset.pk}/suggestions/").json()["results"]
    assert items[0].pk not in {row["id"] for row in listed}

    sure = Suggestion.objects.filter(dataset=dataset, confidence__gte=0.9, labelled_at__isnull=True).count()
    response = api.post(f"/api/dataset/{dataset.pk}/suggestions/accept/", {"min_confidence": 0.9}, format="json")
    assert response.json() == {"labelled": sure} and sure >= 3
    fresh = DataSet.objects.get(pk=dataset.pk)
    assert dataset_unlabelled_count(dataset=fresh) == 8 - sure
    assert sum(dataset_label_counts(dataset=fresh).values()) == 30 + 1 + sure
    assert not Suggestion.objects.filter(dataset=dataset, confidence__gte=0.9, labelled_at__isnull=True).exists()

    both = api.post(
        f"/api/dataset/{dataset.pk}/suggestions/accept/", {"ids": [1], "min_confidence": 0.5}, format="json"
    )
    assert both.status_code == 400 and "ids" in both.json()


def test_setting_a_label_for_a_list_of_ids(api, unlabelled):
    dataset, items, _ = unlabelled
    ids = [item.pk for item in items[6:]]
    response = api.post(f"/api/dataset/{dataset.pk}/label/", {"ids": ids, "label": "purple"}, format="json")
    assert response.status_code == 200 and response.json() == {"labelled": 3}
    fresh = DataSet.objects.get(pk=dataset.pk)
    assert dataset_label_counts(dataset=fresh)["purple"] == 3 and dataset_unlabelled_count(dataset=fresh) == 6
    assert not Suggestion.objects.filter(item__in=ids, labelled_at__isnull=True).exists()

    other = DataSet.objects.create(name="Other")
    stranger = dataset_item_create(dataset=other, label="", file=io.BytesIO(png()))
    response = api.post(f"/api/dataset/{dataset.pk}/label/", {"ids": [stranger.pk], "label": "x"}, format="json")
    assert response.status_code == 400 and "ids" in response.json()
    response = api.post(f"/api/dataset/{dataset.pk}/label/", {"ids": ids, "label": "a\u202eb"}, format="json")
    assert response.status_code == 400 and "label" in response.json()


def test_bulk_actions_need_change_datasetitem(api_as, unlabelled):
    dataset, items, _ = unlabelled
    viewer = api_as("view_dataset", "view_datasetitem")
    assert viewer.get(f"/api/dataset/{dataset.pk}/suggestions/").status_code == 200
    accept = (f"/api/dataset/{dataset.pk}/suggestions/accept/", {"min_confidence": 0.0})
    label = (f"/api/dataset/{dataset.pk}/label/", {"ids": [items[0].pk], "label": "red"})
    for url, body in (accept, label):
        response = viewer.post(url, body, format="json")
        assert response.status_code == 403 and "change_datasetitem" in str(response.json())
    assert dataset_unlabelled_count(dataset=DataSet.objects.get(pk=dataset.pk)) == 9
    assert api_as("view_dataset").get(f"/api/dataset/{dataset.pk}/suggestions/").status_code == 403

    labeller = api_as("view_dataset", "view_datasetitem", "change_datasetitem")
    assert labeller.post(*accept, format="json").json() == {"labelled": 9}


def test_a_new_current_model_queues_suggestions_again(unlabelled, django_capture_on_commit_callbacks):
    dataset, _, _ = unlabelled
    with django_capture_on_commit_callbacks(execute=True):
        runs.dataset_current_run_choose(dataset_id=dataset.pk, reason="promoted", run_id=dataset.current_run_id)
    assert SuggestionJob.objects.filter(dataset=dataset, status="queued").count() == 1


def test_no_job_without_a_model(db, django_capture_on_commit_callbacks):
    dataset = DataSet.objects.create(name="Untrained")
    with django_capture_on_commit_callbacks(execute=True):
        dataset_item_create(dataset=dataset, label="", file=io.BytesIO(png()))
    assert not SuggestionJob.objects.exists()


def test_margin_is_top_one_minus_top_two():
    import numpy as np

    suggested = suggestion_of(np.array([0.2, 0.5, 0.3]), ["a", "b", "c"])
    assert (suggested.label, suggested.confidence, suggested.margin) == ("b", 0.5, 0.2)
    assert suggested.top == [["b", 0.5], ["c", 0.3], ["a", 0.2]]


def test_after_a_job_images_that_arrived_meanwhile_are_asked_for_again(unlabelled):
    from labelling.services import suggestion_job_after

    dataset, _, _ = unlabelled
    job = SuggestionJob.objects.get(dataset=dataset)
    suggestion_job_after(job_id=job.pk)  # every image has its suggestion: nothing queued
    assert not SuggestionJob.objects.filter(dataset=dataset, status="queued").exists()
    DataSetItem.objects.bulk_create(
        [DataSetItem(dataset=dataset, label="", image=DataSetItem.objects.first().image.name)]
    )
    suggestion_job_after(job_id=job.pk)
    assert SuggestionJob.objects.filter(dataset=dataset, status="queued").count() == 1


def test_a_run_finishing_in_its_process_queues_suggestions_without_starting_a_runner_there(
    unlabelled, settings, django_capture_on_commit_callbacks, monkeypatch
):
    from jobs import runner

    dataset, _, _ = unlabelled
    settings.KERASUI_TRAINING_BACKEND = "thread"
    started = []
    monkeypatch.setattr(runner, "enqueue", lambda *args, **kwargs: started.append(args))
    from training.models import TrainingRun
    from training.services import training_run_create

    current = dataset.current_run
    newer = training_run_create(dataset=dataset, enqueue=False)
    TrainingRun.objects.filter(pk=newer.pk).update(status="succeeded", progress=1.0, model_file=current.model_file.name)
    SuggestionJob.objects.filter(dataset=dataset).delete()
    with django_capture_on_commit_callbacks(execute=True):
        runs.dataset_current_run_choose(dataset_id=dataset.pk, reason="trained", run_id=newer.pk)
    assert SuggestionJob.objects.filter(dataset=dataset, status="queued").count() == 1 and started == []
