"""Load test: concurrent predictions and uploads against gunicorn, counting every error.

    .venv/bin/python -m bench.load [--seconds 60] [--predict-clients 8] [--upload-clients 2]

One run, loopback only: starts gunicorn (gunicorn.conf.py) on a fresh data folder with a trained
16 px colour model, then for `--seconds` keeps `--predict-clients` keep-alive clients posting one
image to /api/test/ and `--upload-clients` clients adding images (multipart /api/datasetitem/) and
importing small zips (/api/dataset/<id>/upload/) into the same dataset. Every answer other than the
expected 200/201 is an error, and the server's log must not say "database is locked". Prints a
table and writes bench/results/load.json. The test suite runs the same load for 10 seconds.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

from bench.common import database_with_token, percentile, wait_for, write_results

ROOT = Path(__file__).resolve().parent.parent


def colour_png(rgb: tuple[int, int, int], seed: int) -> bytes:
    from PIL import Image

    image = Image.new("RGB", (16, 16), rgb)
    image.putpixel((seed % 16, (seed // 16) % 16), (seed % 256, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def form(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "kerasui-load-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    for name, (filename, data) in files.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n\r\n'
        parts.append(head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def load_test(
    *, port: int, token: str, dataset: int, seconds: float, predict_clients: int, upload_clients: int
) -> dict:
    """Run the mixed load; return counts, latencies and the list of errors."""
    auth = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    image = base64.b64encode(colour_png((200, 30, 30), 1)).decode()
    predict_body = json.dumps({"dataset": dataset, "image": image}).encode()
    latencies: dict[str, list[float]] = {"predict": [], "upload": [], "zip": []}
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def call(connection, kind: str, method: str, path: str, body: bytes, headers: dict, expected: int | set[int]):
        started = time.perf_counter()
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as error:
            with lock:
                errors.append(f"{kind}: {type(error).__name__}: {error}")
            return http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        elapsed = time.perf_counter() - started
        with lock:
            if response.status in (expected if isinstance(expected, set) else {expected}):
                latencies[kind].append(elapsed)
            else:
                errors.append(f"{kind}: {response.status} {payload[:200]!r}")
        return connection

    def predictor() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        headers = {**auth, "Content-Type": "application/json"}
        while time.monotonic() < deadline:
            connection = call(connection, "predict", "POST", "/api/test/", predict_body, headers, 200)

    def uploader(number: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        sent = 0
        while time.monotonic() < deadline:
            sent += 1
            seed = number * 100_000 + sent
            if sent % 4:
                body, content_type = form(
                    {"dataset": str(dataset), "label": "red"},
                    {"image": (f"u{seed}.png", colour_png((210, 20, 20), seed))},
                )
                connection = call(
                    connection, "upload", "POST", "/api/datasetitem/", body, {**auth, "Content-Type": content_type}, 201
                )
            else:
                archive = io.BytesIO()
                with zipfile.ZipFile(archive, "w") as writer:
                    for index in range(5):
                        writer.writestr(f"blue/z{seed}-{index}.png", colour_png((20, 20, 210), seed + index))
                body, content_type = form({}, {"file": ("batch.zip", archive.getvalue())})
                connection = call(
                    connection,
                    "zip",
                    "POST",
                    f"/api/dataset/{dataset}/upload/",
                    body,
                    {**auth, "Content-Type": content_type},
                    {202, 409},  # an import job queued, or one of this dataset's is still under way
                )

    threads = [threading.Thread(target=predictor) for _ in range(predict_clients)]
    threads += [threading.Thread(target=uploader, args=(number,)) for number in range(upload_clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started

    def stats(values: list[float]) -> dict:
        if not values:
            return {"count": 0}
        return {
            "count": len(values),
            "per_second": len(values) / elapsed,
            "p50_ms": percentile(values, 50) * 1000,
            "p99_ms": percentile(values, 99) * 1000,
        }

    return {
        "seconds": elapsed,
        "predict": stats(latencies["predict"]),
        "upload": stats(latencies["upload"] + latencies["zip"]),
        "single_image_upload": stats(latencies["upload"]),
        "zip_upload": stats(latencies["zip"]),
        "errors": errors,
    }


def setup(data_dir: Path) -> tuple[str, int]:
    """A migrated database, a bearer token, and a dataset with a model trained by the train command."""
    token = database_with_token(data_dir, "load")
    from datasets.models import DataSet
    from datasets.services import dataset_import_zip

    dataset = DataSet.objects.create(name="Load", image_size=16, epochs=2, batch_size=8)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as writer:
        for label, rgb in {"red": (210, 20, 20), "blue": (20, 20, 210), "green": (20, 210, 20)}.items():
            for seed in range(8):
                writer.writestr(f"{label}/{seed}.png", colour_png(rgb, seed))
    archive.seek(0)
    dataset_import_zip(dataset=dataset, file=archive)
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run([sys.executable, "manage.py", "train", str(dataset.pk)], cwd=ROOT, env=environment, check=True)
    return token, dataset.pk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--predict-clients", type=int, default=8)
    parser.add_argument("--upload-clients", type=int, default=2)
    parser.add_argument("--port", type=int, default=8612)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="kerasui-load-"))
    token, dataset = setup(data_dir)
    environment = {
        **os.environ,
        "KERASUI_DATA_DIR": str(data_dir),
        "KERASUI_BIND": f"127.0.0.1:{args.port}",
        "KERASUI_TRAINING_BACKEND": "none",
        # Request rates are counted as in production, but never refused: the clients share one token.
        "KERASUI_THROTTLE_API": os.environ.get("KERASUI_THROTTLE_API", "10000000/min"),
        "KERASUI_THROTTLE_PREDICT": os.environ.get("KERASUI_THROTTLE_PREDICT", "10000000/min"),
    }
    log = (data_dir / "gunicorn.log").open("wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py", "kerasui.wsgi"],
        cwd=ROOT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(args.port)
        result = load_test(
            port=args.port,
            token=token,
            dataset=dataset,
            seconds=args.seconds,
            predict_clients=args.predict_clients,
            upload_clients=args.upload_clients,
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    server_log = (data_dir / "gunicorn.log").read_text(errors="replace")
    result["database_locked"] = server_log.count("database is locked")
    result["tracebacks"] = server_log.count("Traceback")
    result["config"] = {"predict_clients": args.predict_clients, "upload_clients": args.upload_clients}

    print(f"{args.seconds:.0f} s, {args.predict_clients} prediction clients, {args.upload_clients} upload clients")
    print(f"{'endpoint':<34}{'requests':>10}{'per s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    for label, key in (
        ("POST /api/test/", "predict"),
        ("POST /api/datasetitem/ (1 image)", "single_image_upload"),
        ("POST /api/dataset/<id>/upload/", "zip_upload"),
    ):
        row = result[key]
        if row["count"]:
            print(f"{label:<34}{row['count']:>10}{row['per_second']:>9.1f}{row['p50_ms']:>9.1f}{row['p99_ms']:>9.1f}")
        else:
            print(f"{label:<34}{0:>10}")
    print(
        f"errors: {len(result['errors'])}, 'database is locked': {result['database_locked']}, "
        f"tracebacks: {result['tracebacks']}"
    )
    for error in result["errors"][:10]:
        print("  ", error)
    write_results("load", result)
    if result["errors"] or result["database_locked"] or result["tracebacks"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
