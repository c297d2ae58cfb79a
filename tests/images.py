"""Images made with Pillow for the tests: plain colours, noise, zips, and separable classes."""

import io
import random
import zipfile

from PIL import Image

# Three classes a tiny model separates at once: the dominant colour of the image.
COLOURS = {"blue": (30, 60, 220), "green": (40, 200, 50), "red": (220, 40, 40)}


def png(color=(200, 30, 30), size=(16, 16), mode="RGB", format="PNG", **save) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format=format, **save)
    return buffer.getvalue()


def colour_image(label: str, *, seed: int, size: int = 16) -> bytes:
    """A noisy image whose dominant colour is the label's colour."""
    generator = random.Random(seed)
    base = COLOURS[label]
    image = Image.new("RGB", (size, size))
    image.putdata(
        [tuple(max(0, min(255, channel + generator.randint(-40, 40))) for channel in base) for _ in range(size * size)]
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def zip_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def colour_zip(per_label: int = 10, *, seed: int = 0) -> bytes:
    return zip_of(
        {
            f"{label}/{label}_{number}.png": colour_image(label, seed=seed + 1000 * index + number)
            for index, label in enumerate(COLOURS)
            for number in range(per_label)
        }
    )
