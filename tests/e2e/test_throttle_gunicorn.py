"""A flood against two real gunicorn workers (the project's configuration) is stopped at the configured
rate: the workers lease counts from the shared database cache and count them down in memory."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings as django_settings

from api.throttles import lease_size
from tests.e2e.test_gunicorn import free_port

ROOT = Path(django_settings.BASE_DIR)
RATE = 300  # a day: no new window starts mid-test (bar midnight UTC)
TOKEN = """
import django
django.setup()
from datetime import timedelta
from django.contrib.auth.models import User
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_application_model
user = User.objects.create_superuser("flooder", password="a-long-pass-phrase-9")
Application = get_application_model()
application = Application.objects.create(name="flood", user=user, client_type="confidential",
                                         authorization_grant_type="client-credentials")
get_access_token_model().objects.create(user=user, application=application, token="flood-token",
                                        expires=timezone.now() + timedelta(hours=1), scope="read")
"""


def get(port: int, path: str, headers: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as error:
        error.read()
        return error.code, dict(error.headers)


def test_a_flood_is_refused_with_retry_after_beyond_the_rate_across_two_gunicorn_workers(tmp_path):
    port = free_port()
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("KERASUI_", "DATABASE_URL"))},
        "KERASUI_DATA_DIR": str(tmp_path),
        "KERASUI_BIND": f"127.0.0.1:{port}",
        "KERASUI_WORKERS": "2",
        "KERASUI_TRAINING_BACKEND": "none",
        "KERASUI_THROTTLE_API": f"{RATE}/day",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "KERASUI_ACCESS_LOG": str(tmp_path / "access.log"),
    }
    environment.pop("PYTEST_CURRENT_TEST", None)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v", "0"], cwd=ROOT, env=environment, check=True)
    subprocess.run([*manage, "shell", "-c", TOKEN], cwd=ROOT, env=environment, check=True)
    access_log = tmp_path / "access.log"
    log = tmp_path / "gunicorn.log"
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py", "kerasui.wsgi"]
        + ["--access-logformat", "%(p)s %(s)s %(U)s"],
        cwd=ROOT,
        env=environment,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    answers: list[tuple[int, dict]] = []
    lock = threading.Lock()

    def flood(requests: int) -> None:
        # A new connection each time, so that both workers take their share.
        mine = [
            get(port, "/api/", {"Authorization": "Bearer flood-token", "Connection": "close"}) for _ in range(requests)
        ]
        with lock:
            answers.extend(mine)

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if get(port, "/api/health/", {})[0] == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "gunicorn did not answer within 120 s"
            time.sleep(0.3)
        clients = [threading.Thread(target=flood, args=(60,)) for _ in range(8)]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)

    allowed = sum(status == 200 for status, _ in answers)
    refused = [headers for status, headers in answers if status == 429]
    assert allowed + len(refused) == 480, sorted({status for status, _ in answers})
    # Never more than the rate; fewer by at most the requests the other worker leased and did not use.
    assert RATE - (lease_size(RATE) - 1) <= allowed <= RATE, allowed
    assert all(0 < int(headers["Retry-After"]) <= 24 * 3600 for headers in refused)
    served = [line.split() for line in access_log.read_text().splitlines() if re.match(r"<\d+> \d+ /api/$", line)]
    pids = {pid for pid, status, _ in served if status == "200"}
    assert len(pids) == 2, access_log.read_text()[:500]
    assert "Traceback" not in log.read_text()
