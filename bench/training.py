"""Training benchmark: `manage.py train` against a plain Keras script, its peak memory, and the decode cache.

    .venv/bin/python -m bench.training [--quick] [--keep]

One run, one machine, every figure measured in that run on generated images (10 labels of noisy shapes):
  (a) run time: `manage.py train DATASET_ID` in a subprocess on a fresh data folder (the zip imported through
      `dataset_import_zip`), cold cache then warm cache, against a plain Keras script in a subprocess that
      decodes the same zip with a Pillow loop and calls `model.fit` on in-memory arrays with the same layers,
      epochs (5), batch size (32) and validation split (0.2, Keras' `validation_split` after one seeded
      shuffle); 6,000 and 20,000 grayscale images of 28×28;
  (b) peak memory of the `manage.py train` process (/proc/<pid>/status every 50 ms) for 2,000, 20,000 and
      60,000 RGB images of 64×64, items bulk-created over files hard-linked into media, one epoch, tiny model;
  (c) images decoded per second: `build_image_cache` with the app's workers against a plain Pillow loop
      over the same files (PNGs of 64×64, and JPEGs of 256×256 resized to 64).
--quick uses small sizes for a smoke run. Prints tables and writes bench/results/training.json.
The subcommands `setup` and `raw` are what the benchmark runs in its subprocesses.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from datetime import datetime
from pathlib import Path

from bench.common import write_results

ROOT = Path(__file__).resolve().parent.parent


SHAPES = ["circle", "square", "triangle", "hbar", "vbar", "cross", "plus", "disc", "diagonal", "dots"]
SEED = 1234
VALIDATION_SPLIT = 0.2

# The dataset's model code; the plain script builds the same layers around it (Rescaling first, softmax last).
SMALL_CODE = """\
model.add(Conv2D(32, 3, activation="relu"))
model.add(MaxPooling2D())
model.add(Conv2D(64, 3, activation="relu"))
model.add(MaxPooling2D())
model.add(Flatten())
model.add(Dense(128, activation="relu"))
"""
TINY_CODE = """\
model.add(Conv2D(8, 3, strides=4, activation="relu"))
model.add(GlobalAveragePooling2D())
"""
MODEL_CODES = {"small": SMALL_CODE, "tiny": TINY_CODE}

FULL = {"time_counts": (6_000, 20_000), "memory_counts": (2_000, 20_000, 60_000), "png": 20_000, "jpeg": 5_000}
QUICK = {"time_counts": (600, 2_000), "memory_counts": (200, 1_000, 3_000), "png": 2_000, "jpeg": 500}
TIME_GOALS = {0: 1.10, 1: 1.05}
MEMORY_GOAL = 1.5
DECODE_GOAL = 1.5


# Images ---------------------------------------------------------------------------------------------------------


def draw_shape(label: int, size: int, rng, *, rgb: bool, noise: float = 18.0):
    """One noisy image of the shape `SHAPES[label]` at a random place and size."""
    import numpy as np
    from PIL import Image, ImageDraw

    def colour(low: int, high: int):
        return tuple(int(v) for v in rng.integers(low, high, 3)) if rgb else int(rng.integers(low, high))

    image = Image.new("RGB" if rgb else "L", (size, size), colour(0, 80))
    draw = ImageDraw.Draw(image)
    fill = colour(150, 256)
    radius = size * rng.uniform(0.2, 0.35)
    x, y = size * rng.uniform(0.35, 0.65, 2)
    width = max(1, round(size / 14))
    box = [x - radius, y - radius, x + radius, y + radius]
    name = SHAPES[label]
    if name == "circle":
        draw.ellipse(box, outline=fill, width=width)
    elif name == "square":
        draw.rectangle(box, fill=fill)
    elif name == "triangle":
        draw.polygon([(x, y - radius), (x - radius, y + radius), (x + radius, y + radius)], fill=fill)
    elif name == "hbar":
        draw.rectangle([x - radius, y - width, x + radius, y + width], fill=fill)
    elif name == "vbar":
        draw.rectangle([x - width, y - radius, x + width, y + radius], fill=fill)
    elif name == "cross":
        draw.line(box, fill=fill, width=width)
        draw.line([x - radius, y + radius, x + radius, y - radius], fill=fill, width=width)
    elif name == "plus":
        draw.line([x - radius, y, x + radius, y], fill=fill, width=width)
        draw.line([x, y - radius, x, y + radius], fill=fill, width=width)
    elif name == "disc":
        draw.ellipse(box, fill=fill)
    elif name == "diagonal":
        draw.line([x - radius, y + radius, x + radius, y - radius], fill=fill, width=width)
    else:
        dot = radius / 3
        for centre in (x - radius / 2, x + radius / 2):
            draw.ellipse([centre - dot, y - dot, centre + dot, y + dot], fill=fill)
    pixels = np.asarray(image, dtype=np.float32)
    pixels = pixels + rng.normal(0.0, noise, pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_zip(path: Path, count: int, *, size: int, rgb: bool) -> None:
    """A zip of `count` PNGs, one folder per label (what `dataset_import_zip` labels by)."""
    import io

    import numpy as np

    rng = np.random.default_rng(count)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for index in range(count):
            label = index % len(SHAPES)
            buffer = io.BytesIO()
            draw_shape(label, size, rng, rgb=rgb).save(buffer, "PNG", compress_level=1)
            archive.writestr(f"{SHAPES[label]}/{index:06d}.png", buffer.getvalue())


def _write_files(job: tuple[str, int, int, int, str]) -> None:
    folder, start, stop, size, image_format = job
    import numpy as np

    rng = np.random.default_rng(start)
    for index in range(start, stop):
        image = draw_shape(index % len(SHAPES), size, rng, rgb=True, noise=18.0 if size <= 64 else 8.0)
        if image_format == "png":
            image.save(Path(folder) / f"{index:06d}.png", "PNG", compress_level=1)
        else:
            image.save(Path(folder) / f"{index:06d}.jpg", "JPEG", quality=90)


def make_files(folder: Path, count: int, *, size: int, image_format: str) -> list[Path]:
    """`count` RGB images in `folder`, written by one process per core; the label is `index % 10`."""
    import multiprocessing

    folder.mkdir(parents=True, exist_ok=True)
    step = 1000
    jobs = [(str(folder), start, min(count, start + step), size, image_format) for start in range(0, count, step)]
    # Fork is safe: this process never imports TensorFlow.
    with multiprocessing.get_context("fork").Pool(os.cpu_count() or 1) as pool:
        pool.map(_write_files, jobs)
    return [folder / f"{index:06d}.{image_format}" for index in range(count)]


# Subprocesses ---------------------------------------------------------------------------------------------------


class MemorySampler(threading.Thread):
    """Reads /proc/<pid>/status every 50 ms: the last VmHWM and the peaks of RssAnon and RssFile (kB)."""

    FIELDS = ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem")

    def __init__(self, pid: int, started: float):
        super().__init__(daemon=True)
        self.pid = pid
        self.started = started
        self.stopping = threading.Event()
        self.peaks = dict.fromkeys(self.FIELDS, 0)
        self.peak_anon_at = 0.0
        self.samples: list[tuple[float, int]] = []

    def run(self) -> None:
        path = f"/proc/{self.pid}/status"
        while not self.stopping.is_set():
            try:
                text = Path(path).read_text()
            except OSError:
                return
            values = {}
            for line in text.splitlines():
                name, _, rest = line.partition(":")
                if name in self.FIELDS:
                    values[name] = int(rest.split()[0])
            if not values:
                return  # a zombie: the process has ended
            now = time.perf_counter() - self.started
            if values.get("RssAnon", 0) > self.peaks["RssAnon"]:
                self.peak_anon_at = now
            for name, value in values.items():
                self.peaks[name] = max(self.peaks[name], value)
            self.peaks["VmHWM"] = values.get("VmHWM", self.peaks["VmHWM"])
            self.samples.append((now, values.get("RssAnon", 0)))
            self.stopping.wait(0.05)


def run_stamped(command: list[str], env: dict) -> dict:
    """Run `command`, stamping each line of its output with the seconds since the start, sampling its memory."""
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    sampler = MemorySampler(process.pid, started)
    sampler.start()
    lines = [(time.perf_counter() - started, line.rstrip("\n")) for line in process.stdout]
    # wait4 rather than wait: the CPU time of the process and of the children it reaped (decode workers).
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = code = os.waitstatus_to_exitcode(status)
    sampler.stopping.set()
    sampler.join()
    if code != 0:
        tail = "\n".join(line for _, line in lines[-30:])
        raise SystemExit(f"{' '.join(command)} exited with {code}:\n{tail}")
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "lines": lines,
        "memory_mb": {name: value / 1024 for name, value in sampler.peaks.items()},
        "peak_rss_anon_at_s": sampler.peak_anon_at,
        "rss_anon_mb_by_second": _by_second(sampler.samples),
        "loadavg_1m": [load_before, os.getloadavg()[0]],
    }


def _by_second(samples: list[tuple[float, int]]) -> list[float]:
    peaks: dict[int, int] = {}
    for at, value in samples:
        peaks[int(at)] = max(peaks.get(int(at), 0), value)
    return [round(peaks.get(second, 0) / 1024, 1) for second in range(max(peaks, default=-1) + 1)]


def app_env(data_dir: Path) -> dict:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"DATABASE_URL", "KERASUI_DATABASE_NAME", "KERASUI_MEDIA_ROOT", "KERASUI_CACHE_DIR"}
    }
    env.update(
        KERASUI_DATA_DIR=str(data_dir),
        DJANGO_SETTINGS_MODULE="kerasui.settings",
        KERASUI_TRAINING_BACKEND="none",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONUNBUFFERED="1",
    )
    return env


def app_dataset(data_dir: Path, source: list[str], **options) -> dict:
    """A fresh data folder, migrated by `manage.py migrate`, holding one dataset; what setting it up took."""
    data_dir.mkdir(parents=True)
    env = app_env(data_dir)
    started = time.perf_counter()
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    migrate_s = time.perf_counter() - started
    command = [sys.executable, str(Path(__file__).resolve()), "setup", *source]
    for name, value in options.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    output = subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    return {**json.loads(output.strip().splitlines()[-1]), "migrate_s": migrate_s}


def app_train(data_dir: Path, dataset_id: int) -> dict:
    """`manage.py train DATASET_ID` in a subprocess: its wall time, memory, phases and the run's times."""
    result = run_stamped([sys.executable, "manage.py", "train", str(dataset_id)], app_env(data_dir))
    with sqlite3.connect(data_dir / "db.sqlite3") as database:
        row = database.execute(
            "SELECT id, status, started_at, finished_at, history, error FROM management_trainingrun "
            "WHERE dataset_id = ? ORDER BY id DESC LIMIT 1",
            (dataset_id,),
        ).fetchone()
    run_id, status, started_at, finished_at, history, error = row
    if status != "succeeded":
        raise SystemExit(f"run {run_id} {status}: {error}")
    result["run"] = run_id
    result["started_to_finished_s"] = (
        datetime.fromisoformat(finished_at) - datetime.fromisoformat(started_at)
    ).total_seconds()
    result["epoch_seconds"] = [row["seconds"] for row in json.loads(history)]
    result["phases"] = app_phases(result["lines"], result["wall_s"], result["epoch_seconds"])
    return result


def _first(lines: list[tuple[float, str]], pattern: str, after: float = -1.0) -> float | None:
    expression = re.compile(pattern)
    return next((at for at, line in lines if at > after and expression.search(line)), None)


def _epochs(lines: list[tuple[float, str]]) -> list[tuple[float, float]]:
    """(begin, end) of each epoch: Keras' "Epoch k/n" line and its verbose=2 summary line."""
    begins = [at for at, line in lines if re.match(r"Epoch \d+/\d+$", line)]
    ends = [at for at, line in lines if re.match(r"\d+/\d+ - \d+m?s - ", line)]
    if ends and not begins:
        # Keras prints no "Epoch 1/1" for a single epoch: it began after the line before its summary.
        begins = [max(at for at, _ in lines if at < ends[0])]
    return list(zip(begins, ends, strict=False))


def app_phases(lines: list[tuple[float, str]], wall: float, epoch_seconds: list[float]) -> dict:
    """Where the training process spent its time, from the arrival of its log lines."""
    claimed = _first(lines, r"^Run \d+ of dataset")
    prepared = _first(lines, r"^Prepared \d+ images")
    built = _first(lines, r'^Model: "')
    finished = _first(lines, r"^Run \d+ finished")
    epochs = _epochs(lines)
    reported = re.search(r"in ([0-9.]+) s$", next(line for _, line in lines if line.startswith("Prepared")))
    epoch_walls = [end - begin for begin, end in epochs]
    marks = {
        "start": 0.0,
        "claimed": claimed,
        "prepared": prepared,
        "built": built,
        "first epoch began": epochs[0][0],
        "last epoch ended": epochs[-1][1],
        "finished": finished,
    }
    return {
        "marks": marks,
        "startup_s": claimed,
        "prepare_s": prepared - claimed,
        "prepare_reported_s": float(reported[1]),
        "split_import_tf_build_s": built - prepared,
        "fit_setup_s": epochs[0][0] - built,
        "epochs_s": epochs[-1][1] - epochs[0][0],
        "epoch_walls_s": epoch_walls,
        "between_epochs_s": sum(epochs[i + 1][0] - epochs[i][1] for i in range(len(epochs) - 1)),
        # The history's seconds stop before the checkpoint is written; Keras' line comes after it.
        "checkpoints_s": sum(wall - seconds for wall, seconds in zip(epoch_walls, epoch_seconds, strict=False)),
        "evaluate_and_save_s": finished - epochs[-1][1],
        "exit_s": wall - finished,
    }


def raw_train(zip_path: Path, *, image_size: int, color_mode: str, model: str, epochs: int) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "raw", str(zip_path)]
    command += ["--image-size", str(image_size), "--color-mode", color_mode, "--model", model]
    command += ["--epochs", str(epochs), "--batch-size", "32"]
    result = run_stamped(command, app_env(Path(tempfile.gettempdir())))
    report = json.loads(next(line for _, line in reversed(result["lines"]) if line.startswith("{")))
    epochs_seen = _epochs(result["lines"])
    report["epochs_s"] = epochs_seen[-1][1] - epochs_seen[0][0]
    report["epoch_walls_s"] = [end - begin for begin, end in epochs_seen]
    return {**result, "script": report}


# Subcommands run in subprocesses --------------------------------------------------------------------------------


def setup_main(args: argparse.Namespace) -> None:
    """Create the dataset in the data folder of KERASUI_DATA_DIR; print its id and the import's time as JSON."""
    import django

    django.setup()
    from django.core.files import File
    from django.core.files.storage import default_storage

    from datasets.services import dataset_import_zip
    from management.files import media_is_local, media_scratch_path
    from management.models import DataSet, DataSetItem

    dataset = DataSet.objects.create(
        name=f"bench-{args.name}",
        process=MODEL_CODES[args.model],
        epochs=args.epochs,
        batch_size=32,
        image_size=args.image_size,
        color_mode=args.color_mode,
        validation_split=VALIDATION_SPLIT,
        verbose=2,
        early_stopping_patience=0,
        seed=SEED,
    )
    started = time.perf_counter()
    if args.zip:
        with open(args.zip, "rb") as file:
            added = dataset_import_zip(dataset=dataset, file=file).added
        how = "dataset_import_zip"
    else:
        # Items named the way item_image_path names them, over files hard-linked into media (on this
        # disk) or uploaded through the storage API (a bucket, AWS_STORAGE_BUCKET_NAME).
        items = []
        for index in range(args.count):
            name = f"datasets/{dataset.pk}/{uuid.uuid4().hex[:12]}-{index:06d}.png"
            source = Path(args.files) / f"{index:06d}.png"
            if media_is_local():
                os.link(source, media_scratch_path(name=name))
            else:
                with source.open("rb") as file:
                    default_storage.save(name, File(file))
            items.append(DataSetItem(dataset=dataset, label=SHAPES[index % len(SHAPES)], image=name))
        DataSetItem.objects.bulk_create(items, batch_size=1000)
        added = len(items)
        how = "bulk_create over hard-linked files" if media_is_local() else "bulk_create over uploaded files"
    print(json.dumps({"dataset": dataset.pk, "items": added, "import_s": time.perf_counter() - started, "how": how}))


def raw_main(args: argparse.Namespace) -> None:
    """The plain Keras script: decode the zip with Pillow into arrays, build the same layers, fit."""
    started = time.perf_counter()
    import keras
    import numpy as np
    import tensorflow as tf
    from keras import layers
    from PIL import Image

    imported = time.perf_counter()
    import io

    mode = "L" if args.color_mode == "grayscale" else "RGB"
    with zipfile.ZipFile(args.zip) as archive:
        entries = [info for info in archive.infolist() if not info.is_dir()]
        label_names = sorted({info.filename.split("/")[0] for info in entries})
        x = np.empty((len(entries), args.image_size, args.image_size, len(mode)), dtype=np.uint8)
        y = np.empty(len(entries), dtype=np.int32)
        for row, info in enumerate(entries):
            image = Image.open(io.BytesIO(archive.read(info))).convert(mode)
            image = image.resize((args.image_size, args.image_size), Image.Resampling.BILINEAR)
            x[row] = np.asarray(image, dtype=np.uint8).reshape(x.shape[1:])
            y[row] = label_names.index(info.filename.split("/")[0])
    order = np.random.default_rng(SEED).permutation(len(x))
    x, y = x[order], y[order]
    loaded = time.perf_counter()

    keras.utils.set_random_seed(SEED)
    model = keras.Sequential([keras.Input(shape=x.shape[1:]), layers.Rescaling(1.0 / 255)])
    if args.model == "small":
        model.add(layers.Conv2D(32, 3, activation="relu"))
        model.add(layers.MaxPooling2D())
        model.add(layers.Conv2D(64, 3, activation="relu"))
        model.add(layers.MaxPooling2D())
        model.add(layers.Flatten())
        model.add(layers.Dense(128, activation="relu"))
    else:
        model.add(layers.Conv2D(8, 3, strides=4, activation="relu"))
        model.add(layers.GlobalAveragePooling2D())
    model.add(layers.Dense(len(label_names), activation="softmax"))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.001),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    built = time.perf_counter()
    history = model.fit(
        x, y, epochs=args.epochs, batch_size=args.batch_size, validation_split=VALIDATION_SPLIT, verbose=2
    )
    fitted = time.perf_counter()
    report = {
        "images": len(x),
        "import_s": imported - started,
        "load_s": loaded - imported,
        "build_s": built - loaded,
        "fit_s": fitted - built,
        "val_accuracy": history.history["val_accuracy"][-1],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    print(json.dumps(report), flush=True)


# The measurements -----------------------------------------------------------------------------------------------


def measure_time(work: Path, counts: tuple[int, ...]) -> dict:
    results = {}
    for count in counts:
        print(f"(a) {count} images of 28×28: zip, plain Keras, app cold, app warm", flush=True)
        zip_path = work / f"shapes-{count}.zip"
        make_zip(zip_path, count, size=28, rgb=False)
        raw = raw_train(zip_path, image_size=28, color_mode="grayscale", model="small", epochs=5)
        data_dir = work / f"time-{count}"
        setup = app_dataset(
            data_dir, ["--zip", str(zip_path)], name=count, model="small", epochs=5, image_size=28,
            color_mode="grayscale",
        )  # fmt: skip
        cold = app_train(data_dir, setup["dataset"])
        warm = app_train(data_dir, setup["dataset"])
        results[str(count)] = {"raw": raw, "setup": setup, "cold": cold, "warm": warm}
    return results


def measure_memory(work: Path, counts: tuple[int, ...]) -> dict:
    started = time.perf_counter()
    files = work / "png64"
    make_files(files, max(counts), size=64, image_format="png")
    results = {"generate_s": time.perf_counter() - started}
    for count in counts:
        print(f"(b) {count} images of 64×64 RGB: memory of manage.py train", flush=True)
        data_dir = work / f"memory-{count}"
        setup = app_dataset(
            data_dir, ["--files", str(files), "--count", str(count)], name=count, model="tiny", epochs=1,
            image_size=64, color_mode="rgb",
        )  # fmt: skip
        results[str(count)] = {"setup": setup, "train": app_train(data_dir, setup["dataset"])}
        shutil.rmtree(data_dir / "cache", ignore_errors=True)
    return results


def plain_pillow_loop(paths: list[Path], image_size: int):
    import numpy as np
    from PIL import Image

    rows = np.empty((len(paths), image_size, image_size, 3), dtype=np.uint8)
    for row, path in enumerate(paths):
        rows[row] = np.asarray(Image.open(path).convert("RGB").resize((image_size, image_size)))
    return rows


def measure_decoding(work: Path, png_count: int, jpeg_count: int) -> dict:
    from ml.cache import build_image_cache

    workers = int(os.environ.get("KERASUI_PREPROCESS_WORKERS") or os.cpu_count() or 1)
    jpegs = make_files(work / "jpeg256", jpeg_count, size=256, image_format="jpg")
    pngs = [work / "png64" / f"{index:06d}.png" for index in range(png_count)]
    results = {"workers": workers}
    for name, paths in (("png_64", pngs), ("jpeg_256_to_64", jpegs)):
        print(f"(c) decoding {len(paths)} {name}: plain Pillow loop, build_image_cache", flush=True)
        started = time.perf_counter()
        plain = plain_pillow_loop(paths, 64)
        plain_s = time.perf_counter() - started
        folder = work / f"decode-cache-{name}"
        started = time.perf_counter()
        cached = build_image_cache(
            paths, folder=folder, key=name, image_size=64, color_mode="rgb", workers=workers, max_pixels=40_000_000
        )
        cache_s = time.perf_counter() - started
        assert cached.shape == plain.shape
        results[name] = {
            "images": len(paths),
            "plain_per_s": len(paths) / plain_s,
            "cache_per_s": len(paths) / cache_s,
            "plain_s": plain_s,
            "cache_s": cache_s,
            "mean_abs_difference": float(abs(cached.astype("int16") - plain.astype("int16")).mean()),
        }
        del cached
        shutil.rmtree(folder)
    return results


# The report -----------------------------------------------------------------------------------------------------


def goal_row(rows: list, label: str, value: float, unit: str = "", goal: str = "", met: bool | None = None) -> None:
    rows.append((label, f"{value:.2f}{unit}", goal, "-" if met is None else ("yes" if met else "NO")))


PHASES = [
    ("start", "startup_s"),
    ("prep", "prepare_s"),
    ("tf+bld", "split_import_tf_build_s"),
    ("fitset", "fit_setup_s"),
    ("epochs", "epochs_s"),
    ("ckpts", "checkpoints_s"),
    ("eval+sv", "evaluate_and_save_s"),
    ("exit", "exit_s"),
]


def phase_row(label: str, phases: dict, wall: float) -> str:
    figures = " ".join(f"{phases[key]:7.2f}" if key in phases else f"{'':7}" for _, key in PHASES)
    return f"{label:24} {figures} {wall:7.2f}"


def report(results: dict) -> None:
    rows: list = []
    for index, (count, part) in enumerate(results["time"].items()):
        raw_wall = part["raw"]["wall_s"]
        limit = TIME_GOALS[min(index, 1)]
        goal_row(rows, f"(a) {count} 28×28: plain Keras script wall", raw_wall, " s")
        goal_row(rows, f"(a) {count}: plain script, fit alone", part["raw"]["script"]["fit_s"], " s")
        goal_row(rows, f"(a) {count}: plain script, CPU time", part["raw"]["cpu_s"], " s")
        for state in ("cold", "warm"):
            run = part[state]
            goal_row(rows, f"(a) {count} app {state}: started→finished", run["started_to_finished_s"], " s")
            goal_row(rows, f"(a) {count} app {state}: train subprocess wall", run["wall_s"], " s")
            goal_row(rows, f"(a) {count} app {state}: train subprocess CPU time", run["cpu_s"], " s")
            for name, value in (("started→finished", run["started_to_finished_s"]), ("wall", run["wall_s"])):
                ratio = value / raw_wall
                goal_row(
                    rows, f"(a) {count} app {state}: {name} / script wall", ratio, "×", f"≤ {limit}", ratio <= limit
                )
    memory = results["memory"]
    counts = [key for key in memory if key.isdigit()]
    for count in counts:
        peaks = memory[count]["train"]["memory_mb"]
        goal_row(rows, f"(b) {count} 64×64 RGB: VmHWM", peaks["VmHWM"], " MB")
        goal_row(rows, f"(b) {count}: max RssAnon", peaks["RssAnon"], " MB")
        goal_row(rows, f"(b) {count}: max RssFile", peaks["RssFile"], " MB")
    smallest, largest = memory[counts[0]]["train"]["memory_mb"], memory[counts[-1]]["train"]["memory_mb"]
    for name in ("RssAnon", "VmHWM"):
        ratio = largest[name] / smallest[name]
        goal_row(rows, f"(b) {name} {counts[-1]} / {counts[0]}", ratio, "×", f"≤ {MEMORY_GOAL}", ratio <= MEMORY_GOAL)
    decoding = results["decoding"]
    for name in ("png_64", "jpeg_256_to_64"):
        part = decoding[name]
        goal_row(rows, f"(c) {part['images']} {name}: plain Pillow loop", part["plain_per_s"], " img/s")
        goal_row(rows, f"(c) {part['images']} {name}: build_image_cache", part["cache_per_s"], " img/s")
        ratio = part["cache_per_s"] / part["plain_per_s"]
        goal_row(rows, f"(c) {name}: cache / plain", ratio, "×", f"≥ {DECODE_GOAL}", ratio >= DECODE_GOAL)
    results["table"] = [dict(zip(("figure", "value", "goal", "met"), row, strict=True)) for row in rows]

    print(f"\n{'figure':52} {'value':>16} {'goal':>8} {'met':>4}")
    for label, value, goal, met in rows:
        print(f"{label:52} {value:>16} {goal:>8} {met:>4}")

    print(f"\n{'where the time went (s)':24} " + " ".join(f"{name:>7}" for name, _ in PHASES) + f" {'wall':>7}")
    for count, part in results["time"].items():
        script = part["raw"]["script"]
        plain = {"prepare_s": script["load_s"], "split_import_tf_build_s": script["import_s"] + script["build_s"]}
        print(phase_row(f"{count} plain script", {**plain, "epochs_s": script["epochs_s"]}, part["raw"]["wall_s"]))
        for state in ("cold", "warm"):
            print(phase_row(f"{count} app {state}", part[state]["phases"], part[state]["wall_s"]))
        print("  epoch walls, plain script: " + " ".join(f"{value:.2f}" for value in script["epoch_walls_s"]))
        for state in ("cold", "warm"):
            walls = " ".join(f"{value:.2f}" for value in part[state]["phases"]["epoch_walls_s"])
            seconds = " ".join(f"{value:.2f}" for value in part[state]["epoch_seconds"])
            print(f"  epoch walls, app {state}: {walls} (history seconds, before checkpoints: {seconds})")
    for count in counts:
        train = memory[count]["train"]
        print(phase_row(f"{count} memory run", train["phases"], train["wall_s"]))
        peak = train["peak_rss_anon_at_s"]
        during = max((at, name) for name, at in train["phases"]["marks"].items() if at <= peak)[1]
        print(f"  RssAnon peaks at {peak:.1f} s, after '{during}'")


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    memory = next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(int(memory) / 1024**2, 1),
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder of images and data")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL

    work = Path(tempfile.mkdtemp(prefix="kerasui-bench-training-"))
    started = time.perf_counter()
    results: dict = {"machine": machine(), "quick": args.quick, "sizes": sizes}
    try:
        results["time"] = measure_time(work, sizes["time_counts"])
        results["memory"] = measure_memory(work, sizes["memory_counts"])
        results["decoding"] = measure_decoding(work, sizes["png"], sizes["jpeg"])
    finally:
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["total_s"] = time.perf_counter() - started
    first = next(iter(results["time"].values()))["raw"]["script"]
    results["machine"].update(tensorflow=first["tensorflow"], keras=first["keras"])
    report(results)
    print(f"\nwhole benchmark: {results['total_s']:.0f} s on {results['machine']}")
    print(f"written: {write_results('training', results)}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in {"setup", "raw"}:
        sub = argparse.ArgumentParser()
        sub.add_argument("command")
        sub.add_argument("zip", nargs="?")
        sub.add_argument("--zip", dest="zip_option")
        sub.add_argument("--files")
        sub.add_argument("--count", type=int, default=0)
        sub.add_argument("--name", default="0")
        sub.add_argument("--model", choices=sorted(MODEL_CODES), default="small")
        sub.add_argument("--epochs", type=int, default=5)
        sub.add_argument("--batch-size", type=int, default=32)
        sub.add_argument("--image-size", type=int, default=28)
        sub.add_argument("--color-mode", default="grayscale")
        parsed = sub.parse_args()
        parsed.zip = parsed.zip or parsed.zip_option
        (setup_main if parsed.command == "setup" else raw_main)(parsed)
    else:
        main()
