"""A health check at scale: its time and peak memory on N real image files, and where the memory goes (issue 24).

    .venv/bin/python -m bench.health_scale [--images 10000] [--data-dir DIR] [--profile] [--tag NAME]

Needs Debian's Fashion-MNIST (`/usr/share/datasets/fashion-mnist`). A data folder (made once, reused with
--data-dir: `--images` Fashion-MNIST training images written as 28 px grayscale PNG files with their rows,
counted as the datasets service counts them, and a current run whose splits hold every image, 80 %
train and 20 % validation, so that leaks are looked for) in seconds instead of bench.scale's import
through the server. Then `manage.py health ID --json` in its own process: wall time, peak memory (its
own rusage from wait4, which counts the memory-mapped caches' pages it touched), the report's phase
times, and a digest of its findings (duplicate groups, leaks, suspects, outliers) to compare two
versions of the code on the same data. With --profile, the same check runs in a child process of this
bench that samples its own /proc/self/status (VmRSS, RssAnon, RssFile) every 50 ms and tracemalloc's
peak (NumPy's arrays and Python's objects), per phase, with TensorFlow's baseline (imported, the
backbone built) measured apart. Results go to bench/results/health_scale.json under --tag.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from bench.common import ROOT, write_results

WEIGHTS = Path(tempfile.gettempdir()) / "kerasui-bench-weights"


def environment(data_dir: Path) -> dict:
    return {
        **os.environ,
        "KERASUI_DATA_DIR": str(data_dir),
        "KERASUI_WEIGHTS_DIR": str(WEIGHTS),
        "KERASUI_WEIGHTS_BASE_URL": "",
        "KERASUI_TRAINING_BACKEND": "none",
        "DJANGO_SETTINGS_MODULE": "kerasui.settings",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def django_on(data_dir: Path) -> None:
    os.environ.update({key: value for key, value in environment(data_dir).items() if key.startswith(("KERASUI", "DJ"))})
    import django

    django.setup()


def build(data_dir: Path, count: int) -> int:
    """The data folder's dataset: `count` image files and rows, and a current run with splits."""
    import numpy as np
    from django.conf import settings
    from django.core.management import call_command
    from PIL import Image

    from bench.scale import NAMES, fashion_train
    from datasets.models import DataSet, DataSetItem
    from datasets.services import label_counts_add
    from tests.runs import store_results
    from training.models import TrainingRun
    from training.services import training_run_create

    call_command("migrate", verbosity=0)
    images, labels = fashion_train(count)
    dataset = DataSet.objects.create(name="Fashion-MNIST", image_size=28, color_mode="grayscale", epochs=3, seed=1)
    folder = Path(settings.MEDIA_ROOT) / "datasets" / str(dataset.pk)
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for number, (image, label) in enumerate(zip(images, labels, strict=True)):
        name = f"datasets/{dataset.pk}/{number:06d}.png"
        Image.fromarray(image).save(Path(settings.MEDIA_ROOT) / name, format="PNG")
        items.append(DataSetItem(dataset=dataset, label=NAMES[label], image=name))
    DataSetItem.objects.bulk_create(items, batch_size=2000)
    label_counts_add(changes=Counter((dataset.pk, item.label) for item in items))
    ids = list(dataset.items.order_by("id").values_list("pk", flat=True))
    held_out = set(np.random.default_rng(1).choice(len(ids), len(ids) // 5, replace=False).tolist())
    run = training_run_create(dataset=dataset, enqueue=False)
    store_results(
        run,
        splits={
            "train": [ids[row] for row in range(len(ids)) if row not in held_out],
            "validation": [ids[row] for row in sorted(held_out)],
            "test": [],
        },
        status=TrainingRun.Status.SUCCEEDED,
        progress=1.0,
        labels=sorted(NAMES),
    )
    dataset.current_run_id = run.pk
    dataset.save(update_fields=["current_run"])
    (data_dir / "bench.json").write_text(json.dumps({"dataset": dataset.pk, "images": count}))
    return dataset.pk


def findings(report: dict) -> dict:
    """What a check found, in a form two versions of the code can be compared by."""

    def digest(value) -> str:
        return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]

    duplicates = sorted(sorted(group["items"]) for group in report["duplicates"])
    leaks = sorted(sorted(group["items"]) for group in report["leaks"]["groups"])
    suspects = [issue["item"] for issue in report["label_issues"]]
    outliers = [outlier["item"] for outlier in report["outliers"]]
    return {
        "duplicate_groups": len(duplicates),
        "duplicate_images": sum(len(group) for group in duplicates),
        "duplicates_digest": digest(duplicates),
        "leak_groups": len(leaks),
        "leaks_digest": digest(leaks),
        "suspects": len(suspects),
        "suspects_digest": digest(sorted(suspects)),
        "outliers": len(outliers),
        "outliers_digest": digest(outliers),
        "outlier_items": outliers,
        "outlier_scores": [outlier["score"] for outlier in report["outliers"]],
        "suspect_items": suspects,
    }


# --profile: the check in this bench's child, sampled.


class Sampler(threading.Thread):
    """Samples /proc/self/status every 50 ms: the peak VmRSS, RssAnon and RssFile of each phase."""

    def __init__(self):
        super().__init__(daemon=True)
        self.phase = "start"
        self.peaks: dict[str, dict[str, int]] = {}
        self.stopped = threading.Event()

    @staticmethod
    def status() -> dict[str, int]:
        fields = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                fields[name] = int(value.split()[0]) // 1024
        return fields

    def sample(self) -> None:
        now = self.status()
        peak = self.peaks.setdefault(self.phase, {})
        for name, value in now.items():
            peak[name] = max(peak.get(name, 0), value)

    def run(self) -> None:
        while not self.stopped.wait(0.05):
            self.sample()


def profile_child(data_dir: Path, dataset: int) -> None:
    import tracemalloc

    django_on(data_dir)
    sampler = Sampler()
    sampler.start()
    from django.conf import settings

    baseline = {"django": Sampler.status()}
    import tensorflow  # noqa: F401

    from health.job import BACKBONE, health_check_compute
    from health.models import HealthCheck

    baseline["tensorflow imported"] = Sampler.status()
    from training import pretrained

    pretrained.backbone_build(name=BACKBONE, image_size=settings.KERASUI_HEALTH_IMAGE_SIZE)
    baseline["backbone built"] = Sampler.status()
    tracemalloc.start()
    traced: dict[str, int] = {}

    def progress(phase: str, fraction: float = 0.0) -> bool:
        if phase != sampler.phase:
            sampler.sample()
            traced[sampler.phase] = max(traced.get(sampler.phase, 0), tracemalloc.get_traced_memory()[1] >> 20)
            tracemalloc.reset_peak()
            sampler.phase = phase
        return True

    check = HealthCheck.objects.create(dataset_id=dataset, status=HealthCheck.Status.RUNNING)
    started = time.monotonic()
    report = health_check_compute(check=check, progress=progress)
    seconds = time.monotonic() - started
    progress("end")
    sampler.stopped.set()
    HealthCheck.objects.filter(pk=check.pk).update(status=HealthCheck.Status.CANCELLED)
    print(
        json.dumps(
            {
                "seconds": round(seconds, 1),
                "baseline_mb": baseline,
                "phase_peaks_mb": sampler.peaks,
                "tracemalloc_peak_mb": traced,
                "phase_seconds": report["seconds"],
                "findings": findings(report),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--data-dir", help="a data folder this bench made earlier (its images are reused)")
    parser.add_argument("--profile", action="store_true", help="sample memory per phase in a child process")
    parser.add_argument("--profile-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--warm", action="store_true", help="keep the decoded images and features of the last check")
    parser.add_argument("--tag", default="now", help="the name of this measurement in the results")
    args = parser.parse_args()
    if args.profile_child:
        data_dir = Path(args.data_dir)
        profile_child(data_dir, json.loads((data_dir / "bench.json").read_text())["dataset"])
        return

    if args.data_dir:
        data_dir = Path(args.data_dir)
        dataset = json.loads((data_dir / "bench.json").read_text())["dataset"]
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="kerasui-health-scale-"))
        django_on(data_dir)
        started = time.monotonic()
        dataset = build(data_dir, args.images)
        print(f"data folder {data_dir}: {args.images} images in {time.monotonic() - started:.0f} s", flush=True)
    images = json.loads((data_dir / "bench.json").read_text())["images"]
    if not (WEIGHTS / "efficientnet_lite0").exists() and not any(WEIGHTS.glob("*")):
        subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), "weights", "fetch", "efficientnet_lite0"],
            cwd=ROOT,
            env=environment(data_dir),
            check=True,
        )
    if not args.warm:
        # A cold check: nothing decoded, no features cached (the caches live in the data folder).
        shutil.rmtree(data_dir / "cache", ignore_errors=True)
    load = os.getloadavg()
    if args.profile:
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.health_scale", "--profile-child", "--data-dir", str(data_dir)],
            cwd=ROOT,
            env=environment(data_dir),
            stdout=subprocess.PIPE,
        )
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit("the profiled check failed")
        result = json.loads(output.decode().strip().splitlines()[-1])
        result["process_seconds"] = round(time.monotonic() - started, 1)
        result["peak_mb"] = round(usage.ru_maxrss / 1024)
    else:
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "health", str(dataset), "--json"],
            cwd=ROOT,
            env=environment(data_dir),
            stdout=subprocess.PIPE,
        )
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit("manage.py health failed")
        text = output.decode()
        report = json.loads(text[text.index("{") :])
        result = {
            "seconds": round(time.monotonic() - started, 1),
            "peak_mb": round(usage.ru_maxrss / 1024),
            "phase_seconds": report["seconds"],
            "findings": findings(report),
        }
    result.update(
        {
            "images": images,
            "data_dir": str(data_dir),
            "load_before": [round(value, 1) for value in load],
            "load_after": [round(value, 1) for value in os.getloadavg()],
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared with other work",
        }
    )
    out = ROOT / "bench" / "results" / "health_scale.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    results[f"{args.tag} {images}"] = result
    write_results("health_scale", results)
    shown = {key: value for key, value in result.items() if key != "findings"}
    shown["findings"] = {
        key: value for key, value in result["findings"].items() if not key.endswith(("items", "scores"))
    }
    print(json.dumps(shown, indent=1))


if __name__ == "__main__":
    main()
