"""Unlabelled images (issue 27, item 1): kept and counted, filtered, left out of training and health checks."""

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from datasets.models import DataSet, DataSetItem, LabelCount
from datasets.services import (
    dataset_import_request,
    dataset_import_zip,
    dataset_item_create,
    dataset_item_update,
    dataset_label_counts,
    dataset_labels,
    dataset_unlabelled_count,
)
from management.errors import ServiceError
from tests.images import COLOURS, colour_image, png, zip_of
from tests.runs import run_queued_imports
from training import runs, trainer
from training import services as training
from training.models import TrainingRun


@pytest.fixture
def dataset(db):
    return DataSet.objects.create(name="Pets", image_size=16, epochs=1, batch_size=8)


def fresh(dataset):
    return DataSet.objects.get(pk=dataset.pk)


def test_an_image_without_a_label_is_unlabelled_counted_apart_and_not_a_label(dataset):
    dataset_item_create(dataset=dataset, label="cat", file=io.BytesIO(png()), name="c.png")
    item = dataset_item_create(dataset=dataset, label="", file=io.BytesIO(png()), name="u.png")
    dataset_item_create(dataset=dataset, label="  ", file=io.BytesIO(png()), name="v.png")
    assert item.label == ""
    assert dataset_label_counts(dataset=fresh(dataset)) == {"cat": 1}
    assert dataset_labels(dataset=fresh(dataset)) == ["cat"]
    assert dataset_unlabelled_count(dataset=fresh(dataset)) == 2
    assert LabelCount.objects.get(dataset=dataset, label="").count == 2

    dataset_item_update(item=item, label="dog")
    assert dataset_label_counts(dataset=fresh(dataset)) == {"cat": 1, "dog": 1}
    assert dataset_unlabelled_count(dataset=fresh(dataset)) == 1
    dataset_item_update(item=item, label="")  # back to unlabelled
    assert dataset_unlabelled_count(dataset=fresh(dataset)) == 2 and dataset_labels(dataset=fresh(dataset)) == ["cat"]


def test_a_zip_imported_as_unlabelled_ignores_its_folders(dataset):
    data = zip_of({"cat/1.png": png(), "dog/2.png": png(), "3.png": png()})
    report = dataset_import_zip(dataset=dataset, file=io.BytesIO(data), unlabelled=True)
    assert report.as_dict()["unlabelled"] == 3 and report.counts == {} and report.added == 3
    assert set(dataset.items.values_list("label", flat=True)) == {""}
    assert dataset_unlabelled_count(dataset=fresh(dataset)) == 3


def test_a_label_and_unlabelled_together_are_refused_naming_the_label(dataset):
    with pytest.raises(ServiceError) as error:
        dataset_import_request(
            dataset=dataset, file=SimpleUploadedFile("a.zip", zip_of({"1.png": png()})), label="cat", unlabelled=True
        )
    assert error.value.field == "label"


def test_api_adds_an_image_without_a_label_and_filters_the_unlabelled(api, dataset):
    import base64

    image = base64.b64encode(png()).decode()
    response = api.post("/api/datasetitem/", {"dataset": dataset.pk, "image": image}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["label"] == ""
    response = api.post("/api/datasetitem/", {"dataset": dataset.pk, "label": "cat", "image": image}, format="json")
    assert response.status_code == 201

    unlabelled = api.get(f"/api/datasetitem/?dataset={dataset.pk}&labelled=false").json()
    labelled = api.get(f"/api/datasetitem/?dataset={dataset.pk}&labelled=true").json()
    cats = api.get(f"/api/datasetitem/?dataset={dataset.pk}&label=cat").json()
    assert [row["label"] for row in unlabelled["results"]] == [""]
    assert [row["label"] for row in labelled["results"]] == ["cat"] == [row["label"] for row in cats["results"]]


def test_api_zip_upload_as_unlabelled(api, dataset):
    data = zip_of({"cat/1.png": png(), "2.png": png()})
    response = api.post(
        f"/api/dataset/{dataset.pk}/upload/", {"file": SimpleUploadedFile("u.zip", data), "unlabelled": "true"}
    )
    assert response.status_code == 202, response.json()
    assert response.json()["unlabelled"] is True
    (job,) = run_queued_imports()
    assert job.status == "succeeded", job.error
    assert job.report["unlabelled"] == 2 and job.report["counts"] == {}
    both = api.post(
        f"/api/dataset/{dataset.pk}/upload/",
        {"file": SimpleUploadedFile("u.zip", data), "unlabelled": "true", "label": "cat"},
    )
    assert both.status_code == 400 and "label" in both.json()


def test_upload_page_has_an_unlabelled_box(admin_client, dataset):
    page = admin_client.get("/admin/management/dataset/upload/").content.decode()
    assert 'name="unlabelled"' in page
    response = admin_client.post(
        "/admin/management/dataset/upload/",
        {"dataset": dataset.pk, "label": "", "unlabelled": "on", "file": SimpleUploadedFile("one.png", png())},
        follow=True,
    )
    assert response.status_code == 200
    assert "unlabelled: 1" in response.content.decode()
    assert list(dataset.items.values_list("label", flat=True)) == [""]


def test_admin_label_filter_lists_the_unlabelled(admin_client, dataset):
    dataset_item_create(dataset=dataset, label="", file=io.BytesIO(png()), name="u.png")
    dataset_item_create(dataset=dataset, label="cat", file=io.BytesIO(png()), name="c.png")
    page = admin_client.get("/admin/management/datasetitem/?label=__unlabelled__").content.decode()
    assert "(unlabelled)" in page and "1 dataset item" in page


def test_a_real_training_run_leaves_the_unlabelled_images_out(dataset):
    for label in COLOURS:
        for seed in range(6):
            dataset_item_create(dataset=dataset, label=label, file=io.BytesIO(colour_image(label, seed=seed)))
    unlabelled = [
        dataset_item_create(dataset=dataset, label="", file=io.BytesIO(colour_image("red", seed=100 + n))).pk
        for n in range(4)
    ]
    run = training.training_run_create(dataset=fresh(dataset), enqueue=False)
    assert run.labels == sorted(COLOURS) and run.unlabelled_count == 4
    run = trainer.training_run_execute(run=runs.run_claim(run_id=run.pk, worker=runs.this_worker()))
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    used = {pk for ids in run.splits.values() for pk in ids}
    assert len(used) == 18 and not used & set(unlabelled)
    assert set(DataSetItem.objects.filter(pk__in=used).values_list("label", flat=True)) == set(COLOURS)


def test_training_a_dataset_with_only_unlabelled_images_fails_readably(dataset):
    dataset_item_create(dataset=dataset, label="", file=io.BytesIO(png()))
    run = training.training_run_create(dataset=fresh(dataset), enqueue=False)
    assert training.training_run_problem(run=run) == "the dataset has no images: add labelled images before training"


def test_a_health_check_checks_the_labelled_images_and_says_how_many_are_unlabelled(dataset, settings):
    from health import services as health
    from jobs.process import job_execute

    settings.KERASUI_HEALTH_BACKBONE = ""
    for number in range(4):
        dataset_item_create(dataset=dataset, label="red", file=io.BytesIO(colour_image("red", seed=number)))
    for number in range(2):
        dataset_item_create(dataset=dataset, label="blue", file=io.BytesIO(colour_image("blue", seed=number)))
    for number in range(3):
        dataset_item_create(dataset=dataset, label="", file=io.BytesIO(colour_image("green", seed=number)))
    check, created = health.health_check_start(dataset=dataset, enqueue=False)
    check = job_execute(kind="health", job_id=check.pk, worker="test:1")
    assert check.status == "succeeded", check.error
    assert check.report["images"] == 6 and check.report["unlabelled"] == 3
    assert check.report["labels"] == ["blue", "red"]


def test_a_health_check_of_only_unlabelled_images_is_refused(dataset):
    from health import services as health

    dataset_item_create(dataset=dataset, label="", file=io.BytesIO(png()))
    with pytest.raises(ServiceError, match="add labelled images"):
        health.health_check_start(dataset=dataset, enqueue=False)
