"""Real gunicorn workers serve predictions with ONNX Runtime and never import TensorFlow; they load a
newly current run by themselves (no request pays for it), and /metrics shows all of it."""

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
from django.conf import settings as django_settings

from tests.e2e.test_gunicorn import free_port
from tests.images import colour_image

ROOT = Path(django_settings.BASE_DIR)
PASSWORD = "operator-pw-42"
AUTH = "Basic " + base64.b64encode(f"operator:{PASSWORD}".encode()).decode()

SETUP = """
import django, sys
django.setup()
from django.contrib.auth.models import User
from datasets.models import DataSet
from tests.runs import install_model
User.objects.create_superuser("operator", password=sys.argv[2])
dataset = DataSet.objects.create(name="Colours", image_size=16)
print(dataset.pk, install_model(dataset, sys.argv[1], labels=["blue", "green", "red"]).pk)
"""
NEW_VERSION = """
import django, sys
django.setup()
from datasets.models import DataSet
from tests.runs import install_model
print(install_model(DataSet.objects.get(name="Colours"), sys.argv[1], labels=["blue", "green", "red"]).pk)
"""


def request(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": AUTH, "Content-Type": "application/json", "Accept": "application/json"}
    call = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(call, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def metric(text: str, name: str) -> float:
    """The sum of a series over its labels (e.g. over the workers' pids)."""
    return sum(float(value) for value in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def metric_with(text: str, name: str, labels: str) -> float:
    return sum(float(value) for value in re.findall(rf"^{re.escape(name)}{{{labels}}} (\S+)$", text, re.M))


def test_gunicorn_workers_serve_with_onnx_runtime_without_tensorflow_and_follow_a_new_version(
    tmp_path, colour_model_file
):
    port = free_port()
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("KERASUI_", "DATABASE_URL"))},
        "KERASUI_DATA_DIR": str(tmp_path),
        "KERASUI_BIND": f"127.0.0.1:{port}",
        "KERASUI_WORKERS": "2",
        "KERASUI_TRAINING_BACKEND": "none",
        "KERASUI_SERVING_POLL_SECONDS": "0.5",
        "DJANGO_SETTINGS_MODULE": "kerasui.settings",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    environment.pop("PYTEST_CURRENT_TEST", None)

    # Commands run beside the server, not in it: their processes add nothing to the workers' metrics.
    beside = {key: value for key, value in environment.items() if key != "PROMETHEUS_MULTIPROC_DIR"}

    def script(code: str, *arguments: str) -> str:
        command = [sys.executable, "-c", code, *arguments]
        return subprocess.run(command, cwd=ROOT, env=beside, check=True, capture_output=True, text=True).stdout.strip()

    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=beside, check=True)
    dataset, first = map(int, script(SETUP, str(colour_model_file), PASSWORD).split())
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py", "kerasui.wsgi"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                status, _ = request(port, "GET", "/api/health/")
                break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()[-3000:]
                assert time.monotonic() < deadline, "gunicorn did not answer within 120 s"
                time.sleep(0.3)
        assert status == 200
        image = base64.b64encode(colour_image("red", seed=8)).decode()
        for _ in range(6):
            status, body = request(port, "POST", "/api/test/", {"image": image, "dataset": dataset})
            assert status == 200, body
            assert json.loads(body)["result"] == "red" and json.loads(body)["run"] == first
        status, body = request(port, "GET", f"/api/dataset/{dataset}/model/metadata/")
        assert status == 200 and json.loads(body)["engine"] == "onnxruntime"

        workers = psutil.Process(server.pid).children()
        assert len(workers) == 2
        # Not one worker has TensorFlow's library mapped, nor the module imported.
        for worker in workers:
            maps = Path(f"/proc/{worker.pid}/maps").read_text()
            assert "onnxruntime" in maps and "libtensorflow" not in maps
        status, text = request(port, "GET", "/metrics")
        text = text.decode()
        assert status == 200
        assert metric(text, "kerasui_tensorflow_imported") == 0
        assert len(re.findall(r"^kerasui_tensorflow_imported\{", text, re.M)) == 2
        # Both workers loaded the model when they started; no request waited for a load.
        assert metric_with(text, "kerasui_model_loads_total", 'engine="onnxruntime",trigger="start"') == 2
        assert metric_with(text, "kerasui_model_loads_total", 'engine="onnxruntime",trigger="request"') == 0
        assert metric_with(text, "kerasui_predicted_images_total", 'engine="onnxruntime"') == 6
        assert metric(text, "kerasui_cached_models") == 2
        assert 'kerasui_training_runs{status="queued"} 0.0' in text

        # A new version becomes current (as after a training): each worker loads it by itself.
        second = int(script(NEW_VERSION, str(colour_model_file)))
        deadline = time.monotonic() + 120
        while metric_with(text, "kerasui_model_loads_total", 'engine="onnxruntime",trigger="watch"') < 2:
            assert time.monotonic() < deadline, "the workers did not load the new version within 120 s"
            time.sleep(0.3)
            text = request(port, "GET", "/metrics")[1].decode()
        for _ in range(6):
            status, body = request(port, "POST", "/api/test/", {"image": image, "dataset": dataset})
            assert status == 200 and json.loads(body)["run"] == second
        text = request(port, "GET", "/metrics")[1].decode()
        assert metric_with(text, "kerasui_model_loads_total", 'engine="onnxruntime",trigger="request"') == 0
        assert metric(text, "kerasui_tensorflow_imported") == 0
        for worker in workers:
            assert "libtensorflow" not in Path(f"/proc/{worker.pid}/maps").read_text()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
