"""The import's cost per image (issue 24): each image opened and decoded once, whatever it needs
(verification, size, format, budgets, thumbnail), and its new files written without asking the
storage first whether their random names are free."""

import io
from unittest import mock

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage
from PIL import Image, ImageFile

from datasets.models import DataSet
from datasets.services import dataset_import_zip, dataset_item_create
from management.budgets import TooLarge
from management.files import media_create
from tests.images import png, zip_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def dataset() -> DataSet:
    return DataSet.objects.create(name="Once")


class Counted:
    """Counts Pillow's openings and decodings while the block runs."""

    def __enter__(self):
        self.opened = self.decoded = 0
        real_open, real_load = Image.open, ImageFile.ImageFile.load

        def open_counted(*args, **kwargs):
            self.opened += 1
            return real_open(*args, **kwargs)

        def load_counted(image):
            if image.tile:  # pixels still to decode: this call decodes them
                self.decoded += 1
            return real_load(image)

        self.patches = [
            mock.patch.object(Image, "open", open_counted),
            mock.patch.object(ImageFile.ImageFile, "load", load_counted),
        ]
        for patch in self.patches:
            patch.start()
        return self

    def __exit__(self, *exc_info):
        for patch in self.patches:
            patch.stop()


@pytest.mark.parametrize("size", [(28, 28), (400, 300)], ids=["its own thumbnail", "with a thumbnail"])
def test_a_zip_import_opens_and_decodes_each_image_once(dataset, size):
    archive = zip_of({f"a/{number}.png": png((number, 0, 0), size=size) for number in range(3)})
    with Counted() as counted:
        report = dataset_import_zip(dataset=dataset, file=io.BytesIO(archive))
    assert report.added == 3
    assert counted.opened == 3 and counted.decoded == 3


def test_adding_one_image_opens_and_decodes_it_once(dataset):
    with Counted() as counted:
        dataset_item_create(dataset=dataset, label="cat", file=io.BytesIO(png(size=(400, 300))))
    assert counted.opened == 1 and counted.decoded == 1


def test_an_image_over_the_pixel_limit_is_refused_from_its_header_without_decoding(dataset, settings):
    settings.KERASUI_MAX_IMAGE_PIXELS = 10_000
    archive = zip_of({"a/big.png": png(size=(200, 200)), "a/small.png": png(size=(50, 50))})
    with Counted() as counted:
        report = dataset_import_zip(dataset=dataset, file=io.BytesIO(archive))
    assert report.added == 1 and counted.decoded == 1
    assert report.skipped == [
        {"name": "a/big.png", "reason": "40,000 pixels; at most 10,000 per image (KERASUI_MAX_IMAGE_PIXELS)"}
    ]
    with pytest.raises(TooLarge, match="KERASUI_MAX_REQUEST_PIXELS"):
        settings.KERASUI_MAX_REQUEST_PIXELS = 1_000
        dataset_item_create(dataset=dataset, label="cat", file=io.BytesIO(png(size=(50, 50))))


def test_a_zip_import_asks_the_storage_nothing_before_writing_its_files(dataset):
    # The dataset's folders exist (the first file of a folder goes through Storage.save, which makes it).
    dataset_item_create(dataset=dataset, label="cat", file=io.BytesIO(png(size=(300, 20))))
    archive = zip_of({f"a/{number}.png": png((number, 0, 0), size=(300, 20)) for number in range(5)})
    with mock.patch.object(FileSystemStorage, "exists", wraps=default_storage.exists) as exists:
        report = dataset_import_zip(dataset=dataset, file=io.BytesIO(archive))
    assert report.added == 5 and exists.call_count == 0
    assert all(default_storage.exists(item.image.name) for item in dataset.items.all())


def test_a_new_file_never_replaces_one_of_the_same_name():
    kept = default_storage.save("datasets/9/0123456789abcdef.png", ContentFile(b"first"))
    saved = media_create(storage=default_storage, name=kept, data=b"second")
    assert saved != kept
    assert default_storage.open(kept).read() == b"first" and default_storage.open(saved).read() == b"second"
    fresh = media_create(storage=default_storage, name="datasets/10/fedcba9876543210.png", data=b"third")
    assert fresh == "datasets/10/fedcba9876543210.png" and default_storage.open(fresh).read() == b"third"
