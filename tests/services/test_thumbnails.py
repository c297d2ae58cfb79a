"""Thumbnails: a small WebP per image, made at import or on its first request, served like the image
(private, nosniff, sandboxed), deleted with its item; lists show it instead of the original."""

import io
from pathlib import Path
from unittest import mock

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.core.files.base import ContentFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
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
from management.files import media_create
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
    big = (300, 20)  # wider than a thumbnail: each gets one
    dataset_import_zip(
        dataset=dataset, file=io.BytesIO(zip_of({"a/1.png": png(size=big), "b/2.png": png((0, 0, 255), size=big)}))
    )
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
    item = dataset_item_create(dataset=dataset, label="cat", file=io.BytesIO(png(size=(300, 100))))
    old = item.thumbnail_name
    assert stored(old).is_file()
    with django_capture_on_commit_callbacks(execute=True):
        dataset_item_update(item=item, file=ContentFile(png(size=(100, 300)), name="new.png"))
    assert not stored(old).exists()
    with Image.open(stored(item.thumbnail_name)) as image:
        assert image.size == (85, 256)


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
    item = dataset_item_create(dataset=dataset, label="cat", file=io.BytesIO(png(size=(300, 100))))
    html = admin_client.get("/admin/management/datasetitem/").content.decode()
    assert item.thumbnail_url in html and f'src="{item.image.url}"' not in html


def test_a_small_image_shown_as_it_is_is_its_own_thumbnail_and_its_thumbnail_url_answers_with_it(admin_client, dataset):
    original = png(size=(28, 28))
    dataset_import_zip(dataset=dataset, file=io.BytesIO(zip_of({"a/1.png": original})))
    item = dataset.items.get()
    # Its name says so: its thumbnail is itself, no WebP is made, and no lookup is needed to serve it.
    assert item.image.name.endswith("-t.png") and item.thumbnail_name == item.image.name
    assert item.thumbnail_url == item.image.url
    thumbnails = stored(f"datasets/{dataset.pk}/thumbnails")
    assert not thumbnails.exists() or not any(thumbnails.iterdir())
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(item.thumbnail_url)
    assert response.status_code == 200 and body(response) == original
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert not any("LIKE" in query["sql"] for query in queries.captured_queries)  # no item looked up by name
    assert not thumbnails.exists() or not any(thumbnails.iterdir())  # nor on its request


def animated_gif() -> bytes:
    buffer = io.BytesIO()
    frames = [Image.new("RGB", (20, 20), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "name, data",
    [
        ("wide.png", png(size=(300, 20))),  # larger than a thumbnail
        ("turned.jpg", photo(40, 20, orientation=6)),  # a browser may not turn it upright
        ("sixteen.png", png(0, size=(20, 20), mode="I;16")),  # 16-bit: shown differently, or not at all
        ("small.tiff", png(size=(20, 20), format="TIFF")),  # browsers do not show TIFF
        ("cmyk.jpg", png((0, 0, 0, 0), size=(20, 20), mode="CMYK", format="JPEG")),
        ("moving.gif", animated_gif()),  # the thumbnail is its first frame, still
    ],
)
def test_a_small_image_a_browser_would_not_show_as_it_is_still_gets_a_webp_thumbnail(admin_client, dataset, name, data):
    dataset_import_zip(dataset=dataset, file=io.BytesIO(zip_of({f"a/{name}": data})))
    item = dataset.items.get()
    assert stored(item.thumbnail_name).is_file()
    response = admin_client.get(item.thumbnail_url)
    assert response.status_code == 200 and response["Content-Type"] == "image/webp"


def test_a_small_image_stored_before_thumbnails_gets_a_webp_once_on_its_first_request(admin_client, dataset):
    item = DataSetItem(dataset=dataset, label="cat")
    item.image.save("x.png", ContentFile(png(size=(24, 24))), save=False)
    item.save()
    response = admin_client.get(item.thumbnail_url)
    assert response.status_code == 200 and response["Content-Type"] == "image/webp"
    assert stored(item.thumbnail_name).is_file()  # kept: the next request finds the file


def test_an_image_added_through_the_service_small_enough_is_named_as_its_own_thumbnail(dataset):
    small = dataset_item_create(dataset=dataset, label="cat", file=io.BytesIO(png(size=(24, 24))))
    large = dataset_item_create(dataset=dataset, label="cat", file=io.BytesIO(png(size=(300, 100))))
    assert small.thumbnail_name == small.image.name
    assert large.thumbnail_name != large.image.name and stored(large.thumbnail_name).is_file()


@pytest.mark.parametrize("failing", [1, 2], ids=["the image", "its thumbnail"])
def test_a_replacement_that_cannot_be_written_keeps_the_old_image_and_leaves_no_new_file(dataset, failing):
    item = dataset_item_create(dataset=dataset, label="cat", file=io.BytesIO(png(size=(300, 100))))
    old = {item.image.name, item.thumbnail_name}
    before = {path for path in Path(settings.MEDIA_ROOT, "datasets").rglob("*") if path.is_file()}
    real_create = media_create
    calls = []

    def full_on(storage, name, data):
        calls.append(name)
        if len(calls) == failing:
            raise OSError(28, "No space left on device", name)
        return real_create(storage=storage, name=name, data=data)

    with mock.patch("management.journal.media_create", lambda *, storage, name, data: full_on(storage, name, data)):
        with pytest.raises(OSError):
            dataset_item_update(item=item, file=ContentFile(png(size=(100, 300)), name="new.png"))
    assert {path for path in Path(settings.MEDIA_ROOT, "datasets").rglob("*") if path.is_file()} == before
    assert all(stored(name).is_file() for name in old)
    item.refresh_from_db()
    assert {item.image.name, item.thumbnail_name} == old
