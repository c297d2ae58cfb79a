"""Regenerate the Postman collection's sample images (deterministic: same bytes on every run).

    .venv/bin/python postman/make_sample.py

writes, next to this file:
  shapes.zip   circle/, square/ and triangle/, 8 PNG images of 32x32 each (the upload request)
  sample.png   one more square (the multipart prediction request)
and prints the base64 of one more circle, the collection variable `imageBase64`.
The images come from the app's own generator (ml/shapes.py).
"""

import base64
import io
import random
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ml.shapes import SHAPES, draw_shape  # noqa: E402

PER_LABEL = 8
SIZE = 32
# A fixed timestamp in every zip entry, so the zip's bytes never change.
ZIP_DATE = (2024, 1, 1, 0, 0, 0)


def png(shape: str, generator: random.Random) -> bytes:
    buffer = io.BytesIO()
    draw_shape(shape, size=SIZE, generator=generator).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def shapes_zip(seed: int = 0) -> bytes:
    generator = random.Random(seed)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for shape in SHAPES:
            for number in range(1, PER_LABEL + 1):
                entry = zipfile.ZipInfo(f"{shape}/{shape}_{number:03d}.png", date_time=ZIP_DATE)
                entry.compress_type = zipfile.ZIP_DEFLATED
                entry.external_attr = 0o644 << 16
                archive.writestr(entry, png(shape, generator))
    return buffer.getvalue()


def main() -> None:
    (HERE / "shapes.zip").write_bytes(shapes_zip())
    (HERE / "sample.png").write_bytes(png("square", random.Random(1)))
    print(base64.b64encode(png("circle", random.Random(2))).decode("ascii"))


if __name__ == "__main__":
    main()
