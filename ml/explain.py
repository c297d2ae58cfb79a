"""Why did the model decide? Occlusion sensitivity (Zeiler & Fergus, 2014) and its overlay on the image.

Plain patches, each over a part of the image, are slid over a grid; the drop of the explained label's
probability when a part is hidden is how much the model relied on it. It needs only the forward
pass of whatever serves the model (ONNX Runtime in the web process, or Keras), one batch of
occluded copies, so it works for any model code and any starting point without TensorFlow's
gradients. No Django here: arrays in, arrays and PNG bytes out.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageOps

from ml import images as image_files

METHOD = "occlusion"
# 8 × 8 positions: 64 occluded copies and the image itself, whatever the image size (a pretrained
# model at 224 px costs 65 forward passes, not the 225 of 1/8-image patches at half-patch strides).
GRID = 8
# A patch covers a fifth of each side; with 8 positions from edge to edge the stride is about half a patch.
PATCH_FRACTION = 0.2
# The overlay is shown at most this large (its longer side), whatever the image's size.
DISPLAY_SIDE = 384

# Probabilities below this count as this (float32 softmax outputs reach about 1e-38).
TINY = 1e-30

Predict = Callable[[np.ndarray], np.ndarray]


def patch_boxes(height: int, width: int, *, grid: int = GRID, patch_fraction: float = PATCH_FRACTION):
    """(top, left, bottom, right) of each occluding patch: `grid` × `grid` positions covering the image."""
    if grid < 1:
        raise ValueError(f"grid must be at least 1, not {grid}")
    if not 0 < patch_fraction <= 1:
        raise ValueError(f"patch_fraction must be in (0, 1], not {patch_fraction}")
    patch_h = max(1, round(height * patch_fraction))
    patch_w = max(1, round(width * patch_fraction))
    tops = np.unique(np.linspace(0, height - patch_h, grid).round().astype(int))
    lefts = np.unique(np.linspace(0, width - patch_w, grid).round().astype(int))
    return [(top, left, top + patch_h, left + patch_w) for top in tops for left in lefts]


def _smooth(heat: np.ndarray, sigma: float) -> np.ndarray:
    """A separable Gaussian blur (edges repeated), so the patches' squares do not show."""
    if sigma <= 0:
        return heat
    radius = max(1, int(round(3 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    padded = np.pad(heat, radius, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view
    rows = windows(padded, kernel.size, axis=1) @ kernel
    return windows(rows, kernel.size, axis=0) @ kernel


def log_odds(probabilities: np.ndarray, class_index: int) -> np.ndarray:
    """log(p / (1 - p)) of the label for each row, with 1 - p summed from the other labels' probabilities:
    a confident model's 0.99999 and 0.9999 differ here, though their difference as probabilities is nil."""
    chosen = probabilities[:, class_index]
    others = probabilities.sum(axis=1) - chosen
    return np.log(np.clip(chosen, TINY, None)) - np.log(np.clip(others, TINY, None))


def occlusion_map(
    predict: Predict,
    image_array: np.ndarray,
    class_index: int,
    *,
    grid: int = GRID,
    patch_fraction: float = PATCH_FRACTION,
    fill: str = "mean",
) -> np.ndarray:
    """How much each pixel mattered to the probability of `class_index`: shape (H, W), values 0..1.

    `predict` takes a batch (N, H, W, C) of images like `image_array` (the model's uint8 input) and
    gives probabilities (N, labels); it is called once, with the image and its occluded copies. A
    patch is filled with the image's mean colour (`fill="mean"`) or mid grey (`"grey"`): a plain
    colour the model has no reason to read as any label. The heat of a pixel is the mean drop of
    the label's probability, as log-odds (`log_odds`), over the patches that hide it (rises count
    as none), smoothed, and scaled so the largest is 1; all zeros when hiding no part lowers it.
    """
    image_array = np.asarray(image_array)
    if image_array.ndim == 2:
        image_array = image_array[:, :, np.newaxis]
    if image_array.ndim != 3:
        raise ValueError(f"image_array must be (height, width, channels), not of shape {image_array.shape}")
    height, width, _ = image_array.shape
    if fill == "mean":
        colour = image_array.reshape(-1, image_array.shape[2]).mean(axis=0)
    elif fill == "grey":
        colour = np.full(image_array.shape[2], 128.0)
    else:
        raise ValueError(f"fill must be 'mean' or 'grey', not {fill!r}")
    colour = np.asarray(np.round(colour), dtype=image_array.dtype)

    boxes = patch_boxes(height, width, grid=grid, patch_fraction=patch_fraction)
    batch = np.repeat(image_array[np.newaxis], len(boxes) + 1, axis=0)
    for index, (top, left, bottom, right) in enumerate(boxes, start=1):
        batch[index, top:bottom, left:right] = colour
    probabilities = np.asarray(predict(batch), dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[0] != len(batch):
        raise ValueError(f"predict gave shape {probabilities.shape} for {len(batch)} images")
    if not 0 <= class_index < probabilities.shape[1]:
        raise ValueError(f"class_index {class_index} is not one of the model's {probabilities.shape[1]} labels")
    score = log_odds(probabilities, class_index)
    drops = np.clip(score[0] - score[1:], 0.0, None)

    total = np.zeros((height, width))
    covered = np.zeros((height, width))
    for drop, (top, left, bottom, right) in zip(drops, boxes, strict=True):
        total[top:bottom, left:right] += drop
        covered[top:bottom, left:right] += 1
    heat = np.divide(total, covered, out=np.zeros_like(total), where=covered > 0)
    heat = _smooth(heat, sigma=max(height, width) * patch_fraction / 4)
    peak = float(heat.max())
    if peak <= 1e-12:
        return np.zeros((height, width))
    return np.clip(heat / peak, 0.0, 1.0)


def display_image(source: image_files.ImageSource, *, max_side: int = DISPLAY_SIDE, max_pixels: int | None = None):
    """An RGB Pillow image of `source` as a viewer shows it (EXIF orientation applied), at most `max_side`."""
    image = image_files.open_image(source, max_pixels)  # the same refusals (formats, size) as the model's input
    with image:
        if image.format == "JPEG":
            image.draft("RGB", (max_side, max_side))
        image = ImageOps.exif_transpose(image)
        image = image_files.normalise_mode(image, image_files.RGB)
    image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return image


def colour_map(heat: np.ndarray) -> np.ndarray:
    """Heat 0..1 as RGB uint8: dark blue (nothing) through cyan, yellow to red (most), like 'jet'."""
    heat = np.clip(np.asarray(heat, dtype=np.float64), 0.0, 1.0)
    red = np.clip(1.5 - np.abs(4 * heat - 3), 0, 1)
    green = np.clip(1.5 - np.abs(4 * heat - 2), 0, 1)
    blue = np.clip(1.5 - np.abs(4 * heat - 1), 0, 1)
    return np.round(np.stack([red, green, blue], axis=-1) * 255).astype(np.uint8)


def overlay_png(original_image, heat: np.ndarray, *, opacity: float = 0.5) -> bytes:
    """The heat in colour over the image (a Pillow image or an array), as PNG bytes of the image's size.

    The heat is stretched to the image as the model's input was (images.load_image resizes to a
    square); where the model looked little, the image shows through more.
    """
    if isinstance(original_image, np.ndarray):
        array = original_image[:, :, 0] if original_image.ndim == 3 and original_image.shape[2] == 1 else original_image
        original_image = Image.fromarray(np.asarray(array, dtype=np.uint8))
    base = original_image.convert("RGB")
    heat = np.clip(np.asarray(heat, dtype=np.float64), 0.0, 1.0)
    heat_image = Image.fromarray(np.round(heat * 255).astype(np.uint8)).resize(base.size, Image.Resampling.BILINEAR)
    scaled = np.asarray(heat_image, dtype=np.float64) / 255.0
    colours = Image.fromarray(colour_map(scaled))
    # Each pixel's blend follows its heat: cold parts stay mostly the image, hot parts mostly colour.
    alpha = Image.fromarray(np.round((0.25 + 0.75 * scaled) * opacity * 255).astype(np.uint8))
    blended = Image.composite(colours, base, alpha)
    buffer = io.BytesIO()
    # A quick compression: a photo's heatmap hardly compresses further, and the time is the request's.
    blended.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()
