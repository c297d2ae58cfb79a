"""What the benchmarks share: percentiles, waiting for gunicorn, a database with a bearer token, and
writing bench/results/<name>.json."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def wait_for(port: int, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/api/health/")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("gunicorn did not answer /api/health/ in time")


def database_with_token(data_dir: Path, username: str) -> str:
    """Set Django up on a fresh data folder, migrate, and return a bearer token (read, write, predict)
    of a new superuser `username`."""
    os.environ["KERASUI_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kerasui.settings")
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.utils import timezone
    from oauth2_provider.models import get_access_token_model, get_application_model

    call_command("migrate", verbosity=0)
    admin = User.objects.create_superuser(username, password=secrets.token_urlsafe(16))
    Application = get_application_model()
    application = Application.objects.create(
        name=username,
        user=admin,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
    )
    token = get_access_token_model().objects.create(
        user=admin,
        application=application,
        token=secrets.token_urlsafe(24),
        expires=timezone.now() + timedelta(hours=2),
        scope="read write predict",
    )
    return token.token


def write_results(name: str, results: dict) -> Path:
    out = ROOT / "bench" / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    return out
