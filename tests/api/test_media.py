"""Stored XSS through media, closed: files are named by the server from the format Pillow detects,
served with that type, nosniff, a CSP sandbox and no cache; anything else is a download. The API's
own credentials (bearer token with `read`, Basic) fetch the image URLs the API hands out."""

import base64
import importlib
import io
from pathlib import Path

import pytest
from django.apps import apps as django_apps
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from datasets.models import DataSet, DataSetItem
from datasets.services import dataset_import_zip
from tests.api.test_permissions import token_client, user_with
from tests.images import png, zip_of
from tests.runs import imported

# A valid PNG with a script after its end: every image decoder accepts it, a browser told it is
# HTML runs the script.
POLYGLOT = png((10, 200, 30)) + b"<script>fetch('/api/users/', {method: 'POST'})</script>"
DANGEROUS_NAMES = ["cat.html", "cat.htm", "cat.xhtml", "cat.svg", "cat.js"]
SANDBOX = "default-src 'none'; sandbox"


@pytest.fixture
def api(admin_user) -> APIClient:
    client = APIClient()
    client.force_authenticate(admin_user)
    return client


@pytest.fixture
def dataset(db) -> DataSet:
    return DataSet.objects.create(name="Pets")


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def assert_served_as_png(client, item: DataSetItem) -> None:
    """Stored as .png, whatever it was called, and served as a PNG that runs nothing and is not cached."""
    assert item.image.name.endswith(".png") and "cat" not in item.image.name, item.image.name
    response = client.get(item.image.url)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == SANDBOX
    assert response["Cache-Control"] == "private, no-store"
    assert "attachment" not in response.get("Content-Disposition", "")
    assert body(response) == POLYGLOT


@pytest.mark.parametrize("name", DANGEROUS_NAMES)
def test_a_png_named_html_uploaded_as_a_multipart_file_is_stored_and_served_as_png(api, admin_client, dataset, name):
    upload = SimpleUploadedFile(name, POLYGLOT, content_type="text/html")
    made = api.post("/api/datasetitem/", {"dataset": dataset.pk, "label": "cat", "image": upload})
    assert made.status_code == 201, made.content
    assert made.json()["image"].endswith(".png") and made.json()["original_name"] == name
    assert_served_as_png(admin_client, DataSetItem.objects.get(pk=made.json()["id"]))


def test_a_png_sent_as_base64_with_an_html_data_uri_is_stored_and_served_as_png(api, admin_client, dataset):
    text = "data:text/html;base64," + base64.b64encode(POLYGLOT).decode()
    made = api.post("/api/datasetitem/", {"dataset": dataset.pk, "label": "cat", "image": text}, format="json")
    assert made.status_code == 201, made.content
    assert made.json()["original_name"] == ""
    assert_served_as_png(admin_client, DataSetItem.objects.get(pk=made.json()["id"]))


@pytest.mark.parametrize("name", ["cat.svg", "cat.xhtml", "cat.js"])
def test_replacing_an_items_image_with_a_dangerous_name_stores_it_as_png(api, admin_client, dataset, name):
    made = api.post(
        "/api/datasetitem/", {"dataset": dataset.pk, "label": "cat", "image": SimpleUploadedFile("a.png", png())}
    )
    item_id = made.json()["id"]
    upload = SimpleUploadedFile(name, POLYGLOT, content_type="image/svg+xml")
    patched = api.patch(f"/api/datasetitem/{item_id}/", {"image": upload}, format="multipart")
    assert patched.status_code == 200, patched.content
    assert patched.json()["image"].endswith(".png") and patched.json()["original_name"] == name
    assert_served_as_png(admin_client, DataSetItem.objects.get(pk=item_id))


def test_a_zip_entry_named_html_is_stored_and_served_as_png(api, admin_client, dataset):
    archive = SimpleUploadedFile("pets.zip", zip_of({"cat/evil.html": POLYGLOT, "folder/evil.svg": POLYGLOT}))
    job = imported(api, api.post(f"/api/dataset/{dataset.pk}/upload/", {"file": archive}))
    assert job["report"]["added"] == 2, job
    for item in dataset.items.all():
        assert item.original_name in {"evil.html", "evil.svg"}
        assert_served_as_png(admin_client, item)


def test_the_zip_service_names_files_by_their_format(dataset):
    jpeg = png(format="JPEG")
    dataset_import_zip(dataset=dataset, file=io.BytesIO(zip_of({"folder/evil.html": jpeg, "folder/a.gif.png": jpeg})))
    assert sorted(Path(item.image.name).suffix for item in dataset.items.all()) == [".jpg", ".jpg"]


@pytest.mark.parametrize("name", ["cat.html", "cat.pdf", "cat.eps"])
def test_an_image_added_in_the_admin_with_a_dangerous_name_is_stored_and_served_as_png(admin_client, dataset, name):
    # Django's own check of the extension refused .html but let .pdf and .eps (Pillow's) through.
    response = admin_client.post(
        "/admin/management/datasetitem/add/",
        {"dataset": dataset.pk, "label": "cat", "image": SimpleUploadedFile(name, POLYGLOT)},
    )
    assert response.status_code == 302, response.content[:500]
    item = dataset.items.get()
    assert item.original_name == name
    assert_served_as_png(admin_client, item)


def test_an_image_replaced_in_the_admin_is_stored_under_its_format(admin_client, dataset):
    item = DataSetItem.objects.create(dataset=dataset, label="cat", image="datasets/old.png")
    response = admin_client.post(
        f"/admin/management/datasetitem/{item.pk}/change/",
        {"dataset": dataset.pk, "label": "cat", "image": SimpleUploadedFile("cat.svg", POLYGLOT)},
    )
    assert response.status_code == 302, response.content[:500]
    item.refresh_from_db()
    assert item.original_name == "cat.svg"
    assert_served_as_png(admin_client, item)


def test_the_original_name_is_kept_as_data_only_and_cleaned(api, dataset):
    name = "../../x\u202egnp.html\u200b" + "a" * 300 + ".png"
    upload = SimpleUploadedFile("placeholder.png", png())
    upload.name = name  # Django's own cleaning would drop the folders; the service must not rely on it
    made = api.post("/api/datasetitem/", {"dataset": dataset.pk, "label": "cat", "image": upload})
    original = made.json()["original_name"]
    assert len(original) <= 255 and original.endswith(".png")
    assert "\u202e" not in original and "\u200b" not in original and "/" not in original


@pytest.mark.parametrize(
    "name",
    [
        "datasets/1/0123456789ab-evil.html",
        "datasets/1/evil.svg",
        "datasets/1/evil.bin",
        "weights/w.html",
        "logs/x.html",
    ],
)
def test_a_file_that_is_not_a_served_type_is_a_download(admin_client, settings, name):
    path = Path(settings.MEDIA_ROOT) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(POLYGLOT)
    response = admin_client.get(f"/media/{name}")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"].startswith("attachment")
    assert response["X-Content-Type-Options"] == "nosniff" and response["Content-Security-Policy"] == SANDBOX
    assert response["Cache-Control"] == "private, no-store"


def test_a_log_is_plain_text_and_a_model_a_download(admin_client, settings):
    for name, data in {"logs/run_1.log": b"<script>x</script>", "models/run_1.keras": b"PK"}.items():
        path = Path(settings.MEDIA_ROOT) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    log = admin_client.get("/media/logs/run_1.log")
    assert log["Content-Type"] == "text/plain; charset=utf-8" and log["X-Content-Type-Options"] == "nosniff"
    model = admin_client.get("/media/models/run_1.keras")
    assert model["Content-Type"] == "application/octet-stream" and model["Content-Disposition"].startswith("attachment")


@pytest.mark.parametrize("server", ["nginx", "apache"])
def test_the_headers_are_set_when_the_web_server_sends_the_file(api, admin_client, dataset, settings, server):
    made = api.post(
        "/api/datasetitem/", {"dataset": dataset.pk, "label": "cat", "image": SimpleUploadedFile("cat.html", POLYGLOT)}
    )
    settings.KERASUI_MEDIA_SERVER = server
    response = admin_client.get(made.json()["image"])
    assert response.status_code == 200 and not response.content
    assert response["Content-Type"] == "image/png" and response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == SANDBOX and response["Cache-Control"] == "private, no-store"
    other = Path(settings.MEDIA_ROOT) / "datasets" / str(dataset.pk) / "old.html"
    other.write_bytes(POLYGLOT)
    download = admin_client.get(f"/media/datasets/{dataset.pk}/old.html")
    assert download["Content-Type"] == "application/octet-stream" and "attachment" in download["Content-Disposition"]


# --- the API's credentials fetch what the API hands out --------------------------------------------


@pytest.fixture
def image_url(api, dataset) -> str:
    made = api.post(
        "/api/datasetitem/", {"dataset": dataset.pk, "label": "cat", "image": SimpleUploadedFile("c.png", POLYGLOT)}
    )
    return made.json()["image"]


def test_a_bearer_token_with_read_scope_downloads_the_image_it_listed(db, admin_user, image_url):
    reader = token_client(admin_user, "read")
    listed = reader.get("/api/datasetitem/").json()["results"][0]["image"]
    assert listed == image_url
    response = reader.get(listed)
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert body(response) == POLYGLOT


def test_a_token_without_the_permission_or_the_scope_is_refused_with_json(db, admin_user, image_url):
    nobody = token_client(user_with("nobody"), "read")
    refused = nobody.get(image_url)
    assert refused.status_code == 403 and refused["Content-Type"] == "application/json"
    predict_only = token_client(admin_user, "predict")
    assert predict_only.get(image_url).status_code == 403
    viewer = token_client(user_with("viewer", "view_datasetitem"), "read")
    assert viewer.get(image_url).status_code == 200
    assert viewer.get(image_url.replace("/media/datasets/", "/media/models/")).status_code == 403


def test_basic_authentication_downloads_the_image(db, admin_user, image_url):
    admin_user.set_password("basic-pass-phrase-1")
    admin_user.save()
    client = APIClient()
    credentials = base64.b64encode(b"admin:basic-pass-phrase-1").decode()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {credentials}")
    response = client.get(image_url, HTTP_ACCEPT="image/png")
    assert response.status_code == 200 and body(response) == POLYGLOT


def test_without_credentials_a_script_gets_401_json_and_a_browser_the_login_page(db, image_url):
    client = APIClient()
    script = client.get(image_url)
    assert script.status_code == 401 and "detail" in script.json()
    assert script["WWW-Authenticate"].startswith("Bearer")
    browser = client.get(image_url, HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")
    assert browser.status_code == 302 and "/admin/login/" in browser["Location"]
    client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    wrong = client.get(image_url, HTTP_ACCEPT="text/html")
    assert wrong.status_code == 401


def test_a_missing_file_is_404_json(api, image_url, settings):
    for path in (Path(settings.MEDIA_ROOT) / "datasets").rglob("*.png"):
        path.unlink()
    response = api.get(image_url)
    assert response.status_code == 404 and response["Content-Type"] == "application/json"


# --- the migration renames what was stored under the sender's name --------------------------------


def test_the_migration_renames_files_whose_extension_is_not_their_format(
    db, settings, django_capture_on_commit_callbacks
):
    migration = importlib.import_module("management.migrations.0008_media_server_names")
    dataset = DataSet.objects.create(name="Old")
    folder = Path(settings.MEDIA_ROOT) / "datasets" / str(dataset.pk)
    folder.mkdir(parents=True)
    files = {
        "0123456789ab-cat.html": POLYGLOT,
        "0123456789ab-dog.png": png(),
        "0123456789ab-photo.png": png(format="JPEG"),
        "0123456789ab-fake.svg": b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    items = {
        name: DataSetItem.objects.create(dataset=dataset, label="x", image=f"datasets/{dataset.pk}/{name}")
        for name in [*files, "0123456789ab-gone.html"]
    }

    with django_capture_on_commit_callbacks(execute=True):
        migration.rename_item_files(django_apps, None)

    after = {name: DataSetItem.objects.get(pk=item.pk) for name, item in items.items()}
    assert after["0123456789ab-cat.html"].image.name.endswith(".png")
    assert after["0123456789ab-cat.html"].original_name == "cat.html"
    assert (Path(settings.MEDIA_ROOT) / after["0123456789ab-cat.html"].image.name).read_bytes() == POLYGLOT
    assert not (folder / "0123456789ab-cat.html").exists()
    assert after["0123456789ab-dog.png"].image.name == f"datasets/{dataset.pk}/0123456789ab-dog.png"
    assert after["0123456789ab-dog.png"].original_name == "dog.png"
    assert after["0123456789ab-photo.png"].image.name.endswith(".jpg")
    assert after["0123456789ab-fake.svg"].image.name.endswith(".bin")  # not an image: only ever downloaded
    assert after["0123456789ab-gone.html"].image.name.endswith("gone.html")  # missing: left alone
    assert after["0123456789ab-gone.html"].original_name == "gone.html"
    assert sorted(path.suffix for path in folder.iterdir()) == [".bin", ".jpg", ".png", ".png"]
