"""Generated images of circles, squares and triangles: the demo dataset and the tests' data.

Each image varies the shape's size, position, rotation and colours, so a model has to learn the
shape itself; the classes are cleanly separable, so a working pipeline reaches high accuracy.
"""

import io
import math
import random
import zipfile

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")


def _colour(generator: random.Random, low: int, high: int) -> tuple[int, int, int]:
    return tuple(generator.randrange(low, high) for _ in range(3))


def draw_shape(shape: str, *, size: int, generator: random.Random) -> Image.Image:
    """One image of `shape` at a random size, position, rotation and colour."""
    # A light background and a darker shape, both of random colour: the contrast stays clear.
    background = _colour(generator, 170, 256)
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    radius = generator.uniform(0.2, 0.4) * size
    cx = generator.uniform(radius, size - radius)
    cy = generator.uniform(radius, size - radius)
    fill = _colour(generator, 0, 130)
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
    else:
        corners = 4 if shape == "square" else 3
        start = generator.uniform(0, 2 * math.pi)
        points = [
            (
                cx + radius * math.cos(start + 2 * math.pi * k / corners),
                cy + radius * math.sin(start + 2 * math.pi * k / corners),
            )
            for k in range(corners)
        ]
        draw.polygon(points, fill=fill)
    return image


def demo_zip(*, per_label: int, size: int, seed: int = 0) -> bytes:
    """A zip with one folder per shape, `per_label` PNG images in each."""
    generator = random.Random(seed)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for shape in SHAPES:
            for number in range(1, per_label + 1):
                png = io.BytesIO()
                draw_shape(shape, size=size, generator=generator).save(png, format="PNG")
                archive.writestr(f"{shape}/{shape}_{number:03d}.png", png.getvalue())
    return buffer.getvalue()
