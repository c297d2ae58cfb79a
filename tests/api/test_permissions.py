"""Who may do what: anonymous, plain users, editors, model-code holders, admins, and token scopes."""

import base64
import json
import secrets
import urllib.error
import urllib.parse
import urllib.request
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_application_model
from rest_framework.test import APIClient

from datasets.models import DataSet
from ml.models import DEFAULT_PROCESS
from tests.images import colour_image, png

Application = get_application_model()
AccessToken = get_access_token_model()
CUSTOM_CODE = "model.add(layers.Flatten())\n"


def user_with(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="a-long-pass-phrase-9")
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return User.objects.get(pk=user.pk)  # a fresh object: permissions are cached per instance


def client_for(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def token_client(user: User | None, scope: str, *, grant=Application.GRANT_PASSWORD) -> APIClient:
    application = Application.objects.create(
        name=f"app-{secrets.token_hex(3)}",
        user=user,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=grant,
    )
    token = AccessToken.objects.create(
        user=None if grant == Application.GRANT_CLIENT_CREDENTIALS else user,
        application=application,
        token=secrets.token_urlsafe(24),
        expires=timezone.now() + timedelta(hours=1),
        scope=scope,
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.token}")
    return client


EDITOR = [
    "view_dataset",
    "add_dataset",
    "change_dataset",
    "view_datasetitem",
    "add_datasetitem",
    "change_datasetitem",
    "view_trainingrun",
]


def test_anonymous_may_only_see_health_schema_and_docs(db):
    anonymous = APIClient()
    for url in ["/api/dataset/", "/api/datasetitem/", "/api/trainingrun/", "/api/users/"]:
        response = anonymous.get(url)
        assert response.status_code == 401 and "detail" in response.json(), url
        assert response["WWW-Authenticate"].startswith("Bearer")
    assert anonymous.post("/api/dataset/", {"name": "x"}, format="json").status_code == 401
    assert anonymous.get("/api/health/").status_code == 200
    assert anonymous.get("/api/schema/").status_code == 200
    assert anonymous.get("/api/docs/").status_code == 200


def test_a_user_without_permissions_sees_and_touches_nothing(db, trained_dataset):
    client = client_for(user_with("plain"))
    for url in ["/api/dataset/", "/api/datasetitem/", "/api/trainingrun/", "/api/users/"]:
        assert client.get(url).status_code == 403, url
    assert client.get(f"/api/dataset/{trained_dataset.pk}/").status_code == 403
    assert client.patch(f"/api/dataset/{trained_dataset.pk}/", {"name": "x"}, format="json").status_code == 403
    assert client.delete(f"/api/dataset/{trained_dataset.pk}/").status_code == 403
    assert client.get(f"/api/dataset/{trained_dataset.pk}/model/").status_code == 403
    image = base64.b64encode(png()).decode()
    assert client.post("/api/test/", {"dataset": trained_dataset.pk, "image": image}, format="json").status_code == 403
    assert DataSet.objects.filter(pk=trained_dataset.pk, name="Colours").exists()


def test_a_viewer_reads_but_cannot_change(db, trained_dataset):
    client = client_for(user_with("viewer", "view_dataset", "view_datasetitem", "view_trainingrun"))
    assert client.get("/api/dataset/").json()["count"] == 1
    assert client.get("/api/datasetitem/").json()["count"] == 30
    assert client.get("/api/trainingrun/").json()["count"] == 1
    assert client.get(f"/api/dataset/{trained_dataset.pk}/model/").status_code == 200
    assert client.post("/api/dataset/", {"name": "x"}, format="json").status_code == 403
    assert client.post(f"/api/dataset/{trained_dataset.pk}/train/").status_code == 403
    assert client.post(f"/api/dataset/{trained_dataset.pk}/upload/", {}).status_code == 403
    assert client.post(f"/api/trainingrun/{trained_dataset.current_run_id}/cancel/").status_code == 403
    assert client.delete(f"/api/trainingrun/{trained_dataset.current_run_id}/").status_code == 403
    image = base64.b64encode(colour_image("red", seed=3)).decode()
    assert client.post("/api/test/", {"dataset": trained_dataset.pk, "image": image}, format="json").status_code == 200


def test_an_editor_without_the_model_code_permission_gets_the_default_code(db):
    client = client_for(user_with("editor", *EDITOR))
    created = client.post("/api/dataset/", {"name": "Mine"}, format="json")
    assert created.status_code == 201 and created.json()["process"] == DEFAULT_PROCESS
    dataset_id = created.json()["id"]

    refused = client.post("/api/dataset/", {"name": "Evil", "process": "import os\n"}, format="json")
    assert refused.status_code == 403 and "change_model_code" in refused.json()["process"][0]
    assert not DataSet.objects.filter(name="Evil").exists()
    patched = client.patch(f"/api/dataset/{dataset_id}/", {"process": CUSTOM_CODE}, format="json")
    assert patched.status_code == 403 and "process" in patched.json()
    assert DataSet.objects.get(pk=dataset_id).process == DEFAULT_PROCESS

    # Sending back the code it already has (a GET, edited, PUT) is not setting it.
    whole = client.get(f"/api/dataset/{dataset_id}/").json()
    whole["epochs"] = 4
    assert client.put(f"/api/dataset/{dataset_id}/", whole, format="json").status_code == 200
    assert client.get("/api/users/").status_code == 403


def test_the_model_code_permission_allows_setting_code(db):
    client = client_for(user_with("coder", *EDITOR, "change_model_code"))
    created = client.post("/api/dataset/", {"name": "Mine", "process": CUSTOM_CODE}, format="json")
    assert created.status_code == 201 and created.json()["process"] == CUSTOM_CODE
    patched = client.patch(f"/api/dataset/{created.json()['id']}/", {"process": DEFAULT_PROCESS}, format="json")
    assert patched.status_code == 200


def test_superusers_have_the_model_code_permission(admin_user):
    assert admin_user.has_perm("management.change_model_code")
    created = client_for(admin_user).post("/api/dataset/", {"name": "Root", "process": CUSTOM_CODE}, format="json")
    assert created.status_code == 201


def test_only_superusers_manage_users(db, admin_user):
    staff = user_with("staff", "view_user", "add_user", "change_user", "delete_user")
    staff.is_staff = True
    staff.save()
    client = client_for(staff)
    assert client.get("/api/users/").status_code == 403
    assert client.post("/api/users/", {"username": "x", "is_superuser": True}, format="json").status_code == 403
    assert client.patch(f"/api/users/{admin_user.pk}/", {"username": "pwned"}, format="json").status_code == 403
    assert client.delete(f"/api/users/{admin_user.pk}/").status_code == 403
    assert User.objects.filter(pk=admin_user.pk, username=admin_user.username).exists()


def test_a_predict_only_token_predicts_and_does_nothing_else(trained_dataset, admin_user):
    client = token_client(admin_user, "predict")
    image = base64.b64encode(colour_image("blue", seed=5)).decode()
    response = client.post("/api/test/", {"dataset": trained_dataset.pk, "image": image}, format="json")
    assert response.status_code == 200 and response.json()["result"] == "blue"
    for method, url in [
        ("get", "/api/dataset/"),
        ("get", f"/api/dataset/{trained_dataset.pk}/model/"),
        ("get", "/api/datasetitem/"),
        ("get", "/api/users/"),
        ("post", "/api/dataset/"),
        ("post", f"/api/dataset/{trained_dataset.pk}/train/"),
        ("delete", f"/api/dataset/{trained_dataset.pk}/"),
    ]:
        refused = getattr(client, method)(url)
        assert refused.status_code == 403, (method, url)
        assert "scope" in refused.json()["detail"], (method, url)
    assert DataSet.objects.filter(pk=trained_dataset.pk).exists()


def test_read_and_write_scopes(trained_dataset, admin_user):
    reader = token_client(admin_user, "read")
    assert reader.get("/api/dataset/").status_code == 200
    assert reader.post("/api/dataset/", {"name": "x"}, format="json").status_code == 403
    image = base64.b64encode(colour_image("red", seed=5)).decode()
    assert reader.post("/api/test/", {"dataset": trained_dataset.pk, "image": image}, format="json").status_code == 403
    writer = token_client(admin_user, "read write")
    assert writer.post("/api/dataset/", {"name": "x"}, format="json").status_code == 201
    assert writer.post(f"/api/dataset/{trained_dataset.pk}/train/").status_code == 202
    run_id = trained_dataset.runs.order_by("-id").first().pk
    assert writer.post(f"/api/trainingrun/{run_id}/cancel/").status_code == 200


def test_a_token_does_not_widen_its_users_permissions(trained_dataset):
    client = token_client(user_with("viewer", "view_dataset"), "read write predict")
    assert client.get("/api/dataset/").status_code == 200
    assert client.post("/api/dataset/", {"name": "x"}, format="json").status_code == 403
    assert client.get("/api/users/").status_code == 403
    editor = token_client(user_with("editor", *EDITOR), "read write predict")
    url = f"/api/dataset/{trained_dataset.pk}/"
    assert editor.patch(url, {"process": CUSTOM_CODE}, format="json").status_code == 403
    assert editor.post("/api/dataset/", {"name": "y", "process": CUSTOM_CODE}, format="json").status_code == 403
    assert editor.get("/api/users/").status_code == 403
    assert DataSet.objects.get(pk=trained_dataset.pk).process == DEFAULT_PROCESS


def test_a_client_credentials_token_acts_as_its_applications_user(trained_dataset):
    service = user_with("service", "view_dataset", "view_trainingrun")
    client = token_client(service, "read predict", grant=Application.GRANT_CLIENT_CREDENTIALS)
    assert client.get("/api/dataset/").json()["count"] == 1
    assert client.post("/api/dataset/", {"name": "x"}, format="json").status_code == 403
    image = base64.b64encode(colour_image("green", seed=8)).decode()
    assert client.post("/api/test/", {"dataset": trained_dataset.pk, "image": image}, format="json").status_code == 200

    orphan = token_client(None, "read write predict", grant=Application.GRANT_CLIENT_CREDENTIALS)
    response = orphan.get("/api/dataset/")
    assert response.status_code == 401 and "--user" in response.json()["detail"]


def test_an_expired_or_unknown_token_is_401(trained_dataset, admin_user):
    client = token_client(admin_user, "read")
    AccessToken.objects.update(expires=timezone.now() - timedelta(seconds=1))
    assert client.get("/api/dataset/").status_code == 401
    client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    assert client.get("/api/dataset/").status_code == 401


def test_session_and_basic_authentication_still_work(db, admin_user, admin_client):
    assert admin_client.get("/api/dataset/").status_code == 200
    basic = APIClient()
    admin_user.set_password("basic-pass-phrase-1")
    admin_user.save()
    credentials = base64.b64encode(f"{admin_user.username}:basic-pass-phrase-1".encode()).decode()
    basic.credentials(HTTP_AUTHORIZATION=f"Basic {credentials}")
    assert basic.get("/api/dataset/").status_code == 200


# --- the OAuth grants against a live server -----------------------------------------------------


def call(url: str, *, data: dict | None = None, token: str | None = None, json_body=None) -> tuple[int, dict]:
    headers = {}
    body = None
    if data is not None:
        body = urllib.parse.urlencode(data).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    if json_body is not None:
        body = json.dumps(json_body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.mark.django_db(transaction=True)
def test_password_and_client_credentials_grants_on_a_live_server(live_server):
    boss = User.objects.create_superuser("boss", password="boss-pass-phrase-7")
    service = user_with("service", "view_dataset")
    Application.objects.create(
        name="script",
        client_id="script-id",
        client_secret="script-secret",
        user=boss,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_PASSWORD,
    )
    Application.objects.create(
        name="service",
        client_id="service-id",
        client_secret="service-secret",
        user=service,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
    )
    token_url = f"{live_server.url}/o/token/"
    status, password_token = call(
        token_url,
        data={
            "grant_type": "password",
            "username": "boss",
            "password": "boss-pass-phrase-7",
            "client_id": "script-id",
            "client_secret": "script-secret",
        },
    )
    assert status == 200, password_token
    assert set(password_token["scope"].split()) == {"read", "write", "predict"}
    status, created = call(
        f"{live_server.url}/api/dataset/", json_body={"name": "Live"}, token=password_token["access_token"]
    )
    assert status == 201, created

    status, wrong = call(
        token_url,
        data={
            "grant_type": "password",
            "username": "boss",
            "password": "wrong",
            "client_id": "script-id",
            "client_secret": "script-secret",
        },
    )
    assert status == 400 and wrong["error"] == "invalid_grant"

    status, service_token = call(
        token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": "service-id",
            "client_secret": "service-secret",
            "scope": "read",
        },
    )
    assert status == 200 and service_token["scope"] == "read", service_token
    status, listed = call(f"{live_server.url}/api/dataset/", token=service_token["access_token"])
    assert status == 200 and listed["count"] == 1
    status, refused = call(
        f"{live_server.url}/api/dataset/", json_body={"name": "No"}, token=service_token["access_token"]
    )
    assert status == 403

    # One application, one grant: the service client cannot use the password grant.
    status, mismatch = call(
        token_url,
        data={
            "grant_type": "password",
            "username": "boss",
            "password": "boss-pass-phrase-7",
            "client_id": "service-id",
            "client_secret": "service-secret",
        },
    )
    assert status in {400, 401} and mismatch["error"] == "unauthorized_client"
