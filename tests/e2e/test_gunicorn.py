"""gunicorn serves the app as the README says: the API, the docs and static files (WhiteNoise)."""

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from django.conf import settings as django_settings

ROOT = Path(django_settings.BASE_DIR)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_gunicorn_serves_the_api_docs_and_static_files(tmp_path):
    port = free_port()
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("KERASUI_", "DATABASE_URL"))},
        "KERASUI_DATA_DIR": str(tmp_path),
        "KERASUI_BIND": f"127.0.0.1:{port}",
        "KERASUI_WORKERS": "1",
        "KERASUI_TRAINING_BACKEND": "none",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=environment, check=True)
    gunicorn = Path(sys.executable).parent / "gunicorn"
    server = subprocess.Popen(
        [str(gunicorn), "-c", "gunicorn.conf.py", "kerasui.wsgi"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, body = get(f"http://127.0.0.1:{port}/api/health/")
                break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()[-2000:]
                assert time.monotonic() < deadline, "gunicorn did not answer within 60 s"
                time.sleep(0.3)
        assert status == 200 and b'"ok"' in body
        assert get(f"http://127.0.0.1:{port}/api/dataset/")[0] == 401
        assert get(f"http://127.0.0.1:{port}/api/docs/")[0] == 200
        status, css = get(f"http://127.0.0.1:{port}/static/admin/css/base.css")
        assert status == 200 and b"body" in css
        assert get(f"http://127.0.0.1:{port}/db.sqlite3")[0] == 404
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def call(port: int, path: str, *, basic: tuple[str, str] | None = None, form: dict | None = None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if basic:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(basic).encode()).decode())
    if form is not None:
        request.data = urllib.parse.urlencode(form).encode()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


class HeldWorker:
    """A request whose body has not all arrived: the sync worker that took it waits inside the app
    for the rest, so the other worker serves everything else until it is released."""

    def __init__(self, port: int, name: str):
        credentials = base64.b64encode(b"holder:the-right-pass-phrase-7").decode()
        self.body = json.dumps({"name": name}).encode()
        head = (
            f"POST /api/dataset/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {credentials}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\nConnection: close\r\n\r\n"
        )
        self.connection = socket.create_connection(("127.0.0.1", port))
        self.connection.sendall(head.encode() + self.body[:1])

    def release(self) -> None:
        self.connection.sendall(self.body[1:])
        status_line = self.connection.recv(4096).split(b"\r\n", 1)[0]
        self.connection.close()
        assert b" 201 " in status_line, status_line


def test_lockouts_and_request_rates_are_counted_across_two_gunicorn_workers(tmp_path):
    """Two worker processes, each served half the requests in turn: the counts are the database's."""
    port = free_port()
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("KERASUI_", "DATABASE_URL"))},
        "KERASUI_DATA_DIR": str(tmp_path),
        "KERASUI_BIND": f"127.0.0.1:{port}",
        "KERASUI_WORKERS": "2",
        "KERASUI_TRAINING_BACKEND": "none",
        "KERASUI_THROTTLE_API": "4/day",  # counted per day: no new window starts mid-test (bar midnight UTC)
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "DJANGO_SUPERUSER_PASSWORD": "the-right-pass-phrase-7",
    }
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v", "0"], cwd=ROOT, env=environment, check=True)
    for username in ("boss", "reader", "holder"):
        subprocess.run(
            [*manage, "createsuperuser", "--noinput", "--username", username, "--email", "a@example.com"],
            cwd=ROOT,
            env=environment,
            check=True,
            capture_output=True,
        )
    application = (
        "from oauth2_provider.models import Application; from django.contrib.auth.models import User; "
        "Application.objects.create(name='script', client_id='script-id', client_secret='script-secret', "
        "user=User.objects.get(username='boss'), client_type='confidential', authorization_grant_type='password')"
    )
    subprocess.run([*manage, "shell", "-c", application], cwd=ROOT, env=environment, check=True)
    access_log = tmp_path / "access.log"
    empty_config = tmp_path / "gunicorn.conf.py"
    empty_config.write_text("")
    gunicorn = Path(sys.executable).parent / "gunicorn"
    server = subprocess.Popen(
        # Sync workers serve one request at a time, so a held request pins one of them. An empty
        # configuration file instead of gunicorn.conf.py (whose gthread workers would take more).
        [str(gunicorn), "-c", str(empty_config), "--bind", f"127.0.0.1:{port}", "--workers", "2"]
        + ["--worker-class", "sync", "--access-logfile", str(access_log)]
        + ["--access-logformat", "%(p)s %(s)s %(m)s %(U)s", "kerasui.wsgi"],
        cwd=ROOT,
        env=environment,
        stdout=(tmp_path / "gunicorn.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if get(f"http://127.0.0.1:{port}/api/health/")[0] == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None, (tmp_path / "gunicorn.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "gunicorn did not answer within 60 s"
            time.sleep(0.3)

        first = HeldWorker(port, "held-1")
        wrong = [call(port, "/api/dataset/", basic=("boss", f"guess-{n}")) for n in range(5)]
        reads = [call(port, "/api/dataset/", basic=("reader", "the-right-pass-phrase-7")) for _ in range(2)]
        second = HeldWorker(port, "held-2")  # taken by the worker that served the above
        first.release()
        wrong += [call(port, "/api/dataset/", basic=("boss", f"guess-{n}")) for n in range(5, 10)]
        reads += [call(port, "/api/dataset/", basic=("reader", "the-right-pass-phrase-7")) for _ in range(3)]
        second.release()

        # Nine failures answered 401; the tenth, counted with the other worker's five, locks the name.
        assert wrong == [401] * 9 + [429], wrong
        assert call(port, "/api/dataset/", basic=("boss", "the-right-pass-phrase-7")) == 429
        token = {"grant_type": "password", "username": "boss", "password": "the-right-pass-phrase-7"}
        token.update(client_id="script-id", client_secret="script-secret")
        assert call(port, "/o/token/", form=token) == 429
        # Four requests a day for the reader: two on one worker, two on the other, then 429.
        assert reads == [200, 200, 200, 200, 429], reads
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    served = [
        line.split() for line in access_log.read_text().splitlines() if line.split()[2:] == ["GET", "/api/dataset/"]
    ]
    first_pids = {pid for pid, *_ in served[:7]}
    second_pids = {pid for pid, *_ in served[7:15]}
    assert len(first_pids) == 1 and len(second_pids) == 1 and first_pids != second_pids, served
    assert "Traceback" not in (tmp_path / "gunicorn.log").read_text()
