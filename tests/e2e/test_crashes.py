"""The real thing, killed: gunicorn SIGKILLed (with its whole process group, as a service manager
stops it) during a zip import and during a training run, then started again."""

import base64
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
from django.conf import settings as django_settings
from PIL import Image

from tests.e2e.test_gunicorn import free_port
from tests.images import colour_zip

ROOT = Path(django_settings.BASE_DIR)
AUTH = "Basic " + base64.b64encode(b"admin:a-long-pass-phrase-9").decode()


class Server:
    """gunicorn on a throw-away data folder, started and killed at will."""

    def __init__(self, data: Path, runner: str = "none"):
        self.port = free_port()
        self.data = data
        self.environment = {
            **{key: value for key, value in os.environ.items() if not key.startswith(("KERASUI_", "DATABASE_URL"))},
            "KERASUI_DATA_DIR": str(data),
            "KERASUI_BIND": f"127.0.0.1:{self.port}",
            "KERASUI_WORKERS": "1",
            "KERASUI_TRAINING_BACKEND": runner,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "DJANGO_SUPERUSER_PASSWORD": "a-long-pass-phrase-9",
        }
        self.process: subprocess.Popen | None = None
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "-v", "0"], cwd=ROOT, env=self.environment, check=True)
        subprocess.run(
            [*manage, "createsuperuser", "--noinput", "--username", "admin", "--email", "a@example.com"],
            cwd=ROOT,
            env=self.environment,
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        gunicorn = Path(sys.executable).parent / "gunicorn"
        self.process = subprocess.Popen(
            [str(gunicorn), "-c", "gunicorn.conf.py", "kerasui.wsgi"],
            cwd=ROOT,
            env=self.environment,
            stdout=(self.data / "gunicorn.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.request("GET", "/api/health/")[0] == 200:
                    return
            except OSError:
                pass
            assert self.process.poll() is None, "gunicorn exited"
            assert time.monotonic() < deadline, "gunicorn did not answer within 60 s"
            time.sleep(0.3)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"):
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, method=method)
        request.add_header("Authorization", AUTH)
        if body is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def database(self) -> sqlite3.Connection:
        return sqlite3.connect(self.data / "db.sqlite3")


def noise_zip(count: int) -> bytes:
    generator = np.random.default_rng(0)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for index in range(count):
            image = io.BytesIO()
            pixels = generator.integers(0, 256, (96, 96, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(image, "PNG", compress_level=0)
            archive.writestr(f"{'ab'[index % 2]}/{index}.png", image.getvalue())
    return buffer.getvalue()


def multipart(name: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = "kerasui-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/zip\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def import_zip(server: "Server", dataset_id: int, data: bytes) -> dict:
    """Upload a zip (the API answers 202 with its import job) and run that job's process to its end, as
    the job runner would; the job as it ended."""
    deadline = time.monotonic() + 60
    while True:  # a lost import is failed by the thread runner's watchdog within seconds; until then, 409
        status, job = server.request("POST", f"/api/dataset/{dataset_id}/upload/", *multipart("file", "z.zip", data))
        if status != 409 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status == 202, job
    if server.environment["KERASUI_TRAINING_BACKEND"] == "none":
        subprocess.run(
            [sys.executable, "manage.py", "job", "import", str(job["id"])],
            cwd=ROOT,
            env=server.environment,
            check=True,
            capture_output=True,
        )
    deadline = time.monotonic() + 120
    while (ended := server.request("GET", f"/api/importjob/{job['id']}/")[1])["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, ended
        time.sleep(0.2)
    assert ended["status"] == "succeeded", ended
    return ended


def test_killing_a_zip_imports_process_leaves_no_orphan_and_no_row_after_a_restart(tmp_path):
    server = Server(tmp_path)
    server.start()
    try:
        status, dataset = server.request("POST", "/api/dataset/", json.dumps({"name": "Noise"}).encode())
        assert status == 201, dataset
        folder = tmp_path / "media" / "datasets" / str(dataset["id"])
        body, content_type = multipart("file", "noise.zip", noise_zip(2500))
        status, job = server.request("POST", f"/api/dataset/{dataset['id']}/upload/", body, content_type)
        assert status == 202, job
        # The import runs in its own process (`manage.py job import ID`, as the job runner starts it).
        importer = subprocess.Popen(
            [sys.executable, "manage.py", "job", "import", str(job["id"])],
            cwd=ROOT,
            env=server.environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while not folder.is_dir() or len(list(folder.iterdir())) < 100:
            assert time.monotonic() < deadline, "the import never started writing files"
            assert importer.poll() is None, "the import ended before it could be killed"
            time.sleep(0.02)
        importer.kill()
        importer.wait(30)
        server.kill()

        written = len(list(folder.iterdir()))
        assert 100 <= written < 2500  # killed halfway: files on disk, rows never committed
        assert list((tmp_path / "media" / "journal").glob("*.txt"))
        with server.database() as database:
            assert database.execute("select count(*) from management_datasetitem").fetchone() == (0,)

        # Starting deletes what the killed import left; its runner's watchdog fails the lost import job.
        server.environment["KERASUI_TRAINING_BACKEND"] = "thread"
        server.start()
        left = [path for path in folder.rglob("*") if path.is_file()]  # images and their thumbnails
        assert left == [], (tmp_path / "gunicorn.log").read_text()[-3000:]
        assert not list((tmp_path / "media" / "journal").glob("*.txt"))
        with server.database() as database:
            assert database.execute("pragma integrity_check").fetchone() == ("ok",)
        assert import_zip(server, dataset["id"], colour_zip(3))["report"]["added"] == 9  # and it works as before
    finally:
        if server.process and server.process.poll() is None:
            server.kill()


def test_killing_the_server_during_training_marks_the_run_interrupted_and_it_resumes_after_a_restart(tmp_path):
    server = Server(tmp_path, runner="thread")
    server.start()
    try:
        options = {"name": "Colours", "image_size": 16, "epochs": 30, "batch_size": 8, "early_stopping_patience": 0}
        status, dataset = server.request("POST", "/api/dataset/", json.dumps(options).encode())
        assert status == 201, dataset
        import_zip(server, dataset["id"], colour_zip(10))
        status, run = server.request("POST", f"/api/dataset/{dataset['id']}/train/")
        assert status == 202, run
        deadline = time.monotonic() + 120
        while len(server.request("GET", f"/api/trainingrun/{run['id']}/")[1]["history"]) < 2:
            assert time.monotonic() < deadline, "training never reached epoch 2"
            time.sleep(0.2)
        server.kill()  # the web server and its training process with it

        server.start()
        deadline = time.monotonic() + 30
        while (detail := server.request("GET", f"/api/trainingrun/{run['id']}/")[1])["status"] == "running":
            assert time.monotonic() < deadline, "the run stayed running after the restart"
            time.sleep(0.3)
        assert detail["status"] == "failed" and detail["interrupted"] and detail["resumable"]
        assert detail["error"].startswith("interrupted: the training process stopped before it finished")
        completed = len(detail["history"])

        status, _ = server.request("POST", f"/api/trainingrun/{run['id']}/resume/")
        assert status == 202
        deadline = time.monotonic() + 300
        while (detail := server.request("GET", f"/api/trainingrun/{run['id']}/")[1])["status"] in {"queued", "running"}:
            assert time.monotonic() < deadline, "the resumed run did not finish"
            time.sleep(0.5)
        assert detail["status"] == "succeeded", detail["error"]
        assert [row["epoch"] for row in detail["history"]] == list(range(1, 31))
        assert completed >= 2
        with server.database() as database:
            assert database.execute("pragma integrity_check").fetchone() == ("ok",)
    finally:
        if server.process and server.process.poll() is None:
            server.kill()
