"""Items, runs, users, batches, health and errors through the API."""

import base64
from pathlib import Path
from unittest import mock

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import DatabaseError
from rest_framework.test import APIClient

from datasets.models import DataSet, DataSetItem
from tests.images import colour_image, png
from training.models import TrainingRun
from training.services import training_run_create


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_an_item_is_created_from_base64_json_and_from_a_multipart_file(api, db, settings):
    dataset = DataSet.objects.create(name="Birds")
    made = api.post("/api/datasetitem/", {"dataset": dataset.pk, "label": "owl", "image": b64(png())}, format="json")
    assert made.status_code == 201, made.content
    body = made.json()
    assert body["dataset"] == dataset.pk and body["label"] == "owl"
    assert body["image"].startswith("http://testserver/media/datasets/")
    item = DataSetItem.objects.get(pk=body["id"])
    assert (Path(settings.MEDIA_ROOT) / item.image.name).read_bytes() == png()

    upload = SimpleUploadedFile("wren.png", png((1, 2, 3)), content_type="image/png")
    multipart = api.post("/api/datasetitem/", {"dataset": dataset.pk, "label": "wren", "image": upload})
    assert multipart.status_code == 201, multipart.content
    assert multipart.json()["image"].endswith(".png") and multipart.json()["original_name"] == "wren.png"
    assert api.get(f"/api/dataset/{dataset.pk}/").json()["item_count"] == 2


def test_items_filter_by_dataset_and_label(api, colour_dataset):
    other = DataSet.objects.create(name="Other")
    DataSetItem.objects.create(dataset=other, label="red", image="datasets/x.png")
    assert api.get("/api/datasetitem/").json()["count"] == 31
    assert api.get(f"/api/datasetitem/?dataset={colour_dataset.pk}").json()["count"] == 30
    reds = api.get(f"/api/datasetitem/?dataset={colour_dataset.pk}&label=red").json()
    assert reds["count"] == 10 and {row["label"] for row in reds["results"]} == {"red"}
    assert api.get("/api/datasetitem/?label=red").json()["count"] == 11
    bad = api.get("/api/datasetitem/?dataset=abc")
    assert bad.status_code == 400 and "dataset" in bad.json()


def test_an_item_can_be_relabelled_moved_given_a_new_image_and_deleted(
    api, db, settings, django_capture_on_commit_callbacks
):
    first, second = DataSet.objects.create(name="A"), DataSet.objects.create(name="B")
    item_id = api.post("/api/datasetitem/", {"dataset": first.pk, "label": "x", "image": b64(png())}, format="json")
    item_id = item_id.json()["id"]
    old_file = Path(settings.MEDIA_ROOT) / DataSetItem.objects.get(pk=item_id).image.name

    relabelled = api.patch(f"/api/datasetitem/{item_id}/", {"label": "  y  "}, format="json")
    assert relabelled.status_code == 200 and relabelled.json()["label"] == "y"
    moved = api.patch(f"/api/datasetitem/{item_id}/", {"dataset": second.pk}, format="json")
    assert moved.json()["dataset"] == second.pk
    with django_capture_on_commit_callbacks(execute=True):
        replaced = api.patch(f"/api/datasetitem/{item_id}/", {"image": b64(png((9, 9, 9)))}, format="json")
    assert replaced.status_code == 200
    new_file = Path(settings.MEDIA_ROOT) / DataSetItem.objects.get(pk=item_id).image.name
    assert new_file.read_bytes() == png((9, 9, 9)) and not old_file.exists()

    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(f"/api/datasetitem/{item_id}/").status_code == 204
    assert not new_file.exists() and not DataSetItem.objects.filter(pk=item_id).exists()


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"label": "x", "image": "%%% not base64"}, "image"),
        ({"label": "x", "image": b64(b"plain text, not an image")}, "image"),
        ({"label": "x", "image": ""}, "image"),
        ({"label": "x", "image": b64(png()[:40])}, "image"),  # a truncated PNG
        ({"label": "x", "image": 12}, "image"),
        ({"label": "x"}, "image"),
        ({"label": "left\u202eright", "image": b64(png())}, "label"),  # a direction-changing character
        ({"label": "x" * 101, "image": b64(png())}, "label"),
        ({"label": "x", "image": b64(png()), "dataset": 999999}, "dataset"),
        ({"label": "x", "image": b64(png()), "dataset": None}, "dataset"),
    ],
)
def test_bad_items_are_400_naming_the_field_and_leave_nothing(api, db, settings, payload, field):
    dataset = DataSet.objects.create(name="Birds")
    response = api.post("/api/datasetitem/", {"dataset": dataset.pk, **payload}, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert DataSetItem.objects.count() == 0
    media = Path(settings.MEDIA_ROOT)
    assert not media.exists() or not any(path.is_file() for path in media.rglob("*"))


def test_a_queued_run_can_be_cancelled_once(api, colour_dataset):
    run = training_run_create(dataset=colour_dataset, enqueue=False)
    cancelled = api.post(f"/api/trainingrun/{run.pk}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = api.post(f"/api/trainingrun/{run.pk}/cancel/")
    assert again.status_code == 409 and "already ended" in again.json()["run"][0]
    assert api.post("/api/trainingrun/424242/cancel/").status_code == 404


def test_runs_filter_by_status_delete_when_ended_and_serve_their_files(
    api, trained_dataset, settings, django_capture_on_commit_callbacks
):
    run = trained_dataset.current_run
    assert api.get("/api/trainingrun/?status=succeeded").json()["count"] == 1
    assert api.get("/api/trainingrun/?status=running").json()["count"] == 0
    assert api.get("/api/trainingrun/?status=bogus").status_code == 400
    model = api.get(f"/api/trainingrun/{run.pk}/model/")
    assert model.status_code == 200 and b"".join(model.streaming_content)[:2] == b"PK"
    no_log = api.get(f"/api/trainingrun/{run.pk}/log/")
    assert no_log.status_code == 404 and "file" in no_log.json()

    active = training_run_create(dataset=DataSet.objects.create(name="Busy"), enqueue=False)
    refused = api.delete(f"/api/trainingrun/{active.pk}/")
    assert refused.status_code == 409 and "cancel it" in refused.json()["run"][0]
    model_path = Path(settings.MEDIA_ROOT) / run.model_file.name
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(f"/api/trainingrun/{run.pk}/").status_code == 204
    assert not model_path.exists() and not TrainingRun.objects.filter(pk=run.pk).exists()


def test_a_batch_in_json_is_answered_in_order(api, trained_dataset):
    images = [b64(colour_image(label, seed=900 + n)) for n, label in enumerate(["red", "blue", "green", "red"])]
    response = api.post("/api/test/", {"dataset": trained_dataset.pk, "images": images}, format="json")
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [r["result"] for r in results] == ["red", "blue", "green", "red"]
    assert [r["name"] for r in results] == ["images[0]", "images[1]", "images[2]", "images[3]"]
    assert all(
        set(r) == {"name", "result", "label", "confidence", "unknown", "unknown_below", "top", "probabilities", "run"}
        for r in results
    )


def test_several_multipart_files_are_one_batch(api, trained_dataset):
    files = [
        SimpleUploadedFile(f"{label}.png", colour_image(label, seed=950 + n), content_type="image/png")
        for n, label in enumerate(["green", "blue"])
    ]
    response = api.post("/api/test/", {"dataset": trained_dataset.pk, "image": files}, format="multipart")
    assert response.status_code == 200, response.content
    assert [(r["name"], r["result"]) for r in response.json()["results"]] == [
        ("green.png", "green"),
        ("blue.png", "blue"),
    ]
    named = [SimpleUploadedFile("red.png", colour_image("red", seed=960), content_type="image/png")]
    one = api.post("/api/test/", {"dataset": trained_dataset.pk, "images": named}, format="multipart")
    assert one.status_code == 200 and one.json()["results"][0]["result"] == "red"


@pytest.mark.parametrize(
    "images, expected",
    [
        ([], "images"),
        (["BAD"], "images"),
        (["OK", "NOT_IMAGE"], "images[1]"),
        (["OK"] * 4, "at most 3"),
    ],
)
def test_bad_batches_are_400(api, trained_dataset, settings, images, expected):
    settings.KERASUI_MAX_BATCH_IMAGES = 3
    ok, not_image = b64(colour_image("red", seed=1)), b64(b"not an image at all")
    images = [ok if i == "OK" else not_image if i == "NOT_IMAGE" else "%%%" for i in images]
    response = api.post("/api/test/", {"dataset": trained_dataset.pk, "images": images}, format="json")
    assert response.status_code == 400, response.content
    assert "images" in response.json() and expected in str(response.json())


def test_image_and_images_together_are_refused(api, trained_dataset):
    image = b64(colour_image("red", seed=1))
    both = api.post("/api/test/", {"dataset": trained_dataset.pk, "image": image, "images": [image]}, format="json")
    assert both.status_code == 400 and "either" in both.json()["image"][0]


def test_users_are_managed_by_superusers(api, admin_user):
    created = api.post(
        "/api/users/",
        {"username": "ann", "email": "ann@example.com", "password": "a-long-pass-phrase-9", "is_staff": True},
        format="json",
    )
    assert created.status_code == 201, created.content
    assert "password" not in created.json()
    ann = User.objects.get(username="ann")
    assert ann.check_password("a-long-pass-phrase-9") and ann.is_staff and not ann.is_superuser
    weak = api.post("/api/users/", {"username": "bob", "password": "123"}, format="json")
    assert weak.status_code == 400 and "password" in weak.json()
    assert api.patch(f"/api/users/{ann.pk}/", {"first_name": "Ann"}, format="json").json()["first_name"] == "Ann"
    assert api.get("/api/users/").json()["count"] == 2

    me = f"/api/users/{admin_user.pk}/"
    assert api.delete(me).status_code == 409
    assert api.patch(me, {"is_superuser": False}, format="json").status_code == 409
    assert User.objects.get(pk=admin_user.pk).is_superuser
    assert api.delete(f"/api/users/{ann.pk}/").status_code == 204


def test_health_is_public_and_reports_the_database(db):
    client = APIClient()
    response = client.get("/api/health/")
    assert response.status_code == 200 and response.json() == {"status": "ok", "database": "ok"}
    with mock.patch("api.views.connection.cursor", side_effect=DatabaseError("gone")):
        down = client.get("/api/health/")
    assert down.status_code == 503 and down.json()["database"] == "unreachable"


def test_every_list_is_paginated(api, colour_dataset, admin_user):
    for url in ["/api/dataset/", "/api/datasetitem/", "/api/trainingrun/", "/api/users/"]:
        body = api.get(url).json()
        assert {"count", "next", "previous", "results"} <= set(body), url
    page = api.get("/api/datasetitem/?page_size=7&page=2").json()
    assert len(page["results"]) == 7 and page["count"] == 30 and "page=3" in page["next"]
    assert api.get("/api/datasetitem/?page=99").status_code == 404


def test_errors_under_api_are_json(api, db, settings):
    unknown = api.get("/api/no-such-thing/")
    assert unknown.status_code == 404 and unknown["Content-Type"] == "application/json"
    assert "not found" in unknown.json()["detail"]
    missing = api.get("/api/dataset/424242/")
    assert missing.status_code == 404 and "detail" in missing.json()
    wrong_type = api.post("/api/dataset/", "name=x", content_type="text/plain")
    assert wrong_type.status_code == 415 and "detail" in wrong_type.json()
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    too_big = api.post("/api/dataset/", {"name": "x" * 5000}, format="json")
    assert too_big.status_code in {400, 413} and too_big["Content-Type"] == "application/json", too_big.content
    # Outside the API, Django's pages stay HTML.
    assert "text/html" in api.get("/no-such-page/")["Content-Type"]


def test_model_metadata_names_labels_input_metrics_and_engine(api, trained_dataset):
    body = api.get(f"/api/dataset/{trained_dataset.pk}/model/metadata/").json()
    assert body["labels"] == ["blue", "green", "red"] and body["run"] == trained_dataset.current_run_id
    assert body["image_size"] == 16 and body["color_mode"] == "rgb" and body["input_shape"] == [16, 16, 3]
    assert body["metrics"] == {"val_accuracy": 1.0} and body["engine"] == "onnxruntime"
    untrained = DataSet.objects.create(name="Untrained")
    assert api.get(f"/api/dataset/{untrained.pk}/model/metadata/").status_code == 409


def test_a_dataset_being_trained_cannot_be_deleted(api, colour_dataset):
    created = api.post("/api/dataset/", {"name": "Fresh"}, format="json").json()
    assert created["item_count"] == 0
    run = training_run_create(dataset=colour_dataset, enqueue=False)
    refused = api.delete(f"/api/dataset/{colour_dataset.pk}/")
    assert refused.status_code == 409 and "cancel the run first" in refused.json()["dataset"][0]
    assert DataSet.objects.filter(pk=colour_dataset.pk).exists()
    api.post(f"/api/trainingrun/{run.pk}/cancel/")
    assert api.delete(f"/api/dataset/{colour_dataset.pk}/").status_code == 204
