"""Training queue benchmark: enqueue-to-start latency (thread runner, Celery) and 4 runs on 1 and 2 workers.

    .venv/bin/python -m bench.training_queue [--runs 4] [--epochs 30] [--latency-samples 5]

Needs Redis at CELERY_BROKER_URL (default redis://127.0.0.1:6379/0); uses DATABASE_URL when set (a
scratch database: the bench writes datasets and runs into it), else SQLite in a fresh data folder.
One run, one machine:
  - enqueue to start: from a run's creation (its transaction commits, the runner is told) to its
    claim by the runner (status running, `started_at`), for the thread runner in this process and
    for a Celery worker over Redis; each run is cancelled as soon as it starts;
  - `--runs` small runs (16 px colour images, `--epochs` epochs, one TensorFlow thread each, so
    each uses one core) enqueued at once, from the first enqueue to the last run's end, with one
    and with two Celery workers (`celery -A kerasui worker -Q training -c 1`).
Prints a table and writes bench/results/training_queue.json.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from bench.common import write_results

ROOT = Path(__file__).resolve().parent.parent


# Each training process uses one core: the workers, not TensorFlow, share out the machine.
ONE_CORE = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
COLOURS = {"blue": (30, 60, 220), "green": (40, 200, 50), "red": (220, 40, 40)}


def colour_zip(per_label: int) -> bytes:
    from PIL import Image

    generator = random.Random(0)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label, base in COLOURS.items():
            for n in range(per_label):
                image = Image.new("RGB", (16, 16))
                image.putdata(
                    [tuple(max(0, min(255, c + generator.randint(-40, 40))) for c in base) for _ in range(256)]
                )
                png = io.BytesIO()
                image.save(png, format="PNG")
                archive.writestr(f"{label}/{n}.png", png.getvalue())
    return buffer.getvalue()


def wait(predicate, timeout: float, what: str, interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"bench: not within {timeout} s: {what}")


class Workers:
    def __init__(self, environment: dict[str, str], folder: Path) -> None:
        self.environment = environment
        self.folder = folder
        self.processes: list[subprocess.Popen] = []

    def start(self, name: str) -> None:
        log_path = self.folder / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "kerasui", "worker", "-Q", "training", "-c", "1"]
                + ["-n", f"{name}@%h", "-l", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"],
                cwd=ROOT,
                env=self.environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        wait(lambda: " ready." in log_path.read_text(errors="replace"), 60, f"worker {name} ready")

    def stop(self) -> None:
        for process in self.processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        self.processes = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4, help="small runs enqueued at once")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of each small run")
    parser.add_argument("--latency-samples", type=int, default=5, help="runs per enqueue-to-start measurement")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="kerasui-bench-queue-"))
    os.environ.update({"KERASUI_DATA_DIR": str(data_dir), "KERASUI_TRAINING_BACKEND": "none"})
    os.environ.update({"KERASUI_LOG_LEVEL": "warning", "KERASUI_PREPROCESS_WORKERS": "1", **ONE_CORE})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kerasui.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from datasets.models import DataSet
    from datasets.services import dataset_import_zip
    from jobs import runner as runners
    from kerasui.celery import app
    from training.models import TrainingRun
    from training.services import training_run_cancel, training_run_create

    call_command("migrate", verbosity=0)
    images = colour_zip(20)

    def datasets(prefix: str, count: int) -> list[DataSet]:
        made = []
        for n in range(count):
            dataset = DataSet.objects.create(
                name=f"{prefix} {n} {time.time_ns()}",
                image_size=16,
                epochs=args.epochs,
                batch_size=8,
                early_stopping_patience=0,
            )
            dataset_import_zip(dataset=dataset, file=io.BytesIO(images))
            made.append(dataset)
        return made

    def use(backend: str) -> None:
        runners.reset()
        settings.KERASUI_TRAINING_BACKEND = backend

    def enqueue_to_start(backend: str) -> list[float]:
        use(backend)
        (dataset,) = datasets(backend, 1)
        latencies = []
        for _ in range(args.latency_samples):
            run = training_run_create(dataset=dataset)  # autocommit: the runner is told at once
            run = wait(
                lambda run=run: TrainingRun.objects.filter(pk=run.pk, started_at__isnull=False).first(),
                120,
                f"run {run.pk} starts ({backend})",
            )
            latencies.append((run.started_at - run.created_at).total_seconds())
            training_run_cancel(run=run)
            # The next run of the dataset may be queued once this one's process has ended it.
            wait(lambda run=run: not TrainingRun.objects.get(pk=run.pk).is_active, 60, "cancelled")
            time.sleep(1.5)
        return latencies

    def batch(backend: str) -> dict:
        use(backend)
        runs = []
        started = time.perf_counter()
        for dataset in datasets(f"batch-{backend}", args.runs):
            runs.append(training_run_create(dataset=dataset).pk)
        wait(
            lambda: not TrainingRun.objects.filter(pk__in=runs, status__in=TrainingRun.ACTIVE).exists(),
            1800,
            "the runs end",
            interval=0.5,  # the two cores are the workers'
        )
        seconds = time.perf_counter() - started
        ended = list(TrainingRun.objects.filter(pk__in=runs))
        failed = [f"run {run.pk}: {run.status} {run.error}" for run in ended if run.status != "succeeded"]
        if failed:
            raise SystemExit("bench: " + "; ".join(failed))
        return {"seconds": seconds, "per_run": [run.duration_seconds for run in ended]}

    environment = {**os.environ, "KERASUI_TRAINING_BACKEND": "none", "PYTHONUNBUFFERED": "1"}
    workers = Workers(environment, data_dir)
    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge("training")
    results: dict = {"config": {"runs": args.runs, "epochs": args.epochs, "cores": os.cpu_count()}}
    try:
        results["thread_enqueue_to_start"] = enqueue_to_start("thread")
        workers.start("bench1")
        results["celery_enqueue_to_start"] = enqueue_to_start("celery")
        results["celery_1_worker"] = batch("celery")
        workers.start("bench2")
        results["celery_2_workers"] = batch("celery")
    finally:
        runners.get_runner().stop()
        workers.stop()

    out = write_results("training_queue", results)

    def ms(values: list[float]) -> str:
        ordered = sorted(values)
        return f"median {1000 * ordered[len(ordered) // 2]:.1f} ms, max {1000 * ordered[-1]:.1f} ms"

    print(f"\n{'what':<48} {'result':>40}")
    print(f"{'enqueue to start, thread runner':<48} {ms(results['thread_enqueue_to_start']):>40}")
    print(f"{'enqueue to start, Celery worker over Redis':<48} {ms(results['celery_enqueue_to_start']):>40}")
    one, two = results["celery_1_worker"]["seconds"], results["celery_2_workers"]["seconds"]
    print(f"{f'{args.runs} runs x {args.epochs} epochs, 1 Celery worker':<48} {f'{one:.1f} s':>40}")
    print(f"{f'{args.runs} runs x {args.epochs} epochs, 2 Celery workers':<48} {f'{two:.1f} s':>40}")
    print(f"{'speed-up, 2 workers over 1':<48} {f'{one / two:.2f}x':>40}")
    print(f"\nwrote {out} (data folder {data_dir})")


if __name__ == "__main__":
    main()
