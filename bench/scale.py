"""Scale benchmark: a dataset of 60,000 images on the project's gunicorn configuration (issue 24).

    .venv/bin/python -m bench.scale [--images 60000] [--epochs 3] [--no-health] [--port 8624]
        [--architecture auto|code] [--auto-seconds 180]

Needs Fashion-MNIST from Debian: `apt-get install dataset-fashion-mnist` (files under
/usr/share/datasets/fashion-mnist, see `dpkg -L dataset-fashion-mnist`); without it the bench says so
and stops. One run, on a fresh data folder (SQLite), gunicorn started with gunicorn.conf.py:
  - the import: the training images (28 px grayscale PNGs, one folder per class) as one zip through
    POST /api/dataset/ID/upload/ (202: the zip stored) and its import job (`manage.py job import ID`, its
    own process, as the runner starts it), timed, while a probe asks GET /api/health/ every 0.1 s (p50/p99);
  - every admin page and API list and detail of the dataset, its images and its runs, before and after a
    training run (each three times: the worst and the median);
  - a training run (`manage.py train ID`: the dataset's default starting point, Automatic, or --architecture;
    the model code at 28 px, --epochs) and a health check
    (`manage.py health ID`), each in its own process: wall time and peak memory (the process's own
    rusage, from wait4);
  - the web workers' peak memory (VmHWM) and whether TensorFlow was loaded into them.
Prints a table and writes bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import ROOT, database_with_token, percentile, wait_for, write_results

FASHION = Path("/usr/share/datasets/fashion-mnist")
NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def fashion_train(count: int) -> tuple[np.ndarray, np.ndarray]:
    import gzip

    if not (FASHION / "train-images-idx3-ubyte.gz").is_file():
        raise SystemExit(
            "bench.scale needs Fashion-MNIST: `apt-get install dataset-fashion-mnist` (Debian/Ubuntu) puts it in "
            f"{FASHION}. Skipped."
        )
    with gzip.open(FASHION / "train-images-idx3-ubyte.gz") as file:
        images = np.frombuffer(file.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION / "train-labels-idx1-ubyte.gz") as file:
        labels = np.frombuffer(file.read(), np.uint8, offset=8)
    return images[:count], labels[:count]


def zip_of(images: np.ndarray, labels: np.ndarray) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as writer:
        for number, (image, label) in enumerate(zip(images, labels, strict=True)):
            buffer = io.BytesIO()
            Image.fromarray(image, "L").save(buffer, "PNG")
            writer.writestr(f"{NAMES[label]}/{number:05d}.png", buffer.getvalue())
    return archive.getvalue()


class Server:
    """Requests to the gunicorn under test, as the API's token holder or as the admin's session."""

    def __init__(self, port: int, token: str, session: str) -> None:
        self.port, self.token, self.session = port, token, session

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout=120):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        auth = {"Authorization": f"Bearer {self.token}"} if path.startswith("/api/") else {}
        cookie = {"Cookie": f"sessionid={self.session}"} if path.startswith("/admin/") else {}
        started = time.monotonic()
        try:
            connection.request(method, path, body=body, headers={**auth, **cookie, **(headers or {})})
            response = connection.getresponse()
            data = response.read()
            return response.status, time.monotonic() - started, data
        except (OSError, http.client.HTTPException) as error:
            return f"error: {error}", time.monotonic() - started, b""
        finally:
            connection.close()


def admin_session(username: str) -> str:
    """A signed-in admin session for `username`, made in the database as a login would make it."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore

    user = User.objects.get(username=username)
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return session.session_key


def pages(dataset: int, run: int | None) -> dict[str, str]:
    urls = {
        "admin home": "/admin/",
        "admin dataset list": "/admin/management/dataset/",
        "admin dataset page": f"/admin/management/dataset/{dataset}/change/",
        "admin image list": f"/admin/management/datasetitem/?dataset__id__exact={dataset}",
        "admin image list, one label": f"/admin/management/datasetitem/?dataset__id__exact={dataset}&label=bag",
        "admin image list, page 500": f"/admin/management/datasetitem/?dataset__id__exact={dataset}&p=500",
        "admin run list": "/admin/management/trainingrun/",
        "admin health page": f"/admin/management/dataset/{dataset}/health/",
        "admin labelling page": f"/admin/management/dataset/{dataset}/label/",
        "admin Test page": "/admin/management/dataset/test/",
        "API dataset list": "/api/dataset/",
        "API dataset": f"/api/dataset/{dataset}/",
        "API image list": f"/api/datasetitem/?dataset={dataset}",
        "API image list, page 500": f"/api/datasetitem/?dataset={dataset}&page=500",
        "API run list": "/api/trainingrun/",
        "API dataset health": f"/api/dataset/{dataset}/health/",
        "API suggestions": f"/api/dataset/{dataset}/suggestions/",
    }
    if run is not None:
        urls |= {
            "admin run page": f"/admin/management/trainingrun/{run}/change/",
            # The fullest cell: the first label's images predicted right (60 a page).
            "admin confusion cell": f"/admin/management/trainingrun/{run}/confusion/validation/0/0/",
            "API run": f"/api/trainingrun/{run}/",
        }
    return urls


def measure_pages(server: Server, urls: dict[str, str], repeat: int = 3) -> dict[str, dict]:
    rows = {}
    for name, url in urls.items():
        times, statuses, size = [], set(), 0
        for _ in range(repeat):
            status, seconds, data = server.request("GET", url, timeout=120)
            times.append(seconds)
            statuses.add(status)
            size = len(data)
        rows[name] = {
            "url": url,
            "status": sorted(map(str, statuses)),
            "median_s": round(percentile(times, 50), 3),
            "worst_s": round(max(times), 3),
            "bytes": size,
        }
    return rows


def probe(server: Server, stop: threading.Event, latencies: list[float]) -> None:
    while not stop.is_set():
        status, seconds, _ = server.request("GET", "/api/health/", timeout=30)
        latencies.append(seconds if status == 200 else float("inf"))
        stop.wait(0.1)


def run_process(environment: dict, *args: str) -> dict:
    """manage.py in its own process: its wall time, its own peak memory (wait4's rusage) and its exit."""
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "seconds": round(time.monotonic() - started, 1),
        "peak_mb": round(usage.ru_maxrss / 1024),
        "exit": process.returncode,
        "tail": output.decode(errors="replace")[-1500:],
    }


def workers_of(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


def worker_memory(master: int) -> list[dict]:
    rows = []
    for pid in workers_of(master):
        status = Path(f"/proc/{pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        maps = Path(f"/proc/{pid}/maps").read_text()
        rows.append(
            {
                "pid": pid,
                "peak_mb": round(int(fields["VmHWM"].split()[0]) / 1024),
                "now_mb": round(int(fields["VmRSS"].split()[0]) / 1024),
                "tensorflow": "libtensorflow" in maps,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--architecture",
        default="auto",
        help="the dataset's starting point: auto (Automatic, the default of a new dataset) or code",
    )
    parser.add_argument("--auto-seconds", type=int, default=180, help="Automatic's time budget (the dataset's)")
    parser.add_argument("--no-health", action="store_true", help="leave out the health check (minutes)")
    parser.add_argument("--import-only", action="store_true", help="stop after the import (its speed alone)")
    parser.add_argument("--port", type=int, default=8624)
    parser.add_argument("--keep", action="store_true", help="keep the dataset (by default the bench deletes it last)")
    parser.add_argument("--markdown", action="store_true", help="print the last results as the README's table")
    parser.add_argument(
        "--pages-again",
        metavar="DATA_DIR",
        help="measure the pages again on the data folder of an earlier run (after a fix), into its results",
    )
    args = parser.parse_args()
    if args.markdown:
        markdown(json.loads((ROOT / "bench" / "results" / "scale.json").read_text()))
        return
    if args.pages_again:
        pages_again(Path(args.pages_again), args.port)
        return

    images, labels = fashion_train(args.images)
    data_dir = Path(tempfile.mkdtemp(prefix="kerasui-scale-"))
    token = database_with_token(data_dir, "scale")
    session = admin_session("scale")
    from datasets.models import DataSet

    dataset = DataSet.objects.create(
        name="Fashion-MNIST",
        image_size=28,
        color_mode="grayscale",
        epochs=args.epochs,
        batch_size=128,
        seed=1,
        architecture=args.architecture,
        auto_seconds=args.auto_seconds,
    ).pk
    started = time.monotonic()
    archive = zip_of(images, labels)
    zip_seconds = time.monotonic() - started

    environment = {
        **os.environ,
        "KERASUI_DATA_DIR": str(data_dir),
        "KERASUI_BIND": f"127.0.0.1:{args.port}",
        "KERASUI_TRAINING_BACKEND": "none",
        "KERASUI_THROTTLE_API": "10000000/min",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    log = (data_dir / "gunicorn.log").open("wb")
    gunicorn = Path(sys.executable).parent / "gunicorn"
    master = subprocess.Popen(
        [str(gunicorn), "-c", "gunicorn.conf.py", "kerasui.wsgi"],
        cwd=ROOT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, shared with other work",
        "images": len(images),
        "zip_bytes": len(archive),
        "zip_build_seconds": round(zip_seconds, 1),
    }
    try:
        wait_for(args.port)
        server = Server(args.port, token, session)

        latencies: list[float] = []
        stop = threading.Event()
        prober = threading.Thread(target=probe, args=(server, stop, latencies), daemon=True)
        prober.start()
        boundary = "kerasui-scale-boundary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="fashion.zip"\r\n'
                "Content-Type: application/zip\r\n\r\n"
            ).encode()
            + archive
            + f"\r\n--{boundary}--\r\n".encode()
        )
        status, seconds, answer = server.request(
            "POST",
            f"/api/dataset/{dataset}/upload/",
            body,
            {"Content-Type": f"multipart/form-data; boundary={boundary}"},
            timeout=900,
        )
        if status != 202:
            stop.set()
            raise SystemExit(f"the upload failed: {status} {answer[:500]!r}")
        # The zip is stored and the import is a job: run it in its own process, as the job runner would,
        # while the probe keeps asking the server.
        job = run_process(environment, "job", "import", str(json.loads(answer)["id"]))
        stop.set()
        prober.join()
        from management.models import ImportJob

        ended = ImportJob.objects.get(pk=json.loads(answer)["id"])
        added = ended.report.get("added") if ended.status == "succeeded" else None
        finite = [value for value in latencies if value != float("inf")]
        total = seconds + job["seconds"]
        results["import"] = {
            "status": ended.status,
            "added": added,
            "upload_seconds": round(seconds, 1),
            "job_seconds": job["seconds"],
            "job_peak_mb": job["peak_mb"],
            "seconds": round(total, 1),
            "images_per_second": round(len(images) / total) if added else None,
            "job_images_per_second": round(len(images) / job["seconds"]) if added else None,
            "probe_p50_ms": round(1000 * percentile(finite, 50), 1) if finite else None,
            "probe_p99_ms": round(1000 * percentile(finite, 99), 1) if finite else None,
            "probe_failures": len(latencies) - len(finite),
        }
        print("import", results["import"], flush=True)
        if added is None:
            raise SystemExit(f"the import failed: {ended.status} {ended.error[:500]} {job['tail'][-500:]}")

        results["pages_before_run"] = measure_pages(server, pages(dataset, None))
        if args.import_only:
            raise _Stop
        results["training"] = run_process(environment, "train", str(dataset))
        print("training", {k: v for k, v in results["training"].items() if k != "tail"}, flush=True)
        from training.models import TrainingRun

        run = TrainingRun.objects.filter(dataset_id=dataset).order_by("-id").first()
        results["run"] = {"id": run.pk, "status": run.status, "accuracy": run.accuracy, "error": run.error[:300]}
        automatic = (run.metrics or {}).get("automatic")
        if automatic:
            results["run"]["automatic"] = {
                "winner": automatic["winner"],
                "seconds": automatic["seconds"],
                "candidates": [
                    {key: value for key, value in candidate.items() if key in {"name", "tried", "seconds", "note"}}
                    for candidate in automatic["candidates"]
                ],
            }
        print("run", results["run"], flush=True)
        results["pages_after_run"] = measure_pages(server, pages(dataset, run.pk))
        if not args.no_health:
            results["health"] = run_process(environment, "health", str(dataset))
            print("health", {k: v for k, v in results["health"].items() if k != "tail"}, flush=True)
            results["pages_after_health"] = measure_pages(server, pages(dataset, run.pk))
        if not args.keep:
            try:
                results["deletion"] = delete_dataset(server, environment, dataset)
            except Exception as error:  # noqa: BLE001 - the figures above are kept whatever happens here
                results["deletion"] = {"error": repr(error)}
            print("deletion", results["deletion"], flush=True)
    except _Stop:
        pass
    finally:
        results["web_workers"] = worker_memory(master.pid)
        os.killpg(master.pid, signal.SIGTERM)
        master.wait(60)
    server_log = (data_dir / "gunicorn.log").read_text(errors="replace")
    results["tracebacks"] = server_log.count("Traceback")
    results["worker_timeouts"] = server_log.count("WORKER TIMEOUT")
    report(results)
    write_results("scale", results)


def delete_dataset(server: Server, environment: dict, dataset: int) -> dict:
    """DELETE /api/dataset/ID/ on the server (the request marks it and queues its deletion job), whether the
    dataset list still names it, then the job in its own process as the runner would start it."""
    from datasets.models import DataSetDeletion

    status, seconds, answer = server.request("DELETE", f"/api/dataset/{dataset}/")
    listing = json.loads(server.request("GET", "/api/dataset/")[2] or b"[]")
    listed = any(
        row.get("id") == dataset for row in (listing.get("results", []) if isinstance(listing, dict) else listing)
    )
    job = DataSetDeletion.objects.filter(dataset_number=dataset).order_by("-id").first()
    row = {"status": status, "request_s": round(seconds, 3), "listed_after": listed, "job": None}
    if job is None:
        row["answer"] = answer[:300].decode(errors="replace")
        return row
    ran = run_process(environment, "job", "deletion", str(job.pk))
    job.refresh_from_db()
    left = os.path.isdir(os.path.join(environment["KERASUI_DATA_DIR"], "media", "datasets", str(dataset)))
    row["job"] = {"status": job.status, "seconds": ran["seconds"], "peak_mb": ran["peak_mb"], "folder_left": left}
    return row


class _Stop(Exception):
    """The parts asked for are measured."""


def start_gunicorn(data_dir: Path, port: int) -> subprocess.Popen:
    environment = {
        **os.environ,
        "KERASUI_DATA_DIR": str(data_dir),
        "KERASUI_BIND": f"127.0.0.1:{port}",
        "KERASUI_TRAINING_BACKEND": "none",
        "KERASUI_THROTTLE_API": "10000000/min",
    }
    log = (data_dir / "gunicorn-again.log").open("wb")
    gunicorn = Path(sys.executable).parent / "gunicorn"
    return subprocess.Popen(
        [str(gunicorn), "-c", "gunicorn.conf.py", "kerasui.wsgi"],
        cwd=ROOT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def pages_again(data_dir: Path, port: int) -> None:
    """The pages of an earlier run's data folder (its 60,000 images, run and health check) measured again
    with today's code, added to bench/results/scale.json as `pages_again`."""
    os.environ["KERASUI_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kerasui.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from datasets.models import DataSet
    from training.models import TrainingRun

    call_command("migrate", verbosity=0)
    token = database_with_token_again("scale")
    session = admin_session("scale")
    dataset = DataSet.objects.get(name="Fashion-MNIST").pk
    run = TrainingRun.objects.filter(dataset_id=dataset).order_by("-id").first().pk
    master = start_gunicorn(data_dir, port)
    try:
        wait_for(port)
        server = Server(port, token, session)
        # Fresh workers: one pass first (templates, caches), as the first run's workers were warm from the import.
        measure_pages(server, pages(dataset, run), repeat=1)
        again = measure_pages(server, pages(dataset, run))
        workers = worker_memory(master.pid)
    finally:
        os.killpg(master.pid, signal.SIGTERM)
        master.wait(60)
    path = ROOT / "bench" / "results" / "scale.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Into the earlier run's results when there are some; a data folder made otherwise gets its own.
    results = json.loads(path.read_text()) if path.is_file() else {"data_dir": str(data_dir)}
    results["pages_again"] = again
    results["web_workers_again"] = workers
    path.write_text(json.dumps(results, indent=2))
    for name, row in again.items():
        print(f"{name:<32}{row['worst_s']:>8.3f} s {row['bytes'] // 1024:>6} kB {'/'.join(row['status'])}")
    for worker in workers:
        print(f"web worker {worker['pid']}: peak {worker['peak_mb']} MB, TensorFlow loaded: {worker['tensorflow']}")


def database_with_token_again(username: str) -> str:
    """A new bearer token for the existing `username` (the earlier run's expired)."""
    import secrets
    from datetime import timedelta

    from django.contrib.auth.models import User
    from django.utils import timezone
    from oauth2_provider.models import get_access_token_model, get_application_model

    user = User.objects.get(username=username)
    application = get_application_model().objects.filter(user=user).first()
    token = get_access_token_model().objects.create(
        user=user,
        application=application,
        token=secrets.token_urlsafe(24),
        expires=timezone.now() + timedelta(hours=2),
        scope="read write predict",
    )
    return token.token


def report(results: dict) -> None:
    imported = results["import"]
    print(f"\n{results['images']} images, {results['machine']}")
    print(
        f"import: {imported['seconds']} s ({imported['images_per_second']} images/s); the server meanwhile "
        f"p50 {imported['probe_p50_ms']} ms, p99 {imported['probe_p99_ms']} ms, {imported['probe_failures']} failed"
    )
    phases = [key for key in ("pages_before_run", "pages_after_run", "pages_after_health") if key in results]
    names = list(results[phases[-1]])
    print(f"\n{'page (worst of 3, s)':<32}" + "".join(f"{key.removeprefix('pages_'):>20}" for key in phases))
    for name in names:
        cells = []
        for key in phases:
            row = results[key].get(name)
            cells.append("—" if row is None else f"{row['worst_s']:.3f} ({row['bytes'] // 1024} kB)")
        print(f"{name:<32}" + "".join(f"{cell:>20}" for cell in cells))
    for key in ("training", "health"):
        if key in results:
            row = results[key]
            print(f"{key}: {row['seconds']} s, peak {row['peak_mb']} MB, exit {row['exit']}")
    if "deletion" in results:
        print(f"deletion: {results['deletion']}")
    for worker in results["web_workers"]:
        print(f"web worker {worker['pid']}: peak {worker['peak_mb']} MB, TensorFlow loaded: {worker['tensorflow']}")
    print(f"tracebacks in the server's log: {results['tracebacks']}, worker timeouts: {results['worker_timeouts']}")


def markdown(results: dict) -> None:
    """The README's table: each page's worst time of three (and size) at each stage, then the processes."""
    stages = ("pages_before_run", "pages_after_run", "pages_after_health", "pages_again")
    phases = [key for key in stages if key in results]
    titles = {
        "pages_before_run": "before a run",
        "pages_after_run": "after a run",
        "pages_after_health": "after a health check",
        "pages_again": "after it, with the fixes",
    }
    print("| page or answer (worst of 3) | " + " | ".join(titles[key] for key in phases) + " |")
    print("|---|" + "---|" * len(phases))
    for name in results[phases[-1]]:
        cells = []
        for key in phases:
            row = results[key].get(name)
            ok = row is not None and row["status"] == ["200"]
            cells.append(
                "—"
                if row is None
                else f"{row['worst_s']:.2f} s, {row['bytes'] / 1024:.0f} kB"
                + ("" if ok else f" ({'/'.join(row['status'])})")
            )
        print(f"| {name} | " + " | ".join(cells) + " |")
    imported = results["import"]
    print()
    print("| process | time | peak memory |")
    print("|---|---|---|")
    print(
        f"| import of {results['images']:,} images (the web worker; /api/health/ meanwhile p50 "
        f"{imported['probe_p50_ms']} ms, p99 {imported['probe_p99_ms']} ms) | {imported['seconds']} s, "
        f"{imported['images_per_second']} images/s | see the web workers |"
    )
    for key, title in (
        ("training", f"training, {results.get('run', {}).get('accuracy') or 0:.3f} accuracy"),
        ("health", "health check"),
    ):
        if key in results:
            command = "train" if key == "training" else key
            row = results[key]
            print(f"| {title} (`manage.py {command}`) | {row['seconds']} s | {row['peak_mb']} MB |")
    for worker in results["web_workers"]:
        tensorflow = "TensorFlow loaded" if worker["tensorflow"] else "no TensorFlow"
        print(f"| web worker {worker['pid']} (at the end, {tensorflow}) | — | {worker['peak_mb']} MB |")


if __name__ == "__main__":
    main()
