"""Thumbnails: a small WebP per image, made at import or on its first request, served like the image
(private, nosniff, sandboxed), deleted with its item; lists show it instead of the original."""

import io
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.core.files.base import ContentFile
from PIL import Image

from datasets.models import DataSet, DataSetItem
from datasets.services import (
    dataset_delete,
    dataset_import_zip,
    dataset_item_create,
    dataset_item_update,
    dataset_items_delete,
)
from jobs.process import job_execute
from tests.images import png, zip_of

pytestmark = pytest.mark.django_db


def photo(width: int, height: int, *, orientation: int | None = None) -> bytes:
    """A JPEG with a gradient (it compresses like a photo, not like noise), optionally EXIF-rotated."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    image.save(buffer, format="JPEG", quality=90, exif=exif.tobytes())
    return buffer.getvalue()


def stored(name: str) -> Path:
    return Path(settings.MEDIA_ROOT) / name


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


@pytest.fixture
def dataset() -> DataSet:
    return DataSet.objects.create(name="Photos")


def test_an_uploaded_photo_gets_a_small_webp_thumbnail_at_most_256_px(dataset):
    item = dataset_item_create(dataset=dataset, label="cat", file=io.BytesIO(photo(1200, 900)), name="cat.jpg")
    thumbnail = stored(item.thumbnail_name)
    assert item.thumbnail_name == f"datasets/{dataset.pk}/thumbnails/{Path(item.image.name).stem}.webp"
    with Image.open(thumbnail) as image:
        assert image.format == "WEBP" and image.size == (256, 192)
    assert thumbnail.stat().st_size < 20_000


def test_a_thumbnail_follows_the_exif_orientation(dataset):
    item = dataset_item_create(dataset=dataset, label="cat", file=io.BytesIO(photo(40, 20, orientation=6)))
    with Image.open(stored(item.thumbnail_name)) as image:
        assert image.size == (20, 40)


def test_a_zip_import_makes_every_images_thumbnail_and_deleting_items_deletes_them(
    dataset, django_capture_on_commit_callbacks
):
    dataset_import_zip(dataset=dataset, file=io.BytesIO(zip_of({"a/1.png": png(), "b/2.png": png((0, 0, 255))})))
    items = list(dataset.items.all())
    assert all(stored(item.thumbnail_name).is_file() for item in items)
    with django_capture_on_commit_callbacks(execute=True):
        dataset_items_delete(items=items[:1])
    assert not stored(items[0].thumbnail_name).exists() and stored(items[1].thumbnail_name).exists()
    with django_capture_on_commit_callbacks(execute=True):
        job = dataset_delete(dataset=dataset)
    job_execute(kind="deletion", job_id=job.pk)
    assert not stored(items[1].thumbnail_name).exists()


def test_replacing_an_image_replaces_its_thumbnail(dataset, django_capture_on_commit_callbacks):
    item = dataset_item_create(dataset=dataset, label="cat", file=io.BytesIO(png(size=(30, 10))))
    old = item.thumbnail_name
    with django_capture_on_commit_callbacks(execute=True):
        dataset_item_update(item=item, file=ContentFile(png(size=(10, 30)), name="new.png"))
    assert not stored(old).exists()
    with Image.open(stored(item.thumbnail_name)) as image:
        assert image.size == (10, 30)


def test_an_item_stored_before_thumbnails_gets_one_on_its_first_request(admin_client, dataset):
    item = DataSetItem(dataset=dataset, label="cat")
    item.image.save("x.jpg", ContentFile(photo(600, 300)), save=False)
    item.save()
    assert not stored(item.thumbnail_name).exists()
    response = admin_client.get(item.thumbnail_url)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/webp"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert response["Cache-Control"] == "private, no-store"
    with Image.open(io.BytesIO(body(response))) as image:
        assert image.size == (256, 128)
    assert stored(item.thumbnail_name).is_file()  # made once, kept


def test_a_thumbnail_of_no_item_is_404_and_needs_the_view_permission_of_images(admin_client, client, dataset):
    assert admin_client.get(f"/media/datasets/{dataset.pk}/thumbnails/0123456789abcdef.webp").status_code == 404
    item = dataset_item_create(dataset=dataset, label="cat", file=io.BytesIO(png()))
    user = User.objects.create_user("viewer", password="a-long-pass-phrase-9", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_dataset"))
    client.force_login(user)
    assert client.get(item.thumbnail_url, HTTP_ACCEPT="application/json").status_code == 403


def test_the_api_lists_items_with_their_thumbnail_newest_first_when_asked(admin_client, dataset):
    first = dataset_item_create(dataset=dataset, label="cat", file=io.BytesIO(png()))
    second = dataset_item_create(dataset=dataset, label="cat", file=io.BytesIO(png()))
    data = admin_client.get(f"/api/datasetitem/?dataset={dataset.pk}&ordering=-id").json()
    assert [row["id"] for row in data["results"]] == [second.pk, first.pk]
    assert data["results"][0]["thumbnail"].endswith(second.thumbnail_url)


def test_the_item_list_of_the_admin_shows_thumbnails_not_originals(admin_client, dataset):
    item = dataset_item_create(dataset=dataset, label="cat", file=io.BytesIO(png()))
    html = admin_client.get("/admin/management/datasetitem/").content.decode()
    assert item.thumbnail_url in html and f'src="{item.image.url}"' not in html
