"""ml/images.py reads how many pixels an image will decode to from its header alone: a GIF's logical
screen, a JPEG at the reduction its decoder is asked for, and refuses too many before decoding."""

import io
import struct

import pytest
from PIL import Image

from ml.images import TooManyPixels, decoded_pixels, load_image, make_thumbnail, verify_image


def gif_with_screen(width: int, height: int) -> bytes:
    """A 1x1 GIF frame on a width x height logical screen: a few dozen bytes that decode to a full screen."""
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + frame + b";"


def jpeg(size) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_a_tiny_gif_counts_its_whole_logical_screen():
    bomb = gif_with_screen(8000, 5000)
    assert len(bomb) < 50
    assert decoded_pixels(bomb) == 40_000_000


def test_too_many_pixels_is_refused_from_the_header_by_every_decoding_path():
    bomb = gif_with_screen(8000, 5000)
    for decode in (
        lambda: decoded_pixels(bomb, max_pixels=1_000_000),
        lambda: verify_image(bomb, max_pixels=1_000_000),
        lambda: load_image(bomb, image_size=16, color_mode="rgb", max_pixels=1_000_000),
        lambda: make_thumbnail(bomb, max_pixels=1_000_000),
    ):
        with pytest.raises(TooManyPixels) as refused:
            decode()
        assert refused.value.pixels == 40_000_000 and refused.value.limit == 1_000_000


def test_a_jpeg_counts_the_pixels_its_reduced_decoding_fills():
    photo = jpeg((800, 600))
    assert decoded_pixels(photo) == 480_000
    # Asked for 64 px, the decoder reduces 8 times: 100x75.
    assert decoded_pixels(photo, side=64) == 100 * 75
    png = io.BytesIO()
    Image.new("RGB", (800, 600)).save(png, format="PNG")
    assert decoded_pixels(png.getvalue(), side=64) == 480_000  # a PNG is always decoded whole


def test_not_an_image_is_a_value_error_and_a_file_is_left_at_its_start():
    with pytest.raises(ValueError, match="not an image"):
        decoded_pixels(b"hello")
    file = io.BytesIO(jpeg((20, 10)))
    assert decoded_pixels(file) == 200 and file.tell() == 0
