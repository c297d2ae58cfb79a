"""Prediction serving benchmark: both engines side by side on gunicorn, in one run.

    .venv/bin/python -m bench.serving [--requests 400] [--workers 2] [--threads 2] [--engines onnxruntime]
                                      [--postgres postgres://user:password@127.0.0.1:5432/empty_db]

One run, one machine: a fresh data folder (SQLite, the embedded default; or, with --postgres, a
PostgreSQL database the bench empties first) with five datasets, each with a 64×64 RGB model of the
default code whose ONNX export is made and proven as after a training. Two gunicorn servers
(gunicorn.conf.py) run on it at once, one per engine - ONNX Runtime (the default) and Keras
(KERASUI_SERVING_ENGINE=keras) - with one current model, measured in turns with keep-alive HTTP
clients in threads:
  - the floor: anonymous GET /api/health/ (no authentication, no throttle, no query);
  - with a bearer token: GET /api/ (authentication and the throttle's count), GET /api/dataset/ID/
    (and one object), /api/test/ (one 64×64 PNG as base64 JSON), each at concurrency 1, 8 and 32;
    a batch of 32 images;
  - the resident memory (RSS) of each web worker with 1 model loaded, then with 5 (the four other
    datasets' models made current: the workers load them by themselves);
  - a cold worker: a new one-worker gunicorn, the time until it answers and its first prediction.
Then, in this process: where a request's time goes (authentication, parsing, the lookup, decoding,
the model, the JSON answer) and the raw model calls. Prints tables; writes bench/results/serving.json.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import database_with_token, percentile, wait_for, write_results

ROOT = Path(__file__).resolve().parent.parent


MODELS = 5
LABELS = ["circle", "square", "triangle"]


def summary(latencies: list[float], seconds: float) -> dict:
    return {
        "p50_ms": percentile(latencies, 50) * 1000,
        "p95_ms": percentile(latencies, 95) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "per_second": len(latencies) / seconds,
    }


def load(port: int, method: str, path: str, body: bytes | None, headers: dict, concurrency: int, total: int) -> dict:
    """`total` requests over `concurrency` keep-alive connections; latency of each, throughput overall."""
    latencies, elapsed = block(port, method, path, body, headers, concurrency, total)
    return summary(latencies, elapsed)


def in_turns(kinds: dict[tuple, tuple], concurrency: int, total: int, rounds: int = 8) -> dict[tuple, dict]:
    """Each kind of request (port, method, path, body, headers) `total` times, in `rounds` blocks taken
    in turns, so that the machine's busy moments fall on every kind alike; a summary per kind."""
    latencies = {name: [] for name in kinds}
    seconds = dict.fromkeys(kinds, 0.0)
    for _ in range(rounds):
        for name, request in kinds.items():
            taken, elapsed = block(*request, concurrency, max(concurrency, total // rounds))
            latencies[name] += taken
            seconds[name] += elapsed
    return {name: summary(latencies[name], seconds[name]) for name in kinds}


def block(port, method, path, body, headers, concurrency: int, total: int) -> tuple[list[float], float]:
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
    return latencies, elapsed


def once(port: int, method: str, path: str, body: bytes | None, headers: dict) -> tuple[int, bytes, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    start = time.perf_counter()
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    elapsed = time.perf_counter() - start
    connection.close()
    return response.status, data, elapsed


def in_process(function, repeat: int) -> dict:
    function()
    latencies = []
    start = time.perf_counter()
    for _ in range(repeat):
        begin = time.perf_counter()
        function()
        latencies.append(time.perf_counter() - begin)
    return summary(latencies, time.perf_counter() - start)


def empty_postgres(url: str, data_dir: Path) -> None:
    """Point this process (and the servers it starts) at the PostgreSQL database `url`, emptied."""
    os.environ["DATABASE_URL"] = url
    os.environ["KERASUI_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kerasui.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("flush", interactive=False, verbosity=0)


def setup(data_dir: Path) -> dict:
    """Five datasets with a 64×64 RGB model each (ONNX export proven); only the first is current."""
    token = database_with_token(data_dir, "bench")
    from oauth2_provider.models import get_access_token_model
    from PIL import Image

    # The same token reads /metrics (the bench's account is a superuser).
    get_access_token_model().objects.filter(token=token).update(scope="read write predict metrics")

    from datasets.models import DataSet
    from ml.models import DEFAULT_PROCESS, ModelSpec, build_model
    from serving.services import serving_prepare_run
    from training.models import TrainingRun
    from training.services import training_run_create

    runs = []
    for index in range(MODELS):
        dataset = DataSet.objects.create(name=f"Bench {index}", image_size=64)
        run = training_run_create(dataset=dataset, enqueue=False)
        model_path = data_dir / "media" / "models" / f"run_{run.pk}.keras"
        model_path.parent.mkdir(parents=True, exist_ok=True)
        build_model(ModelSpec(code=DEFAULT_PROCESS, image_size=64, channels=3, num_classes=3)).save(model_path)
        TrainingRun.objects.filter(pk=run.pk).update(
            status=TrainingRun.Status.SUCCEEDED, progress=1.0, labels=LABELS, model_file=f"models/run_{run.pk}.keras"
        )
        run = serving_prepare_run(run=TrainingRun.objects.get(pk=run.pk))
        if run.serving_engine != "onnxruntime":
            raise SystemExit(f"run {run.pk}: {run.serving_note}")
        runs.append(run)
    DataSet.objects.filter(pk=runs[0].dataset_id).update(current_run=runs[0])
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(buffer, "PNG")
    return {
        "token": token,
        "runs": runs,
        "image": buffer.getvalue(),
        "model_path": data_dir / "media" / runs[0].model_file.name,
    }


def set_current(runs: list, count: int) -> None:
    from datasets.models import DataSet

    for index, run in enumerate(runs):
        DataSet.objects.filter(pk=run.dataset_id).update(current_run=run if index < count else None)


def start_server(environment: dict, port: int, workers: int | None = None) -> subprocess.Popen:
    env = {**environment, "KERASUI_BIND": f"127.0.0.1:{port}"}
    if workers:
        env["KERASUI_WORKERS"] = str(workers)
    env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="kerasui-bench-metrics-")
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py", "kerasui.wsgi"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )


def stop_server(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(30)


def worker_rss_mb(server: subprocess.Popen) -> list[float]:
    import psutil

    return sorted(child.memory_info().rss / 1e6 for child in psutil.Process(server.pid).children())


def scrape(port: int, headers: dict) -> str:
    status, body, _ = once(port, "GET", "/metrics", None, headers)
    if status != 200:
        raise SystemExit(f"/metrics answered {status}: {body[:200]!r}")
    return body.decode()


def series_sum(text: str, name: str, labels: str = "") -> float:
    pattern = (
        rf"^{re.escape(name)}\{{{labels}[^}}]*\}} (\S+)$" if labels else rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$"
    )
    return sum(float(value) for value in re.findall(pattern, text, re.M))


ENGINES = ("onnxruntime", "keras")
# What each engine's server is asked, beside the anonymous floor.
KINDS = ("floor", "root", "dataset", "predict")


def measure(args, environment: dict, data: dict) -> dict:
    """Both engines side by side: two gunicorn servers on the same database (one told to serve every
    version with Keras), measured in turns, so a busy moment of the machine hits both alike."""
    set_current(data["runs"], 1)
    engines = args.engines
    results: dict = {engine: {} for engine in engines}
    auth = {"Authorization": f"Bearer {data['token']}", "Accept": "application/json"}
    anonymous = {"Accept": "application/json"}
    metrics_auth = {**auth, "Accept": "text/plain"}
    dataset = data["runs"][0].dataset_id
    encoded = base64.b64encode(data["image"]).decode()
    single = json.dumps({"dataset": dataset, "image": encoded}).encode()
    batch = json.dumps({"dataset": dataset, "images": [encoded] * 32}).encode()
    post = {**auth, "Content-Type": "application/json"}
    ports = {"onnxruntime": args.port, "keras": args.port + 1}
    settings = {"onnxruntime": {}, "keras": {"KERASUI_SERVING_ENGINE": "keras"}}

    servers = {engine: start_server({**environment, **settings[engine]}, ports[engine]) for engine in engines}
    try:
        for engine in engines:
            wait_for(ports[engine])
            results[engine]["rss_mb_1_model_at_start"] = worker_rss_mb(servers[engine])
            # Warm every worker's connections before measuring (the models are loaded already).
            load(ports[engine], "POST", "/api/test/", single, post, 8, 64)
            load(ports[engine], "POST", "/api/test/", batch, post, 2, 8)
            load(ports[engine], "GET", f"/api/dataset/{dataset}/", None, auth, 8, 64)
        for concurrency in (1, 8, 32):
            kinds = {}
            for engine in engines:
                kinds[(engine, "floor")] = (ports[engine], "GET", "/api/health/", None, anonymous)
                kinds[(engine, "root")] = (ports[engine], "GET", "/api/", None, auth)
                kinds[(engine, "dataset")] = (ports[engine], "GET", f"/api/dataset/{dataset}/", None, auth)
                kinds[(engine, "predict")] = (ports[engine], "POST", "/api/test/", single, post)
            for (engine, kind), figures in in_turns(kinds, concurrency, args.requests).items():
                results[engine][f"{kind}_c{concurrency}"] = figures
        # A batch of 32 against single requests, in turns too.
        kinds = {}
        for engine in engines:
            kinds[(engine, "batch32_c1")] = (ports[engine], "POST", "/api/test/", batch, post)
            kinds[(engine, "single_c1")] = (ports[engine], "POST", "/api/test/", single, post)
        for (engine, kind), figures in in_turns(kinds, 1, max(32, args.requests // 8), rounds=4).items():
            results[engine][kind] = figures
        for engine in engines:
            results[engine]["rss_mb_1_model_after_load"] = worker_rss_mb(servers[engine])

        # Four more datasets get a current model: every worker loads them by itself.
        set_current(data["runs"], MODELS)
        for engine in engines:
            port, r = ports[engine], results[engine]
            workers = len(worker_rss_mb(servers[engine]))
            deadline = time.monotonic() + 300
            while series_sum(scrape(port, metrics_auth), "kerasui_cached_models") < MODELS * workers:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{engine}: the workers did not load the five models within 300 s")
                time.sleep(0.5)
            for run in data["runs"]:
                body = json.dumps({"dataset": run.dataset_id, "image": encoded}).encode()
                load(port, "POST", "/api/test/", body, post, 2, 8)
            r["rss_mb_5_models"] = worker_rss_mb(servers[engine])
            text = scrape(port, metrics_auth)
            r["loads_by_trigger"] = {
                trigger: series_sum(text, "kerasui_model_loads_total", f'engine="{engine}",trigger="{trigger}"')
                for trigger in ("start", "watch", "request")
            }
            r["tensorflow_in_workers"] = series_sum(text, "kerasui_tensorflow_imported")
    finally:
        for server in servers.values():
            stop_server(server)

    # A cold worker: a new one-worker server with five current models, its first predictions.
    for engine in engines:
        r = results[engine]
        started = time.perf_counter()
        server = start_server({**environment, **settings[engine]}, ports[engine], workers=1)
        try:
            wait_for(ports[engine])
            r["cold_worker_ready_s"] = time.perf_counter() - started
            status, body, elapsed = once(ports[engine], "POST", "/api/test/", single, post)
            if status != 200:
                raise SystemExit(f"cold worker: {status} {body[:200]!r}")
            r["cold_first_prediction_ms"] = elapsed * 1000
            r["cold_second_prediction_ms"] = once(ports[engine], "POST", "/api/test/", single, post)[2] * 1000
            r["rss_mb_cold_worker_5_models"] = worker_rss_mb(server)
        finally:
            stop_server(server)
    return results


def breakdown(data: dict) -> dict:
    """Where one /api/test/ request's time goes, part by part, in this process (ONNX Runtime serving)."""
    from django.test import Client
    from rest_framework.parsers import JSONParser
    from rest_framework.renderers import JSONRenderer
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from api.authentication import OAuth2Authentication
    from ml.images import load_image
    from serving.prediction import model_cache, prediction_current_run, prediction_predict
    from serving.serializers import PredictSerializer

    set_current(data["runs"], 1)
    model_cache.clear()
    dataset = data["runs"][0].dataset_id
    encoded = base64.b64encode(data["image"]).decode()
    body = json.dumps({"dataset": dataset, "image": encoded}).encode()
    header = f"Bearer {data['token']}"
    factory = APIRequestFactory(HTTP_HOST="localhost")
    authentication = OAuth2Authentication()

    def authenticate() -> None:
        # Without a body: DRF would parse the JSON body here (the next part).
        request = Request(factory.get("/api/test/", HTTP_AUTHORIZATION=header))
        assert authentication.authenticate(request) is not None

    def parse() -> None:
        serializer = PredictSerializer(data=JSONParser().parse(io.BytesIO(body)))
        assert serializer.is_valid()

    run = prediction_current_run(dataset_id=dataset)
    predictor = model_cache.get(run)
    array = load_image(data["image"], image_size=64, color_mode="rgb")[None]
    answer = prediction_predict(run=run, images=[("image", data["image"])], current=True)[0].as_dict()
    client = Client(HTTP_HOST="localhost")
    parts = {
        "authentication (bearer token)": in_process(authenticate, 300),
        "parsing and validation (JSON, base64)": in_process(parse, 300),
        "lookup (the current run)": in_process(lambda: prediction_current_run(dataset_id=dataset), 300),
        "decoding (load_image)": in_process(lambda: load_image(data["image"], image_size=64, color_mode="rgb"), 300),
        "model (ONNX Runtime)": in_process(lambda: predictor.predict(array), 300),
        "JSON answer": in_process(lambda: JSONRenderer().render(answer), 300),
        "whole request, in process": in_process(
            lambda: client.post("/api/test/", body, content_type="application/json", HTTP_AUTHORIZATION=header), 300
        ),
        "floor GET /api/, in process": in_process(lambda: client.get("/api/", HTTP_AUTHORIZATION=header), 300),
    }
    return parts


def raw_models(data: dict) -> dict:
    """The model calls themselves, and the original KerasUI's way (load, then predict, per request)."""
    import keras
    import numpy as np

    from management.files import media_local_copy
    from ml.engines import KERAS, ONNXRUNTIME, load_predictor
    from ml.images import load_image
    from serving.services import onnx_name

    model_path = data["model_path"]
    x = load_image(data["image"], image_size=64, color_mode="rgb")[None]
    x32 = np.repeat(x, 32, axis=0)
    model = keras.saving.load_model(model_path, compile=False)
    onnx = load_predictor(ONNXRUNTIME, str(media_local_copy(name=onnx_name(data["runs"][0]))), threads=1)
    keras_predictor = load_predictor(KERAS, model_path, threads=1)
    results = {
        "onnxruntime_1": in_process(lambda: onnx.predict(x), 300),
        "keras_tf_function_1": in_process(lambda: keras_predictor.predict(x), 300),
        "onnxruntime_32": in_process(lambda: onnx.predict(x32), 50),
        "keras_tf_function_32": in_process(lambda: keras_predictor.predict(x32), 50),
        "raw_keras_call_1": in_process(lambda: model(x.astype(np.float32), training=False), 100),
        "raw_keras_predict_1": in_process(lambda: model.predict(x, verbose=0), 30),
    }

    def original() -> None:
        loaded = keras.saving.load_model(model_path)
        loaded.predict(load_image(data["image"], image_size=64, color_mode="rgb")[None], verbose=0)

    results["original_way"] = in_process(original, 10)
    return results


def row(label: str, concurrency, r: dict) -> None:
    figures = f"{r['p50_ms']:8.2f} {r['p95_ms']:8.2f} {r['p99_ms']:8.2f} {r['per_second']:8.1f}"
    print(f"{label:46} {concurrency:>3} {figures}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per measurement")
    parser.add_argument("--workers", type=int, default=None, help="gunicorn workers (default: gunicorn.conf.py)")
    parser.add_argument("--threads", type=int, default=None, help="gunicorn threads per worker")
    parser.add_argument("--port", type=int, default=8611)
    parser.add_argument("--in-process-only", action="store_true", help="only the in-process breakdown and models")
    parser.add_argument(
        "--engines", default=",".join(ENGINES), help="serving engines to measure, comma-separated (default: both)"
    )
    parser.add_argument(
        "--postgres", metavar="URL", default="", help="a PostgreSQL database to measure on (it is emptied first)"
    )
    args = parser.parse_args()
    args.engines = tuple(engine for engine in args.engines.split(",") if engine in ENGINES)

    data_dir = Path(tempfile.mkdtemp(prefix="kerasui-bench-"))
    if args.postgres:
        empty_postgres(args.postgres, data_dir)
    data = setup(data_dir)
    environment = {**os.environ, "KERASUI_DATA_DIR": str(data_dir), "KERASUI_TRAINING_BACKEND": "none"}
    environment.update(KERASUI_LOG_LEVEL="warning", KERASUI_SERVING_POLL_SECONDS="0.5", KERASUI_MODEL_CACHE_SIZE="8")
    # Request rates are counted as in production, but never refused: one client sends thousands a minute.
    for scope in ("API", "PREDICT", "METRICS"):
        environment.setdefault(f"KERASUI_THROTTLE_{scope}", "10000000/min")
    if args.workers:
        environment["KERASUI_WORKERS"] = str(args.workers)
    if args.threads:
        environment["KERASUI_THREADS"] = str(args.threads)
    results: dict = {
        "config": {
            "workers": environment.get("KERASUI_WORKERS", "conf"),
            "threads": environment.get("KERASUI_THREADS", "conf"),
            "database": "postgresql" if args.postgres else "sqlite",
        }
    }
    if not args.in_process_only:
        print("measuring both engines on gunicorn ...", flush=True)
        results.update(measure(args, environment, data))
    results["breakdown"] = breakdown(data)
    results["models"] = raw_models(data)
    if args.in_process_only:
        for label, r in {**results["breakdown"], **results["models"]}.items():
            row(label, "-", r)
        return

    print(f"\n{'what':46} {'c':>3} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'req/s':>8}")
    for engine in args.engines:
        r = results[engine]
        for label, key in [
            ("GET /api/health/, anonymous (the floor)", "floor"),
            ("GET /api/, bearer", "root"),
            ("GET /api/dataset/ID/, bearer", "dataset"),
            (f"POST /api/test/, 1 image, {engine}", "predict"),
        ]:
            for concurrency in (1, 8, 32):
                row(label, concurrency, r[f"{key}_c{concurrency}"])
        row(f"POST /api/test/, batch of 32, {engine}", 1, r["batch32_c1"])
        row(f"  the same turns, 1 image, {engine}", 1, r["single_c1"])
    print("\nin process, one 64×64 image (ONNX Runtime serving):")
    for label, r in results["breakdown"].items():
        row(label, "-", r)
    for label, r in results["models"].items():
        row(label, "-", r)

    print(
        f"\n{'engine':12} {'RSS 1 model (start/after load) MB':>36} {'RSS 5 models MB':>18} {'cold ready s':>13} "
        f"{'first ms':>9} {'second ms':>10} {'TF':>3}"
    )
    for engine in args.engines:
        r = results[engine]
        start = "/".join(f"{value:.0f}" for value in r["rss_mb_1_model_at_start"])
        after = "/".join(f"{value:.0f}" for value in r["rss_mb_1_model_after_load"])
        five = "/".join(f"{value:.0f}" for value in r["rss_mb_5_models"])
        print(
            f"{engine:12} {start + ' ; ' + after:>36} {five:>18} {r['cold_worker_ready_s']:13.2f} "
            f"{r['cold_first_prediction_ms']:9.1f} {r['cold_second_prediction_ms']:10.1f} "
            f"{r['tensorflow_in_workers']:3.0f}"
        )
        print(f"{'':12} model loads: {r['loads_by_trigger']}")

    onnx = results[args.engines[0]]
    floor = onnx["floor_c1"]["p50_ms"]
    goals = {
        "bearer GET /api/ p50 over the floor, ms (goal <= 1.5)": onnx["root_c1"]["p50_ms"] - floor,
        "bearer GET /api/dataset/ID/ over the floor, ms (goal <= 3)": onnx["dataset_c1"]["p50_ms"] - floor,
        "a prediction's p50 over the floor, ms (goal <= 3)": onnx["predict_c1"]["p50_ms"] - floor,
        "8 predicting clients' throughput vs the floor's (goal >= 0.5)": onnx["predict_c8"]["per_second"]
        / onnx["floor_c8"]["per_second"],
        "batch-32 images/s vs single requests (goal >= 10)": onnx["batch32_c1"]["per_second"]
        * 32
        / onnx["single_c1"]["per_second"],
        "largest worker RSS with 5 models, MB (goal <= 250)": max(onnx["rss_mb_5_models"]),
        "a new worker's first prediction, s (goal <= 0.5)": onnx["cold_first_prediction_ms"] / 1000,
        "speed-up over the original's way (goal >= 30)": results["models"]["original_way"]["p50_ms"]
        / onnx["predict_c1"]["p50_ms"],
    }
    results["goals"] = goals
    print()
    for label, value in goals.items():
        print(f"{label:56} {value:8.2f}")
    print(f"\nwritten: {write_results('serving', results)}")


if __name__ == "__main__":
    main()
