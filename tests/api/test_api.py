import base64

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from oauth2_provider.models import get_application_model
from rest_framework.test import APIClient

from datasets.models import DataSet
from tests.images import colour_image, colour_zip, png, zip_of
from tests.runs import imported
from training.models import TrainingRun


def test_datasets_can_be_created_listed_and_changed(api):
    created = api.post("/api/dataset/", {"name": "Birds", "image_size": 32, "color_mode": "grayscale"}, format="json")
    assert created.status_code == 201, created.content
    dataset_id = created.json()["id"]
    listed = api.get("/api/dataset/").json()["results"]
    assert listed[0]["name"] == "Birds" and listed[0]["item_count"] == 0
    assert listed[0]["status"] is None and listed[0]["model_labels"] == []
    patched = api.patch(f"/api/dataset/{dataset_id}/", {"epochs": 3}, format="json")
    assert patched.status_code == 200 and patched.json()["epochs"] == 3
    assert {"process", "batch_size", "validation_split", "progress"} <= set(patched.json())


def test_invalid_dataset_options_are_400_naming_the_field(api):
    response = api.post("/api/dataset/", {"name": "X", "color_mode": "sepia", "image_size": 2}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"color_mode", "image_size"}


def test_upload_labels_by_folder_and_reports_skipped_entries(api, db):
    dataset = DataSet.objects.create(name="Colours")
    data = zip_of({"red/1.png": png(), "blue/2.png": png(), "blue/readme.txt": b"hi"})
    response = api.post(
        f"/api/dataset/{dataset.pk}/upload/", {"file": SimpleUploadedFile("d.zip", data)}, format="multipart"
    )
    assert not dataset.items.exists()  # nothing decoded in the request
    job = imported(api, response)
    assert job["status"] == "succeeded" and job["progress"] == 1.0 and job["original_name"] == "d.zip"
    body = job["report"]
    assert body["counts"] == {"blue": 1, "red": 1}
    reason = "not an image (no image format recognised in this file)"
    assert body["skipped"] == [{"name": "blue/readme.txt", "reason": reason}]


def test_upload_with_a_label_and_upload_of_a_non_zip(api, db):
    dataset = DataSet.objects.create(name="Colours")
    data = zip_of({"1.png": png(), "2.png": png()})
    ok = api.post(f"/api/dataset/{dataset.pk}/upload/", {"file": SimpleUploadedFile("d.zip", data), "label": "red"})
    assert imported(api, ok)["report"]["counts"] == {"red": 2}
    bad = api.post(f"/api/dataset/{dataset.pk}/upload/", {"file": SimpleUploadedFile("d.zip", b"nope")})
    assert bad.status_code == 400 and "file" in bad.json()
    missing = api.post(f"/api/dataset/{dataset.pk}/upload/", {})
    assert missing.status_code == 400 and "file" in missing.json()


def test_train_answers_202_with_the_run_and_refuses_a_second_one(api, colour_dataset):
    response = api.post(f"/api/dataset/{colour_dataset.pk}/train/")
    assert response.status_code == 202
    run = TrainingRun.objects.get(pk=response.json()["id"])
    assert response.json()["status"] == "queued" and run.dataset == colour_dataset
    again = api.post(f"/api/dataset/{colour_dataset.pk}/train/")
    assert again.status_code == 409 and "already being trained" in again.json()["dataset"][0]
    detail = api.get(f"/api/trainingrun/{run.pk}/").json()
    assert {"status", "progress", "epoch", "history", "metrics", "error", "started_at", "finished_at"} <= set(detail)
    assert api.get(f"/api/dataset/{colour_dataset.pk}/").json()["status"] == "queued"


def test_predict_with_base64_json_data_uri_and_multipart(api, trained_dataset):
    image = colour_image("red", seed=4242)
    plain = api.post(
        "/api/test/", {"image": base64.b64encode(image).decode(), "dataset": trained_dataset.pk}, format="json"
    )
    assert plain.status_code == 200, plain.content
    assert plain.json()["result"] == "red"
    assert set(plain.json()["probabilities"]) == {"blue", "green", "red"}
    assert plain.json()["confidence"] == max(plain.json()["probabilities"].values())

    uri = "data:image/png;base64," + base64.b64encode(colour_image("blue", seed=4243)).decode()
    assert (
        api.post("/api/test/", {"image": uri, "dataset": trained_dataset.pk}, format="json").json()["result"] == "blue"
    )

    upload = SimpleUploadedFile("g.png", colour_image("green", seed=4244), content_type="image/png")
    multipart = api.post("/api/test/", {"image": upload, "dataset": trained_dataset.pk}, format="multipart")
    assert multipart.status_code == 200 and multipart.json()["result"] == "green"


@pytest.mark.parametrize(
    "payload, status, field",
    [
        ({"image": "%%% not base64 %%%", "dataset": "DS"}, 400, "image"),
        ({"image": base64.b64encode(b"text, not an image").decode(), "dataset": "DS"}, 400, "image"),
        ({"image": base64.b64encode(png()).decode(), "dataset": 999999}, 400, "dataset"),
        ({"image": base64.b64encode(png()).decode(), "dataset": "abc"}, 400, "dataset"),
        ({"image": 12, "dataset": "DS"}, 400, "image"),
        ({"dataset": "DS"}, 400, "image"),
        ({"image": base64.b64encode(png()).decode(), "dataset": "UNTRAINED"}, 409, "dataset"),
    ],
)
def test_bad_prediction_requests_are_4xx_naming_the_field(api, trained_dataset, payload, status, field):
    untrained = DataSet.objects.create(name="Untrained")
    payload = {
        key: (trained_dataset.pk if value == "DS" else untrained.pk if value == "UNTRAINED" else value)
        for key, value in payload.items()
    }
    response = api.post("/api/test/", payload, format="json")
    assert response.status_code == status, response.content
    assert field in response.json()


def test_broken_json_is_a_400(api, db):
    response = api.post("/api/test/", "{broken", content_type="application/json")
    assert response.status_code == 400 and "detail" in response.json()


def test_the_api_needs_authentication_and_permissions(db, trained_dataset):
    anonymous = APIClient()
    assert anonymous.get("/api/dataset/").status_code == 401
    assert anonymous.post("/api/test/", {"image": "x", "dataset": 1}, format="json").status_code == 401
    nobody = User.objects.create_user("nobody", password="pw-123-long")
    client = APIClient()
    client.force_authenticate(nobody)
    assert client.get("/api/dataset/").status_code == 403
    assert client.post("/api/test/", {"image": "x", "dataset": 1}, format="json").status_code == 403
    nobody.user_permissions.add(Permission.objects.get(codename="view_dataset"))
    nobody = User.objects.get(pk=nobody.pk)
    client.force_authenticate(nobody)
    assert client.get("/api/dataset/").status_code == 200
    assert client.post(f"/api/dataset/{trained_dataset.pk}/train/").status_code == 403


def test_oauth2_password_grant_token_predicts(db, trained_dataset):
    User.objects.create_superuser("boss", password="secret-pass-42")
    Application = get_application_model()
    Application.objects.create(
        name="script",
        client_id="client-1",
        client_secret="secret-1",
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_PASSWORD,
    )
    client = APIClient()
    token = client.post(
        "/o/token/",
        {
            "grant_type": "password",
            "username": "boss",
            "password": "secret-pass-42",
            "client_id": "client-1",
            "client_secret": "secret-1",
        },
    )
    assert token.status_code == 200, token.content
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.json()['access_token']}")
    image = base64.b64encode(colour_image("green", seed=77)).decode()
    response = client.post("/api/test/", {"image": image, "dataset": trained_dataset.pk}, format="json")
    assert response.status_code == 200 and response.json()["result"] == "green"


def test_the_current_model_downloads_as_a_keras_file(api, trained_dataset, db):
    response = api.get(f"/api/dataset/{trained_dataset.pk}/model/")
    assert response.status_code == 200
    assert response["Content-Disposition"].endswith('.keras"')
    assert b"".join(response.streaming_content)[:2] == b"PK"  # a .keras file is a zip
    untrained = DataSet.objects.create(name="Untrained")
    assert api.get(f"/api/dataset/{untrained.pk}/model/").status_code == 409


def test_runs_filter_by_dataset(api, trained_dataset):
    other = DataSet.objects.create(name="Other")
    assert api.get(f"/api/trainingrun/?dataset={trained_dataset.pk}").json()["count"] == 1
    assert api.get(f"/api/trainingrun/?dataset={other.pk}").json()["count"] == 0
    assert api.get("/api/trainingrun/?dataset=x").status_code == 400
    assert api.get("/api/trainingrun/424242/").status_code == 404


def test_media_is_private(client, admin_client, trained_dataset):
    item = trained_dataset.items.first()
    url = item.image.url
    assert client.get(url, HTTP_ACCEPT="text/html").status_code == 302  # a browser goes to the login page
    anonymous = client.get(url)  # a script gets 401 JSON
    assert anonymous.status_code == 401 and anonymous.json()["detail"]
    assert admin_client.get(url).status_code == 200
    assert admin_client.get("/media/../kerasui/settings.py").status_code in {403, 404}
    assert admin_client.get("/media/datasets/../../kerasui/settings.py").status_code in {403, 404}
    assert admin_client.get("/media/other/secret_key").status_code == 403


def test_upload_zip_via_api_with_many_images(api, db):
    dataset = DataSet.objects.create(name="Many")
    response = api.post(f"/api/dataset/{dataset.pk}/upload/", {"file": SimpleUploadedFile("c.zip", colour_zip(5))})
    assert imported(api, response)["report"]["added"] == 15
    assert api.get(f"/api/dataset/{dataset.pk}/").json()["item_count"] == 15


@pytest.mark.parametrize(
    "server, header, expected",
    [("nginx", "X-Accel-Redirect", "/protected-media/models/"), ("apache", "X-Sendfile", "/models/run_")],
)
def test_media_can_be_handed_to_the_web_server_after_the_check(
    client, admin_client, trained_dataset, settings, server, header, expected
):
    settings.KERASUI_MEDIA_SERVER = server
    run = trained_dataset.current_run
    item_url = trained_dataset.items.first().image.url
    assert client.get(item_url).status_code == 401  # still checked first
    image = admin_client.get(item_url)
    assert image.status_code == 200 and image[header] and not image.content
    model = admin_client.get(f"/admin/management/trainingrun/{run.pk}/model/")
    assert expected in model[header] and "attachment" in model["Content-Disposition"]
    api = APIClient()
    api.force_authenticate(User.objects.get(username="admin"))
    download = api.get(f"/api/dataset/{trained_dataset.pk}/model/")
    assert download.status_code == 200 and expected in download[header]
