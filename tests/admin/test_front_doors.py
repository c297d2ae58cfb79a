"""One front door per use case in the admin: uploading, validating and testing go through the admin's pages,
whether a form or the page's script sends the request; the API is for API clients."""

import html
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile

from datasets.models import DataSet
from tests.images import colour_image, png
from tests.runs import install_model

SCRIPTS = [
    Path(settings.BASE_DIR) / "management" / "static" / "management" / name for name in ("kerasui.js", "dataset.js")
]


def test_the_pages_script_uploads_validates_and_tests_through_the_pages_not_the_api():
    for script in SCRIPTS:
        text = script.read_text()
        for api_door in ("/api/test/", "/api/dataset/", "/validate/", "/upload/"):
            assert api_door not in text, (script.name, api_door)


def test_the_upload_page_takes_an_image_with_its_label_and_answers_on_the_page_it_is_sent_back_to(admin_client, db):
    dataset = DataSet.objects.create(name="Colours")
    url = f"/admin/management/dataset/{dataset.pk}/upload/"
    response = admin_client.post(
        f"{url}?next={url}",
        {"dataset": dataset.pk, "label": "red", "file": SimpleUploadedFile("r.png", png())},
        follow=True,
    )
    assert response.redirect_chain[-1][0] == url
    assert "Imported 1 image into 'Colours' (red: 1)." in html.unescape(response.content.decode())
    assert list(dataset.items.values_list("label", flat=True)) == ["red"]

    unlabelled = admin_client.post(url, {"dataset": dataset.pk, "file": SimpleUploadedFile("r.png", png())})
    assert unlabelled.status_code == 200 and "Type the label of this image" in unlabelled.content.decode()
    broken = admin_client.post(url, {"dataset": dataset.pk, "label": "red", "file": SimpleUploadedFile("r.png", b"x")})
    assert "errorlist" in broken.content.decode() and dataset.items.count() == 1


def test_the_upload_page_never_sends_back_to_another_site(admin_client, db):
    dataset = DataSet.objects.create(name="Colours")
    url = f"/admin/management/dataset/{dataset.pk}/upload/"
    data = {"dataset": dataset.pk, "label": "red", "file": SimpleUploadedFile("r.png", png())}
    response = admin_client.post(f"{url}?next=https://elsewhere.example/", data)
    assert response.status_code == 302 and response["Location"] == f"/admin/management/dataset/{dataset.pk}/change/"


def test_the_validate_page_builds_the_model_as_edited_and_marks_its_line(admin_client, colour_dataset):
    url = f"/admin/management/dataset/{colour_dataset.pk}/validate/"
    page = admin_client.post(url, {"process": "model.add(Flatten())\nmodel.add(Dense(units))\n"}).content.decode()
    assert 'data-line="2"' in page and "NameError" in page and "model as edited" in page
    refused = admin_client.post(url, {"image_size": 3}).content.decode()
    assert "image_size" in refused and "does not build" not in refused


def test_validating_edited_code_needs_the_model_code_permission(client, colour_dataset):
    editor = User.objects.create_user("editor", password="a-long-pass-phrase-9", is_staff=True)
    editor.user_permissions.add(*Permission.objects.filter(codename__in=["view_dataset", "change_dataset"]))
    client.force_login(editor)
    url = f"/admin/management/dataset/{colour_dataset.pk}/validate/"
    assert client.post(url, {"process": "import os\n"}).status_code == 403
    # Sending back the saved code is not setting it.
    assert client.post(url, {"process": colour_dataset.process, "image_size": 3}).status_code == 200


def test_the_test_page_predicts_with_a_chosen_version_and_lists_the_versions(
    admin_client, trained_dataset, colour_model_file
):
    older = trained_dataset.current_run
    newer = install_model(trained_dataset, colour_model_file)
    page = admin_client.get(f"/admin/management/dataset/test/?dataset={trained_dataset.pk}").content.decode()
    assert f'"id": {older.pk}' in page and f"run {newer.pk}, accuracy 100.0% (current)" in page
    image = SimpleUploadedFile("b.png", colour_image("blue", seed=9))
    answer = admin_client.post(
        "/admin/management/dataset/test/", {"dataset": trained_dataset.pk, "run": older.pk, "image": image}
    ).content.decode()
    assert f"/admin/management/trainingrun/{older.pk}/change/" in answer and 'id="predicted-label">blue<' in answer
    image = SimpleUploadedFile("b.png", colour_image("blue", seed=9))
    wrong = admin_client.post(
        "/admin/management/dataset/test/", {"dataset": trained_dataset.pk, "run": 424242, "image": image}
    ).content.decode()
    assert "there is no training run with id 424242" in wrong
