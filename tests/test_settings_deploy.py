"""`manage.py check --deploy`: only the TLS warnings, and none once KERASUI_HTTPS is set."""

import os
import re
import secrets
import subprocess
import sys

from django.conf import settings as django_settings

TLS_WARNINGS = {"security.W004", "security.W008", "security.W012", "security.W016"}


def deploy_check(tmp_path, **extra: str) -> tuple[set[str], str]:
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("KERASUI_", "DJANGO_"))},
        "KERASUI_DATA_DIR": str(tmp_path),
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(60),
        **extra,
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=django_settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    return set(re.findall(r"^\?: \(([\w.]+)\)", output, flags=re.MULTILINE)), output


def test_without_tls_only_the_tls_warnings_remain(tmp_path):
    warnings, output = deploy_check(tmp_path)
    assert warnings == TLS_WARNINGS, output


def test_kerasui_https_switches_them_all_on(tmp_path):
    warnings, output = deploy_check(tmp_path, KERASUI_HTTPS="true")
    assert warnings == set(), output
    assert "no issues" in output


def test_https_settings_redirect_and_mark_cookies_secure(client, settings, db):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_REDIRECT_EXEMPT = [r"^api/health/$"]
    assert client.get("/api/dataset/").status_code == 301
    assert client.get("/api/health/").status_code == 200
