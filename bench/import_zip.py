"""The zip import in process: `dataset_import_zip` on Fashion-MNIST's images and on photos (issue 24).

    .venv/bin/python -m bench.import_zip [--images 5000] [--photos 300] [--repeat 2]

A fresh data folder (SQLite, media on this disk), Django set up in this process, no web server: the
import's own speed, without the upload or the job's process start. Two zips: the first `--images`
Fashion-MNIST training images as 28 px grayscale PNGs (one folder per class, as bench.scale makes
them), and `--photos` 640x480 JPEGs (a gradient with noise: each needs a real thumbnail). Each is
imported `--repeat` times into a new dataset; the best and the worst are kept. Prints a table and writes
bench/results/import_zip.json.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import database_with_token, write_results
from bench.scale import fashion_train, zip_of


def photo_zip(count: int) -> bytes:
    generator = np.random.default_rng(0)
    base = np.asarray(Image.linear_gradient("L").resize((640, 480)).convert("RGB"), dtype=np.float64)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as writer:
        for number in range(count):
            pixels = np.clip(base + generator.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
            writer.writestr(f"{'ab'[number % 2]}/{number:05d}.jpg", buffer.getvalue())
    return archive.getvalue()


def import_speed(archive: bytes, count: int, repeat: int, name: str) -> dict:
    from datasets.models import DataSet
    from datasets.services import dataset_import_zip

    rates = []
    for attempt in range(repeat):
        dataset = DataSet.objects.create(name=f"{name} {attempt}")
        started = time.perf_counter()
        report = dataset_import_zip(dataset=dataset, file=io.BytesIO(archive))
        seconds = time.perf_counter() - started
        if report.added != count:
            raise SystemExit(f"{name}: {report.added} of {count} imported; skipped {report.skipped[:3]}")
        rates.append(count / seconds)
    return {"images": count, "best_per_s": round(max(rates)), "worst_per_s": round(min(rates))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    images, labels = fashion_train(args.images)
    fashion = zip_of(images, labels)
    photos = photo_zip(args.photos)
    data_dir = Path(tempfile.mkdtemp(prefix="kerasui-import-"))
    database_with_token(data_dir, "bench")
    rows = {
        "Fashion-MNIST, 28 px PNG": import_speed(fashion, len(images), args.repeat, "fashion"),
        "photos, 640x480 JPEG": import_speed(photos, args.photos, args.repeat, "photos"),
    }
    load = os.getloadavg()
    print(f"{'zip':<28}{'images':>8}{'best/s':>9}{'worst/s':>9}   (load average {load[0]:.1f})")
    for name, row in rows.items():
        print(f"{name:<28}{row['images']:>8}{row['best_per_s']:>9}{row['worst_per_s']:>9}")
    write_results(
        "import_zip",
        {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "load_average": load, "rows": rows},
    )


if __name__ == "__main__":
    main()
