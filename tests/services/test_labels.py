"""Labels are one text per meaning: NFC, no controls, no invisible or direction-changing characters,
wherever they come in (the API, the admin, a zip's label or folder names, a model import)."""

import base64
import io
import unicodedata

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from datasets.models import DataSet
from datasets.services import clean_label, dataset_import_zip, dataset_item_create, dataset_labels
from management.errors import ServiceError
from tests.images import png, zip_of
from training.versions import parse_labels

DECOMPOSED = unicodedata.normalize("NFD", "café")  # 'e' + U+0301 COMBINING ACUTE ACCENT
COMPOSED = "café"
HOSTILE = {
    "right-to-left override": "cat\u202egod",
    "left-to-right embedding": "\u202acat",
    "pop directional formatting": "cat\u202c",
    "first strong isolate": "\u2068cat\u2069",
    "right-to-left mark": "cat\u200f",
    "arabic letter mark": "cat\u061c",
    "zero-width space": "c\u200bat",
    "zero-width joiner": "ca\u200dt",
    "zero-width non-joiner": "ca\u200ct",
    "word joiner": "cat\u2060",
    "byte order mark": "\ufeffcat",
    "null": "cat\x00",
    "bell": "cat\x07",
    "escape": "\x1b[31mcat",
    "delete": "cat\x7f",
    "c1 control": "cat\x9b31m",
}


def test_nfc_and_nfd_spellings_are_one_label():
    assert DECOMPOSED != COMPOSED
    assert clean_label(DECOMPOSED) == clean_label(COMPOSED) == COMPOSED


@pytest.mark.parametrize("label", HOSTILE.values(), ids=HOSTILE.keys())
def test_control_invisible_and_direction_changing_characters_are_refused_naming_the_field(label):
    with pytest.raises(ServiceError) as refused:
        clean_label(label, field_name="labels")
    assert refused.value.field == "labels"
    assert "U+" in refused.value.message


def test_ordinary_labels_of_any_script_are_kept():
    for label in ["cat", "chat noir", "кошка", "猫", "قطة", "🐱", "naïve 2"]:
        assert clean_label(label) == label
    assert clean_label("  tabby\tcat \n") == "tabby cat"


def test_the_api_refuses_a_hostile_label_on_create_and_on_relabel(admin_user, db):
    dataset = DataSet.objects.create(name="Pets")
    api = APIClient()
    api.force_authenticate(admin_user)
    image = base64.b64encode(png()).decode()
    refused = api.post(
        "/api/datasetitem/", {"dataset": dataset.pk, "label": "cat\u202e", "image": image}, format="json"
    )
    assert refused.status_code == 400 and "U+202E" in refused.json()["label"][0]
    created = api.post("/api/datasetitem/", {"dataset": dataset.pk, "label": DECOMPOSED, "image": image}, format="json")
    assert created.status_code == 201 and created.json()["label"] == COMPOSED
    item = created.json()["id"]
    relabelled = api.patch(f"/api/datasetitem/{item}/", {"label": "c\u200bat"}, format="json")
    assert relabelled.status_code == 400 and "U+200B" in relabelled.json()["label"][0]
    multipart = api.post(
        "/api/datasetitem/",
        {"dataset": dataset.pk, "label": "\u2066dog", "image": SimpleUploadedFile("d.png", png())},
        format="multipart",
    )
    assert multipart.status_code == 400 and "label" in multipart.json()
    assert dataset.items.get().label == COMPOSED


def test_nfd_and_nfc_images_are_counted_under_one_label(db):
    dataset = DataSet.objects.create(name="Pets")
    dataset_item_create(dataset=dataset, label=DECOMPOSED, file=io.BytesIO(png()))
    dataset_item_create(dataset=dataset, label=COMPOSED, file=io.BytesIO(png()))
    assert dataset_labels(dataset=dataset) == [COMPOSED]


def test_a_zip_label_or_folder_name_with_hostile_characters_is_refused_or_skipped(db):
    dataset = DataSet.objects.create(name="Pets")
    archive = zip_of({f"{DECOMPOSED}/1.png": png(), "cat\u202egnp/2.png": png(), f"{COMPOSED}/3.png": png()})
    report = dataset_import_zip(dataset=dataset, file=io.BytesIO(archive))
    assert report.counts == {COMPOSED: 2}
    [skipped] = report.skipped
    assert skipped["name"] == "cat\u202egnp/2.png" and "U+202E" in skipped["reason"]
    with pytest.raises(ServiceError) as refused:
        dataset_import_zip(dataset=dataset, file=io.BytesIO(archive), label="dog\u200d")
    assert refused.value.field == "label"


def test_the_admin_forms_refuse_a_hostile_label(admin_client, db):
    dataset = DataSet.objects.create(name="Pets")
    item_page = admin_client.post(
        "/admin/management/datasetitem/add/",
        {"dataset": dataset.pk, "label": "cat\u202e", "image": SimpleUploadedFile("c.png", png())},
    )
    assert item_page.status_code == 200 and "U+202E" in item_page.content.decode()
    zip_page = admin_client.post(
        "/admin/management/dataset/upload/",
        {"dataset": dataset.pk, "label": "\ufeffcat", "file": SimpleUploadedFile("c.zip", zip_of({"a.png": png()}))},
    )
    assert zip_page.status_code == 200 and "U+FEFF" in zip_page.content.decode()
    added = admin_client.post(
        "/admin/management/datasetitem/add/",
        {"dataset": dataset.pk, "label": DECOMPOSED, "image": SimpleUploadedFile("c.png", png())},
    )
    assert added.status_code == 302
    item = dataset.items.get()
    assert item.label == COMPOSED
    relabel = admin_client.post(
        f"/admin/management/datasetitem/{item.pk}/change/", {"dataset": dataset.pk, "label": "cat\u2069"}
    )
    assert relabel.status_code == 200 and "U+2069" in relabel.content.decode()
    item.refresh_from_db()
    assert item.label == COMPOSED


def test_model_import_labels_are_checked_the_same_way():
    assert parse_labels([DECOMPOSED, "dog"]) == [COMPOSED, "dog"]
    with pytest.raises(ServiceError) as twins:
        parse_labels([DECOMPOSED, COMPOSED])
    assert "repeated" in twins.value.message
    with pytest.raises(ServiceError):
        parse_labels(["cat\u202e", "dog"])


@pytest.mark.django_db(transaction=True)
def test_the_migration_turns_existing_labels_into_nfc():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, after = [("management", "0008_media_server_names")], [("management", "0009_labels_nfc")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    dataset = old.get_model("management", "DataSet").objects.create(name="Old")
    item = old.get_model("management", "DataSetItem").objects.create(dataset=dataset, label=DECOMPOSED, image="x.png")
    snapshot = {
        "epochs": 1,
        "batch_size": 8,
        "image_size": 16,
        "color_mode": "rgb",
        "validation_split": 0,
        "verbose": 0,
    }
    run = old.get_model("management", "TrainingRun").objects.create(
        dataset=dataset, labels=[DECOMPOSED, "dog"], process="", **snapshot
    )
    executor = MigrationExecutor(connection)
    executor.migrate(after)
    new = executor.loader.project_state(after).apps
    assert new.get_model("management", "DataSetItem").objects.get(pk=item.pk).label == COMPOSED
    assert new.get_model("management", "TrainingRun").objects.get(pk=run.pk).labels == [COMPOSED, "dog"]
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
