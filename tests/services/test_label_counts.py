"""Counts kept as data (issue 24): every write of images changes them in its own transaction."""

import importlib
import io

import pytest
from django.apps import apps
from django.core.files.uploadedfile import SimpleUploadedFile

from datasets.models import DataSet, DataSetItem, LabelCount
from datasets.services import (
    dataset_import_zip,
    dataset_item_create,
    dataset_item_update,
    dataset_items_delete,
    dataset_label_counts,
    dataset_labels,
    label_counts_recount,
)
from health.services import health_delete, health_relabel
from tests.images import png, zip_of
from tests.runs import run_queued_imports


@pytest.fixture
def dataset(db):
    return DataSet.objects.create(name="Pets")


def counted(dataset: DataSet) -> dict[str, int]:
    """The counts kept as data, read afresh."""
    return dataset_label_counts(dataset=DataSet.objects.get(pk=dataset.pk))


def real(dataset: DataSet) -> dict[str, int]:
    """The counts of the items as they are."""
    counts: dict[str, int] = {}
    for label in DataSetItem.objects.filter(dataset=dataset).values_list("label", flat=True):
        counts[label] = counts.get(label, 0) + 1
    return dict(sorted(counts.items()))


def test_create_import_relabel_move_and_delete_keep_the_counts_right(dataset):
    other = DataSet.objects.create(name="Others")
    dataset_import_zip(dataset=dataset, file=io.BytesIO(zip_of({f"cat/{n}.png": png() for n in range(3)})))
    dataset_import_zip(dataset=dataset, file=io.BytesIO(zip_of({"dog/1.png": png()})))
    item = dataset_item_create(dataset=dataset, label="bird", file=io.BytesIO(png()), name="b.png")
    assert counted(dataset) == real(dataset) == {"bird": 1, "cat": 3, "dog": 1}

    dataset_item_update(item=item, label="cat")
    assert counted(dataset) == {"cat": 4, "dog": 1}  # a label with no image left is gone
    dog = dataset.items.get(label="dog")
    dataset_item_update(item=dog, dataset=other)
    assert counted(dataset) == real(dataset) == {"cat": 4}
    assert counted(other) == real(other) == {"dog": 1}
    assert dataset_labels(dataset=other) == ["dog"]

    dataset_items_delete(items=dataset.items.all()[:3])
    assert counted(dataset) == real(dataset) == {"cat": 1}


def test_health_fixes_keep_the_counts_right(dataset):
    dataset_import_zip(dataset=dataset, file=io.BytesIO(zip_of({f"cat/{n}.png": png() for n in range(3)})))
    first, second, _ = dataset.items.order_by("id")
    health_relabel(dataset=dataset, item_id=first.pk, label="dog")
    health_delete(dataset=dataset, item_ids=[second.pk])
    assert counted(dataset) == real(dataset) == {"cat": 1, "dog": 1}


def test_a_failed_import_leaves_the_counts_as_they_were(dataset, monkeypatch):
    dataset_item_create(dataset=dataset, label="cat", file=io.BytesIO(png()), name="a.png")

    def explode(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(DataSetItem.objects, "bulk_create", explode)
    with pytest.raises(RuntimeError):
        dataset_import_zip(dataset=dataset, file=io.BytesIO(zip_of({"cat/1.png": png(), "dog/2.png": png()})))
    assert counted(dataset) == {"cat": 1}


def test_the_admins_add_change_and_delete_keep_the_counts_right(admin_client, dataset):
    upload = SimpleUploadedFile("a.png", png(), content_type="image/png")
    response = admin_client.post(
        "/admin/management/datasetitem/add/", {"dataset": dataset.pk, "label": "cat", "image": upload}
    )
    assert response.status_code == 302, response.content.decode()[:500]
    item = dataset.items.get()
    assert counted(dataset) == {"cat": 1}
    response = admin_client.post(
        f"/admin/management/datasetitem/{item.pk}/change/", {"dataset": dataset.pk, "label": "dog"}
    )
    assert response.status_code == 302
    assert counted(dataset) == real(dataset) == {"dog": 1}
    response = admin_client.post(
        "/admin/management/datasetitem/",
        {"action": "delete_selected", "_selected_action": [item.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert counted(dataset) == real(dataset) == {}


def test_the_api_writes_keep_the_counts_right(admin_client, dataset):
    from django.contrib.auth.models import User
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(User.objects.get(is_superuser=True))
    made = api.post(
        "/api/datasetitem/",
        {"dataset": dataset.pk, "label": "cat", "image": SimpleUploadedFile("a.png", png())},
        format="multipart",
    )
    assert made.status_code == 201, made.json()
    assert api.get(f"/api/dataset/{dataset.pk}/").json()["item_count"] == 1
    assert api.patch(f"/api/datasetitem/{made.json()['id']}/", {"label": "dog"}).status_code == 200
    assert counted(dataset) == {"dog": 1}
    upload = api.post(
        f"/api/dataset/{dataset.pk}/upload/",
        {"file": SimpleUploadedFile("a.zip", zip_of({"cat/1.png": png(), "cat/2.png": png()}))},
        format="multipart",
    )
    assert upload.status_code == 202, upload.json()  # an import job: the counts change when it has run
    assert counted(dataset) == {"dog": 1}
    run_queued_imports()
    assert api.delete(f"/api/datasetitem/{made.json()['id']}/").status_code == 204
    assert counted(dataset) == real(dataset) == {"cat": 2}
    assert api.get(f"/api/dataset/{dataset.pk}/").json()["item_count"] == 2


def test_recount_and_the_migrations_backfill_count_what_exists(dataset):
    DataSetItem.objects.bulk_create(
        [DataSetItem(dataset=dataset, label=label, image=f"datasets/x{n}.png") for n, label in enumerate("aab")]
    )
    assert counted(dataset) == {}  # written around the service: not counted
    assert label_counts_recount(dataset=dataset) == {"a": 2, "b": 1}
    assert counted(dataset) == {"a": 2, "b": 1}

    LabelCount.objects.all().delete()
    migration = importlib.import_module("management.migrations.0015_counts_as_data")
    migration.count_labels(apps)  # its runs' splits moved to RunData since (0019): the labels' half
    assert counted(dataset) == {"a": 2, "b": 1}
