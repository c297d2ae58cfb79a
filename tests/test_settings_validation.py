"""Settings refuse wrong values at start (kerasui/config.py): one line naming the variable, no traceback."""

import os
import re
import subprocess
import sys

import pytest
from django.conf import settings as django_settings

from kerasui import config


def manage_check(tmp_path, **extra: str) -> subprocess.CompletedProcess:
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("KERASUI_", "DJANGO_"))},
        "KERASUI_DATA_DIR": str(tmp_path),
        **extra,
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=django_settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("variable", "value", "accepts"),
    [
        ("KERASUI_HTTPS", "ture", "true/false"),
        ("DATABASE_CONN_MAX_AGE", "abc", "a whole number"),
        ("KERASUI_MAX_CONCURRENT_RUNS", "-1", "at least 0"),
        ("KERASUI_SERVING_TOLERANCE", "tiny", "a number"),
        ("KERASUI_TRAINING_BACKEND", "celry", "one of thread, celery, none"),
        ("CELERY_BROKER_URL", "localhost:6379", "redis://"),
        ("KERASUI_WEIGHTS_BASE_URL", "ftp://mirror/", "https://"),
        ("DATABASE_URL", "postgress://db/kerasui", "postgres://"),
        ("KERASUI_THROTTLE_API", "lots", "1200/min"),
    ],
)
def test_a_wrong_value_stops_manage_py_with_one_line_naming_the_variable(tmp_path, variable, value, accepts):
    result = manage_check(tmp_path, **{variable: value})

    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"KerasUI cannot start: {variable}={value!r} is not accepted: use ")
    assert accepts in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_good_values_in_every_spelling_start(tmp_path):
    result = manage_check(
        tmp_path,
        KERASUI_HTTPS="off",
        DATABASE_CONN_MAX_AGE=" 0 ",
        KERASUI_TRAINING_BACKEND="NONE",
        CELERY_BROKER_URL="redis://redis:6379/0",
        KERASUI_REDIS_URL="",
        KERASUI_LOG_LEVEL="warning",
    )

    assert result.returncode == 0, result.stderr


def test_the_readers_parse_and_refuse_in_process(monkeypatch):
    monkeypatch.setenv("KERASUI_TEST_FLAG", "Yes")
    monkeypatch.setenv("KERASUI_TEST_COUNT", "12")
    assert config.boolean("KERASUI_TEST_FLAG", False) is True
    assert config.integer("KERASUI_TEST_COUNT", 1) == 12

    monkeypatch.setenv("KERASUI_TEST_FLAG", "ture")
    with pytest.raises(config.SettingsError, match=r"^KERASUI_TEST_FLAG='ture' is not accepted"):
        config.boolean("KERASUI_TEST_FLAG", False)

    monkeypatch.setenv("KERASUI_TEST_FLAG", "  ")
    assert config.boolean("KERASUI_TEST_FLAG", True) is True  # blank: the default


def test_the_readme_configuration_table_lists_every_declared_variable():
    readme = (django_settings.BASE_DIR / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    declared = {name for name in config.DECLARED if not name.startswith("KERASUI_TEST_")}

    assert declared, "the settings declared nothing"
    assert declared - listed == set()


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "celery", "-A", "kerasui", "worker", "-Q", "training", "-c", "1"],
        ["-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", "127.0.0.1:0", "kerasui.wsgi"],
    ],
    ids=["celery-worker", "gunicorn"],
)
def test_a_wrong_value_stops_the_servers_with_one_line(tmp_path, command):
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("KERASUI_", "DJANGO_"))},
        "KERASUI_DATA_DIR": str(tmp_path),
        "KERASUI_HTTPS": "ture",
    }
    result = subprocess.run(
        [sys.executable, *command],
        cwd=django_settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 2, result.stderr
    assert "KerasUI cannot start: KERASUI_HTTPS='ture' is not accepted" in result.stderr
    assert "Traceback" not in result.stderr
