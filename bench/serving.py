"""Prediction serving benchmark: /api/test/ on gunicorn against the HTTP floor, raw Keras and the original.

    .venv/bin/python -m bench.serving [--requests 400] [--workers 2] [--threads 4]

One run, one machine: starts gunicorn (gunicorn.conf.py) on a fresh data folder with a 64×64 RGB
model of the default code, then measures with keep-alive HTTP clients in threads
  - the floor: GET /api/ with the same bearer token (authenticated, no model, no body);
  - /api/test/: one 64×64 PNG as base64 JSON; and a batch of 32 against 32 single requests;
  - in process: the raw Keras call `model(x)`, the inference path in use (Predictor), and the
    original KerasUI's way (load the model from disk, then `model.predict`, per request).
Prints a table and writes bench/results/serving.json.
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
from pathlib import Path

from bench.common import database_with_token, percentile, wait_for, write_results

ROOT = Path(__file__).resolve().parent.parent



def summary(latencies: list[float], seconds: float) -> dict:
    return {
        "p50_ms": percentile(latencies, 50) * 1000,
        "p95_ms": percentile(latencies, 95) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "per_second": len(latencies) / seconds,
    }


def load(port: int, method: str, path: str, body: bytes | None, headers: dict, concurrency: int, total: int) -> dict:
    """`total` requests over `concurrency` keep-alive connections; latency of each, throughput overall."""
    latencies: list[float] = []
    lock = threading.Lock()
    per_thread = max(1, total // concurrency)
    failures: list[str] = []

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine = []
        for _ in range(per_thread):
            start = time.perf_counter()
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            mine.append(time.perf_counter() - start)
            if response.status != 200:
                failures.append(f"{response.status} {data[:200]!r}")
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise SystemExit(f"{path}: {len(failures)} requests failed, e.g. {failures[0]}")
    return summary(latencies, elapsed)


def in_process(function, repeat: int) -> dict:
    function()
    latencies = []
    start = time.perf_counter()
    for _ in range(repeat):
        begin = time.perf_counter()
        function()
        latencies.append(time.perf_counter() - begin)
    return summary(latencies, time.perf_counter() - start)


def setup(data_dir: Path) -> tuple[str, int, Path, bytes]:
    """A migrated database with an admin, a bearer token and a dataset whose current model is 64×64 RGB."""
    token = database_with_token(data_dir, "bench")
    from PIL import Image

    from management.ml.models import DEFAULT_PROCESS, ModelSpec, build_model
    from management.models import DataSet, TrainingRun
    from management.services.training import training_run_create

    dataset = DataSet.objects.create(name="Bench", image_size=64)
    run = training_run_create(dataset=dataset, enqueue=False)
    model_path = data_dir / "media" / "models" / f"run_{run.pk}.keras"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    build_model(ModelSpec(code=DEFAULT_PROCESS, image_size=64, channels=3, num_classes=3)).save(model_path)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.SUCCEEDED,
        progress=100,
        labels=["circle", "square", "triangle"],
        model_file=f"models/run_{run.pk}.keras",
    )
    DataSet.objects.filter(pk=dataset.pk).update(current_run=run)
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(buffer, "PNG")
    return token, dataset.pk, model_path, buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per measurement")
    parser.add_argument("--workers", type=int, default=None, help="gunicorn workers (default: gunicorn.conf.py)")
    parser.add_argument("--threads", type=int, default=None, help="gunicorn threads per worker")
    parser.add_argument("--port", type=int, default=8611)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="kerasui-bench-"))
    token, dataset_id, model_path, image = setup(data_dir)
    env = {**os.environ, "KERASUI_DATA_DIR": str(data_dir), "KERASUI_BIND": f"127.0.0.1:{args.port}"}
    env["KERASUI_TRAINING_BACKEND"] = "none"
    env["KERASUI_LOG_LEVEL"] = "warning"
    # Request rates are counted as in production, but never refused: one client sends thousands a minute.
    env.setdefault("KERASUI_THROTTLE_API", "10000000/min")
    env.setdefault("KERASUI_THROTTLE_PREDICT", "10000000/min")
    if args.workers:
        env["KERASUI_WORKERS"] = str(args.workers)
    if args.threads:
        env["KERASUI_THREADS"] = str(args.threads)
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py", "kerasui.wsgi"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    results: dict = {
        "config": {"workers": env.get("KERASUI_WORKERS", "conf"), "threads": env.get("KERASUI_THREADS", "conf")}
    }
    try:
        wait_for(args.port)
        auth = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        single = json.dumps({"dataset": dataset_id, "image": base64.b64encode(image).decode()}).encode()
        batch = json.dumps({"dataset": dataset_id, "images": [base64.b64encode(image).decode()] * 32}).encode()
        post = {**auth, "Content-Type": "application/json"}
        # Warm every worker's model cache and connections before measuring.
        load(args.port, "POST", "/api/test/", single, post, 8, 64)
        load(args.port, "POST", "/api/test/", batch, post, 2, 8)
        for concurrency in (1, 8, 32):
            results[f"floor_c{concurrency}"] = load(args.port, "GET", "/api/", None, auth, concurrency, args.requests)
            results[f"predict_c{concurrency}"] = load(
                args.port, "POST", "/api/test/", single, post, concurrency, args.requests
            )
        results["batch32_c1"] = load(args.port, "POST", "/api/test/", batch, post, 1, max(20, args.requests // 16))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)

    import keras
    import numpy as np

    from management.ml.images import load_image
    from management.ml.inference import Predictor

    x = load_image(image, image_size=64, color_mode="rgb")[None]
    model = keras.saving.load_model(model_path, compile=False)
    predictor = Predictor(model_path)
    results["raw_keras_call"] = in_process(lambda: model(x.astype(np.float32), training=False), 300)
    results["inference_path"] = in_process(lambda: predictor.predict(x), 300)
    results["raw_keras_predict"] = in_process(lambda: model.predict(x, verbose=0), 50)

    def original() -> None:
        loaded = keras.saving.load_model(model_path)
        loaded.predict(load_image(image, image_size=64, color_mode="rgb")[None], verbose=0)

    results["original_way"] = in_process(original, 15)
    results["engine"] = predictor.engine

    rows = [
        ("GET /api/ (HTTP floor)", "floor"),
        ("POST /api/test/, 1 image", "predict"),
    ]

    def row(label: str, concurrency, r: dict) -> None:
        figures = f"{r['p50_ms']:8.2f} {r['p95_ms']:8.2f} {r['p99_ms']:8.2f} {r['per_second']:8.1f}"
        print(f"{label:44} {concurrency:>3} {figures}")

    print(f"\n{'what':44} {'c':>3} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'req/s':>8}")
    for label, key in rows:
        for concurrency in (1, 8, 32):
            row(label, concurrency, results[f"{key}_c{concurrency}"])
    row("POST /api/test/, batch of 32 images", 1, results["batch32_c1"])
    for label, key in [
        ("in process: raw Keras model(x)", "raw_keras_call"),
        (f"in process: inference path ({predictor.engine})", "inference_path"),
        ("in process: raw Keras model.predict(x)", "raw_keras_predict"),
        ("in process: original (load + predict)", "original_way"),
    ]:
        row(label, "-", results[key])
    b = results["batch32_c1"]

    floor, predict = results["floor_c1"], results["predict_c1"]
    goals = {
        "p50 over the floor (ms, goal <= 2)": predict["p50_ms"] - floor["p50_ms"],
        "throughput at c=8 vs floor (goal >= 0.60)": results["predict_c8"]["per_second"]
        / results["floor_c8"]["per_second"],
        "speed-up over the original's way (goal >= 30)": results["original_way"]["p50_ms"] / predict["p50_ms"],
        "batch-32 images/s vs single requests (goal >= 10)": (b["per_second"] * 32) / predict["per_second"],
    }
    results["goals"] = goals
    print()
    for label, value in goals.items():
        print(f"{label:52} {value:8.2f}")
    print(f"\nwritten: {write_results('serving', results)}")


if __name__ == "__main__":
    main()
