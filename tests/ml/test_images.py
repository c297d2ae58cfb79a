import io

import numpy as np
import pytest
from PIL import Image

from ml.images import load_image, verify_image
from tests.images import png


def encoded(image: Image.Image, format="PNG", **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **save)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "mode, color, format",
    [
        ("RGB", (10, 20, 30), "PNG"),
        ("RGBA", (10, 20, 30, 255), "PNG"),
        ("LA", (100, 255), "PNG"),
        ("L", 128, "PNG"),
        ("1", 1, "PNG"),
        ("P", 3, "PNG"),
        ("CMYK", (0, 255, 255, 0), "JPEG"),
        ("I;16", 40000, "PNG"),
        ("I", 70000, "TIFF"),
        ("F", 0.5, "TIFF"),
        ("RGB", (10, 20, 30), "BMP"),
        ("RGB", (10, 20, 30), "WEBP"),
        ("RGB", (10, 20, 30), "GIF"),
    ],
)
@pytest.mark.parametrize("color_mode, channels", [("grayscale", 1), ("rgb", 3)])
def test_any_image_mode_becomes_the_requested_channels(mode, color, format, color_mode, channels):
    data = encoded(Image.new(mode, (20, 12), color), format=format)
    array = load_image(data, image_size=16, color_mode=color_mode)
    assert array.shape == (16, 16, channels)
    assert array.dtype == np.uint8


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    bright = load_image(encoded(Image.new("I;16", (8, 8), 65535)), image_size=8, color_mode="grayscale")
    middle = load_image(encoded(Image.new("I;16", (8, 8), 32768)), image_size=8, color_mode="grayscale")
    assert bright.min() == 255
    assert 120 <= middle.mean() <= 135


def test_transparent_pixels_are_shown_on_white():
    array = load_image(encoded(Image.new("RGBA", (8, 8), (255, 0, 0, 0))), image_size=8, color_mode="rgb")
    assert (array == 255).all()


def test_exif_orientation_is_applied_before_resizing():
    # Left half red, right half blue; orientation 6 means "rotate 90 degrees clockwise to display".
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    array = load_image(encoded(image, "JPEG", exif=exif, quality=95), image_size=20, color_mode="rgb")
    assert array[2, 10, 0] > 200 and array[2, 10, 2] < 60  # top is red once rotated
    assert array[17, 10, 2] > 200 and array[17, 10, 0] < 60  # bottom is blue


def test_one_pixel_high_image_is_accepted():
    assert load_image(png(size=(50, 1)), image_size=16, color_mode="rgb").shape == (16, 16, 3)


def test_colours_survive_preprocessing():
    array = load_image(png(color=(200, 30, 30), size=(64, 64)), image_size=16, color_mode="rgb")
    assert tuple(array[8, 8]) == (200, 30, 30)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"this is not an image", "not an image"),
        (png(size=(64, 64))[:60], "truncated"),
        (b"", "not an image"),
    ],
)
def test_broken_files_are_refused_with_a_reason(data, reason):
    with pytest.raises(ValueError, match=reason):
        verify_image(data)
    with pytest.raises(ValueError):
        load_image(data, image_size=16, color_mode="rgb")


def test_images_above_the_pixel_limit_are_refused():
    with pytest.raises(ValueError, match="too"):
        verify_image(png(size=(300, 300)), max_pixels=10_000)


def test_an_eps_file_is_refused_before_ghostscript_could_render_it(monkeypatch):
    from PIL import EpsImagePlugin

    rendered = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "load", lambda self, *a, **k: rendered.append(1))
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n"
    with pytest.raises(ValueError, match="not an image"):
        verify_image(eps)
    assert rendered == []
