"""Bounded, loopback-only hostile traffic against a real gunicorn: schemathesis over every operation
of the schema, and concurrent predictions and uploads (the long version is bench/load.py)."""

import json
import re
import subprocess
import sys
from pathlib import Path

from bench.load import load_test
from tests.e2e.test_crashes import Server, import_zip
from tests.images import colour_zip

ROOT = Path(__file__).resolve().parents[2]


def bearer_token(server: Server) -> str:
    """A client-credentials application's token acting as the admin, with every scope."""
    code = (
        "import secrets; from datetime import timedelta; from django.utils import timezone; "
        "from django.contrib.auth.models import User; "
        "from oauth2_provider.models import AccessToken, Application; "
        "admin = User.objects.get(username='admin'); "
        "app = Application.objects.create(name='fuzz', user=admin, client_type='confidential', "
        "authorization_grant_type='client-credentials'); "
        "token = AccessToken.objects.create(user=admin, application=app, token=secrets.token_urlsafe(24), "
        "expires=timezone.now() + timedelta(hours=1), scope='read write predict'); "
        "print(token.token)"
    )
    completed = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=server.environment,
        check=True,
        capture_output=True,
        text=True,
    )
    return completed.stdout.strip().splitlines()[-1]


def trained_server(tmp_path: Path) -> tuple[Server, int]:
    server = Server(tmp_path)
    server.start()
    options = {"name": "Colours", "image_size": 16, "epochs": 2, "batch_size": 8}
    status, dataset = server.request("POST", "/api/dataset/", json.dumps(options).encode())
    assert status == 201
    import_zip(server, dataset["id"], colour_zip(6))
    trained = subprocess.run(
        [sys.executable, "manage.py", "train", str(dataset["id"])],
        cwd=ROOT,
        env=server.environment,
        capture_output=True,
        text=True,
    )
    assert trained.returncode == 0, trained.stderr
    return server, dataset["id"]


def test_schemathesis_finds_no_server_error_in_any_operation(tmp_path):
    server, _ = trained_server(tmp_path)
    try:
        token = bearer_token(server)
        completed = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"http://127.0.0.1:{server.port}/api/schema/",
                "--header",
                f"Authorization: Bearer {token}",
                "--checks",
                "not_a_server_error",
                "--phases",
                "examples,fuzzing",
                "--max-examples",
                "25",
                "--seed",
                "1",
                "--workers",
                "2",
                "--request-timeout",
                "60",
                "--exclude-path-regex",
                "^/api/users/",  # deleting or demoting the token's own user is refused, others are not
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=900,
        )
        output = completed.stdout + completed.stderr
        assert completed.returncode == 0, output[-6000:]
        cases = re.search(r"(\d+) generated", output)
        assert cases and int(cases.group(1)) >= 300 and "failed" not in output, output[-3000:]
        print(f"schemathesis: {cases.group(0)} test cases, no server error")
    finally:
        server.kill()
    log = (tmp_path / "gunicorn.log").read_text()
    assert "Traceback" not in log and "database is locked" not in log


def test_concurrent_predictions_and_uploads_for_ten_seconds_have_no_error(tmp_path):
    server, dataset = trained_server(tmp_path)
    try:
        token = bearer_token(server)
        result = load_test(
            port=server.port, token=token, dataset=dataset, seconds=10, predict_clients=4, upload_clients=2
        )
    finally:
        server.kill()
    assert result["errors"] == [], result["errors"][:5]
    assert result["predict"]["count"] > 20 and result["upload"]["count"] > 5
    log = (tmp_path / "gunicorn.log").read_text()
    assert "database is locked" not in log and "Traceback" not in log
