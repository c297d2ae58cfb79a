"""Odd but valid images go in as items and get predictions through the API; broken ones get a 4xx naming them."""

import base64
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from datasets.models import DataSetItem


def encoded(image: Image.Image, format: str, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **save)
    return buffer.getvalue()


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90°
    return encoded(Image.new("RGB", (20, 10), (220, 40, 40)), "JPEG", exif=exif)


def ycck_jpeg() -> bytes:
    """A CMYK JPEG whose Adobe marker says its components are YCCK (transform 2): decoders then take
    the YCCK path, as they do for Photoshop's CMYK exports."""
    data = bytearray(encoded(Image.new("CMYK", (16, 16), (0, 200, 200, 20)), "JPEG"))
    marker = data.find(b"Adobe")
    data[marker + 11] = 2
    assert Image.open(io.BytesIO(bytes(data))).info["adobe_transform"] == 2
    return bytes(data)


ODD = {
    "cmyk.jpg": lambda: encoded(Image.new("CMYK", (16, 16), (0, 200, 200, 20)), "JPEG"),
    "ycck.jpg": ycck_jpeg,
    "grey16.png": lambda: encoded(Image.new("I;16", (16, 16), 50000), "PNG"),
    "palette.png": lambda: encoded(Image.new("P", (16, 16), 3), "PNG"),
    "transparent.png": lambda: encoded(Image.new("RGBA", (16, 16), (220, 40, 40, 0)), "PNG"),
    "transparent.gif": lambda: encoded(Image.new("P", (16, 16), 1), "GIF", transparency=1),
    "la.png": lambda: encoded(Image.new("LA", (16, 16), (90, 200)), "PNG"),
    "rotated.jpg": exif_rotated_jpeg,
    "image.webp": lambda: encoded(Image.new("RGB", (16, 16), (40, 200, 50)), "WEBP"),
    "image.bmp": lambda: encoded(Image.new("RGB", (16, 16), (30, 60, 220)), "BMP"),
    "image.tiff": lambda: encoded(Image.new("RGB", (16, 16), (30, 60, 220)), "TIFF"),
    "one-pixel-high.png": lambda: encoded(Image.new("RGB", (300, 1), (220, 40, 40)), "PNG"),
}

BROKEN = {
    "truncated.jpg": lambda: encoded(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")[:200],
    "text.jpg": lambda: b"this is text renamed to .jpg",
    "empty.png": lambda: b"",
}


@pytest.mark.parametrize("name", sorted(ODD))
def test_odd_images_are_accepted_as_items_and_predicted(api, trained_dataset, name):
    data = ODD[name]()
    upload = SimpleUploadedFile(name, data)
    item = api.post("/api/datasetitem/", {"dataset": trained_dataset.pk, "label": "odd", "image": upload})
    assert item.status_code == 201, item.content
    b64 = api.post(
        "/api/datasetitem/",
        {"dataset": trained_dataset.pk, "label": "odd", "image": base64.b64encode(data).decode()},
        format="json",
    )
    assert b64.status_code == 201, b64.content
    prediction = api.post("/api/test/", {"dataset": trained_dataset.pk, "image": SimpleUploadedFile(name, data)})
    assert prediction.status_code == 200, prediction.content
    assert prediction.json()["result"] in {"blue", "green", "red"}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_images_are_refused_naming_the_file(api, trained_dataset, name):
    data = BROKEN[name]()
    before = DataSetItem.objects.count()
    item = api.post(
        "/api/datasetitem/", {"dataset": trained_dataset.pk, "label": "x", "image": SimpleUploadedFile(name, data)}
    )
    assert item.status_code == 400 and "image" in item.json(), item.content
    prediction = api.post("/api/test/", {"dataset": trained_dataset.pk, "image": SimpleUploadedFile(name, data)})
    assert prediction.status_code == 400 and "image" in prediction.json(), prediction.content
    if data:
        assert name in prediction.json()["image"][0]
    assert DataSetItem.objects.count() == before


def test_a_decompression_bomb_is_refused_before_decoding(api, trained_dataset, settings):
    settings.KERASUI_MAX_IMAGE_PIXELS = 1_000_000
    bomb = encoded(Image.new("L", (3000, 3000), 0), "PNG")  # 9 megapixels in a few kilobytes
    assert len(bomb) < 100_000
    response = api.post("/api/test/", {"dataset": trained_dataset.pk, "image": SimpleUploadedFile("bomb.png", bomb)})
    assert response.status_code == 413 and "at most 1,000,000 per image" in response.json()["image"][0]
    assert response.json()["setting"] == "KERASUI_MAX_IMAGE_PIXELS"
    item = api.post(
        "/api/datasetitem/",
        {"dataset": trained_dataset.pk, "label": "x", "image": SimpleUploadedFile("bomb.png", bomb)},
    )
    assert item.status_code == 413 and "KERASUI_MAX_IMAGE_PIXELS" in item.json()["image"][0]


def huge_png(side: int = 30_000) -> bytes:
    """A real side×side grayscale PNG of zeros, compressed row by row (900 megapixels in about 1 MB)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte, then the row's pixels
    compressed = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", compressed) + chunk(b"IEND", b"")


def test_a_30000_by_30000_png_is_refused_with_the_default_limit_without_decoding_it(api, trained_dataset):
    bomb = huge_png()
    assert len(bomb) < 2_000_000
    assert bomb[12:16] == b"IHDR" and bomb[16:24] == (30_000).to_bytes(4, "big") * 2
    response = api.post("/api/test/", {"dataset": trained_dataset.pk, "image": SimpleUploadedFile("huge.png", bomb)})
    assert response.status_code == 413
    assert response.json()["image"][0].startswith("huge.png: 900,000,000 pixels; at most 25,000,000 per image")
