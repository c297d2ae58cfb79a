"""No web request imports TensorFlow: a real gunicorn worker is walked through every admin page and
API route (and a prediction), then its memory map is read for TensorFlow's library."""

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

# Makes a dataset with images and a current run served by ONNX Runtime, a logged-in session, and
# prints every GET route of the project with each of its parameters filled (every first object has
# pk 1 in a new database).
SETUP = r"""
import io, json, re, sys
import django
django.setup()
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.urls import URLPattern, URLResolver, get_resolver
from datasets.models import DataSet
from datasets.services import dataset_import_zip
from tests.images import colour_zip
from tests.runs import install_model

user = User.objects.create_superuser("walker", password="a-long-pass-phrase-9")
dataset = DataSet.objects.create(name="Colours", image_size=16)
dataset_import_zip(dataset=dataset, file=io.BytesIO(colour_zip(3)))
run = install_model(dataset, sys.argv[1], labels=["blue", "green", "red"])
session = SessionStore()
session.update({"_auth_user_id": str(user.pk), "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
                "_auth_user_hash": user.get_session_auth_hash()})
session.create()


def walk(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            yield prefix + str(pattern.pattern)


def filled(route):
    route = route.replace("^", "").replace("$", "")
    if "(?P<format>" in route or route.startswith("media/"):
        return None
    route = re.sub(r"\(\?P<app_label>[^)]*\)", "management", route)
    route = re.sub(r"\(\?P<\w+>[^)]*\)", "1", route)
    route = re.sub(r"<(?:\w+:)?\w+>", "1", route)
    return None if re.search(r"[\\()?*+\[\]|]", route) else "/" + route


routes = sorted({route for route in map(filled, walk(get_resolver().url_patterns)) if route is not None})
print(json.dumps({"session": session.session_key, "dataset": dataset.pk, "routes": routes}))
"""


def get(port: int, path: str, headers: dict) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_no_admin_page_api_route_or_prediction_loads_tensorflow_in_a_gunicorn_worker(tmp_path, colour_model_file):
    port = free_port()
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("KERASUI_", "DATABASE_URL"))},
        "KERASUI_DATA_DIR": str(tmp_path),
        "KERASUI_BIND": f"127.0.0.1:{port}",
        "KERASUI_WORKERS": "1",
        "KERASUI_TRAINING_BACKEND": "none",
        "KERASUI_THROTTLE_API": "none",
        "DJANGO_SETTINGS_MODULE": "kerasui.settings",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        # Keras' cache as a new user has it: no weights downloaded yet.
        "KERAS_HOME": str(tmp_path / "keras"),
    }
    environment.pop("PYTEST_CURRENT_TEST", None)
    beside = {key: value for key, value in environment.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=beside, check=True)
    setup = subprocess.run(
        [sys.executable, "-c", SETUP, str(colour_model_file)],
        cwd=ROOT,
        env=beside,
        check=True,
        capture_output=True,
        text=True,
    )
    walk = json.loads(setup.stdout.strip().splitlines()[-1])
    log = tmp_path / "gunicorn.log"
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py", "kerasui.wsgi"],
        cwd=ROOT,
        env=environment,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if get(port, "/api/health/", {}) == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "gunicorn did not answer within 120 s"
            time.sleep(0.3)
        (worker,) = psutil.Process(server.pid).children()
        assert "libtensorflow" not in Path(f"/proc/{worker.pid}/maps").read_text()

        cookie = {"Cookie": f"sessionid={walk['session']}"}
        answers = {}
        for route in walk["routes"]:
            accept = "application/json" if route.startswith(("/api/", "/o/")) else "text/html"
            answers[route] = get(port, route, {**cookie, "Accept": accept})
        image = base64.b64encode(colour_image("red", seed=3)).decode()
        # A session's POST needs a CSRF token: the prediction goes with Basic authentication.
        basic = "Basic " + base64.b64encode(b"walker:a-long-pass-phrase-9").decode()
        prediction = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/test/",
            data=json.dumps({"dataset": walk["dataset"], "image": image}).encode(),
            headers={"Authorization": basic, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(prediction, timeout=120) as response:
            assert json.loads(response.read())["result"] == "red"

        # The walk reached the pages that matter, logged in (which method each route answers is
        # tests/api's concern, not this test's).
        for route in ("/admin/management/dataset/1/change/", "/api/starting-points/", "/api/dataset/1/"):
            assert answers.get(route) == 200, (route, answers.get(route))
        assert sum(status == 200 for status in answers.values()) >= 30, answers
        maps = Path(f"/proc/{worker.pid}/maps").read_text()
        assert "onnxruntime" in maps
        loaded = sorted({line.split()[-1] for line in maps.splitlines() if re.search(r"tensorflow|libtf", line)})
        assert not loaded, loaded
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
