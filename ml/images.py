"""The one preprocessing function: any accepted image to the array a model takes.

Training and prediction both call `load_image`, so a model always receives images prepared the
same way: EXIF orientation applied, any mode turned into grayscale or RGB, resized to the run's size.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

GRAYSCALE = "grayscale"
RGB = "rgb"
COLOR_MODES = (GRAYSCALE, RGB)

ImageSource = bytes | str | Path | BinaryIO

# Every format Pillow reads except those it decodes by running another program: an EPS or PostScript
# image is rendered by Ghostscript, a client's file must never reach an interpreter.
REFUSED_FORMATS = frozenset({"EPS"})


def _readable_formats() -> list[str]:
    Image.init()
    return [format for format in Image.ID if format not in REFUSED_FORMATS]


@dataclass(frozen=True)
class ImageInfo:
    """What verifying an image found out about it."""

    format: str
    width: int
    height: int


def channels_for(color_mode: str) -> int:
    if color_mode not in COLOR_MODES:
        raise ValueError(f"color_mode must be one of {', '.join(COLOR_MODES)}, not {color_mode!r}")
    return 1 if color_mode == GRAYSCALE else 3


class TooManyPixels(ValueError):
    """An image with more pixels than a limit allows, found from its header before any decoding."""

    def __init__(self, message: str, *, pixels: int, limit: int | None):
        super().__init__(message)
        self.pixels = pixels
        self.limit = limit


def open_image(source: ImageSource, max_pixels: int | None) -> Image.Image:
    """Open (read only the header of) an image, refusing it before decoding when it is too large.

    The limit is checked here rather than through Pillow's process-wide MAX_IMAGE_PIXELS, so
    callers with different limits (web requests, the training process) never change each other's.
    Pillow's own decompression-bomb error still applies above its limit. The size read is the one
    the decoder fills: a GIF's logical screen, a PNG's or TIFF's full frame.
    """
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        image = Image.open(source, formats=_readable_formats())
    except Image.DecompressionBombError as error:
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        count = int(pixels.group(1)) if pixels else 0
        shown = f"{count:,} pixels" if count else "too many pixels"
        limit = f"; at most {max_pixels:,} accepted" if max_pixels is not None else ""
        raise TooManyPixels(f"image has too many pixels ({shown}{limit})", pixels=count, limit=max_pixels) from None
    except UnidentifiedImageError:
        raise ValueError("not an image (no image format recognised in this file)") from None
    except OSError as error:
        raise ValueError(f"cannot read the image: {error}") from None
    pixels = image.width * image.height
    if max_pixels is not None and pixels > max_pixels:
        image.close()
        raise TooManyPixels(
            f"image has too many pixels ({image.width}x{image.height} = {pixels:,}; at most {max_pixels:,} accepted)",
            pixels=pixels,
            limit=max_pixels,
        )
    return image


def decoded_pixels(source: ImageSource, *, side: int | None = None, max_pixels: int | None = None) -> int:
    """How many pixels decoding the image will fill, read from its header only (nothing is decoded).

    `side` is the size the caller then shrinks to (a model's input, a thumbnail): a JPEG is decoded
    at the smallest power-of-two reduction still at least that large, as `load_image` and
    `make_thumbnail` ask its decoder to; every other format is decoded whole. Raises ValueError for
    what is not an image and TooManyPixels above `max_pixels` (the whole image's count).
    """
    rewind = hasattr(source, "seek")
    try:
        image = open_image(source, max_pixels)
        with image:
            if side is not None and image.format == "JPEG":
                image.draft(image.mode, (side, side))  # changes the size to decode, decodes nothing
            return image.width * image.height
    finally:
        if rewind:
            source.seek(0)


def verify_image(source: ImageSource, *, max_pixels: int | None = None) -> ImageInfo:
    """Decode the whole image once; raise ValueError saying why it is not a usable image."""
    image = open_image(source, max_pixels)
    try:
        with image:
            image.load()
            if image.width < 1 or image.height < 1:
                raise ValueError("image has no pixels")
            return ImageInfo(format=image.format or "unknown", width=image.width, height=image.height)
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"image is truncated or corrupt ({error})") from None


# The extension a stored image gets, by the format Pillow detected in its bytes. A file's name never
# comes from its sender: a PNG named cat.html is stored as .png and served as image/png.
EXTENSIONS = {
    "JPEG": "jpg",
    "MPO": "jpg",  # a JPEG with more pictures after the first: every viewer reads it as a JPEG
    "PNG": "png",
    "GIF": "gif",
    "WEBP": "webp",
    "BMP": "bmp",
    "TIFF": "tiff",
    "ICO": "ico",
    "AVIF": "avif",
}
UNKNOWN_EXTENSION = "bin"


def image_extension(format: str | None) -> str:
    """The extension (no dot) for an image of this Pillow format; "bin" when there is none."""
    format = (format or "").upper()
    if format in EXTENSIONS:
        return EXTENSIONS[format]
    registered = [ext.lstrip(".") for ext, name in Image.registered_extensions().items() if name == format]
    if format.lower() in registered:
        return format.lower()
    return registered[0] if registered else UNKNOWN_EXTENSION


def image_format(source: ImageSource) -> str | None:
    """The format Pillow detects from the header of an image (file objects are read from the start
    and left at the start), or None when it is not an image Pillow knows."""
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    rewind = hasattr(source, "seek")
    if rewind:
        source.seek(0)
    try:
        with Image.open(source, formats=_readable_formats()) as image:
            return image.format
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    finally:
        if rewind:
            source.seek(0)


def image_file_name(format: str | None) -> str:
    """The name the server gives an image of this format before the storage chooses its folder."""
    return f"image.{image_extension(format)}"


def _to_8_bit(image: Image.Image) -> Image.Image:
    """Scale 16/32-bit integer and float images to 0..255 instead of clipping them."""
    array = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        low, high = float(array.min()), float(array.max())
        array = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
    else:
        peak = float(array.max()) if array.size else 0.0
        if peak > 255:
            array = array / (65535.0 if peak <= 65535 else peak) * 255.0
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), mode="L")


def normalise_mode(image: Image.Image, color_mode: str) -> Image.Image:
    if image.mode in {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}:
        image = _to_8_bit(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        # Transparent pixels are shown on white, as every viewer shows them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("L" if color_mode == GRAYSCALE else "RGB")


def load_image(
    source: ImageSource,
    *,
    image_size: int,
    color_mode: str,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Return a uint8 array of shape (image_size, image_size, channels) for any readable image.

    Raises ValueError with a readable reason for anything that is not a decodable image.
    """
    channels = channels_for(color_mode)
    if image_size < 1:
        raise ValueError(f"image_size must be positive, not {image_size}")
    image = open_image(source, max_pixels)
    try:
        with image:
            if image.format == "JPEG":
                # Let the JPEG decoder downscale by a power of two first: much cheaper than
                # decoding every pixel of a large photo only to throw most of them away.
                image.draft("L" if channels == 1 else "RGB", (image_size, image_size))
            image = ImageOps.exif_transpose(image)
            image = normalise_mode(image, color_mode)
            if image.size != (image_size, image_size):
                image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, SyntaxError) as error:
        raise ValueError(f"image is truncated or corrupt ({error})") from None
    if channels == 1:
        array = array[:, :, np.newaxis]
    return array


THUMBNAIL_SIDE = 256
THUMBNAIL_QUALITY = 80
# An image that a browser shows as it is, no larger than a thumbnail and no heavier than this, is its own
# thumbnail: no WebP is made for it and its thumbnail's URL answers with it (datasets/services.py).
OWN_THUMBNAIL_FORMATS = frozenset({"PNG", "JPEG", "GIF", "WEBP"})
OWN_THUMBNAIL_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA"})
OWN_THUMBNAIL_MAX_BYTES = 64 * 1024
EXIF_ORIENTATION = 0x0112
# Pillow's own table (ImageOps.exif_transpose): the transposition that shows an image upright.
ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class InspectedImage:
    """An image verified whole, and its thumbnail: None when the image is its own thumbnail, or when
    none can be made (a mode no viewer shows): the image is kept, and the lists show nothing for it."""

    info: ImageInfo
    thumbnail: bytes | None
    own_thumbnail: bool = False


def _orientation(image: Image.Image) -> int | None:
    """The image's EXIF orientation (1: upright, the default); None when its EXIF cannot be read."""
    try:
        return int(image.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - Pillow's EXIF parser raises many kinds on a malformed block
        return None


def is_own_thumbnail(image: Image.Image, *, size_bytes: int, side: int = THUMBNAIL_SIDE) -> bool:
    """Whether `image` (opened) can be shown in a list as it is: a format and mode every browser shows
    alike, at most `side` pixels each way, at most OWN_THUMBNAIL_MAX_BYTES, one frame, upright (no EXIF
    rotation to apply). The import and the media view ask the same question."""
    return (
        image.format in OWN_THUMBNAIL_FORMATS
        and image.mode in OWN_THUMBNAIL_MODES
        and 1 <= image.width <= side
        and 1 <= image.height <= side
        and size_bytes <= OWN_THUMBNAIL_MAX_BYTES
        and not getattr(image, "is_animated", False)
        and _orientation(image) == 1
    )


def _thumbnail_of(image: Image.Image, side: int) -> bytes:
    """The WebP thumbnail of an opened image (decoded here if it is not yet)."""
    orientation = _orientation(image)
    # A JPEG is first reduced by whole factors (a box filter, as its decoder's draft mode reduces it),
    # to no less than the thumbnail's size, then resampled: 640x480 to 256 px in about 1 ms instead of 4
    # ms of Lanczos over every pixel. Other formats are resampled from closer (Pillow's default gap).
    reducing_gap = 1.0 if image.format == "JPEG" else 2.0
    if image.mode in {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}:
        image = _to_8_bit(image)
    transparent = image.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or (
        image.mode == "P" and "transparency" in image.info
    )
    image = image.convert("RGBA" if transparent else "RGB")
    # Shrunk before it is turned upright: the box is square, so the result is the same, and only the
    # thumbnail's pixels are transposed.
    image.thumbnail((side, side), Image.Resampling.LANCZOS, reducing_gap=reducing_gap)
    if orientation in ORIENTATION_TRANSPOSE:
        image = image.transpose(ORIENTATION_TRANSPOSE[orientation])
    output = io.BytesIO()
    # Method 2 rather than 4: a 256 px photo's thumbnail in 2.5 ms instead of 6.2 ms, 3 % larger, the same
    # quality within 0.13 dB of PSNR (measured on bench.thumbnails' photo).
    image.save(output, format="WEBP", quality=THUMBNAIL_QUALITY, method=2)
    return output.getvalue()


def inspect_image(image: Image.Image, *, size_bytes: int, side: int = THUMBNAIL_SIDE) -> InspectedImage:
    """Verify an opened image (`open_image`, its pixels already held to their limits) by decoding it
    whole, once, and make its thumbnail from that same decoding unless it is its own thumbnail
    (`is_own_thumbnail`; `size_bytes`: its file's size). Raises ValueError saying why it is not a
    usable image."""
    try:
        image.load()
        if image.width < 1 or image.height < 1:
            raise ValueError("image has no pixels")
        info = ImageInfo(format=image.format or "unknown", width=image.width, height=image.height)
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"image is truncated or corrupt ({error})") from None
    if is_own_thumbnail(image, size_bytes=size_bytes, side=side):
        return InspectedImage(info=info, thumbnail=None, own_thumbnail=True)
    try:
        return InspectedImage(info=info, thumbnail=_thumbnail_of(image, side))
    except (ValueError, OSError, SyntaxError):  # decoded whole, but not to be made smaller: kept, as before
        return InspectedImage(info=info, thumbnail=None)


def make_thumbnail(source: ImageSource, *, side: int = THUMBNAIL_SIDE, max_pixels: int | None = None) -> bytes:
    """A small WebP of an image for lists and galleries: at most `side` pixels on its longest side,
    EXIF orientation applied, colours as a viewer shows them (transparency kept). Raises ValueError
    with a readable reason for anything that is not a decodable image."""
    image = open_image(source, max_pixels)
    try:
        with image:
            if image.format == "JPEG":
                # The JPEG decoder downscales by a power of two while decoding: a 40-megapixel photo
                # never becomes 40 million decoded pixels.
                image.draft("RGB", (side, side))
            return _thumbnail_of(image, side)
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"image is truncated or corrupt ({error})") from None
