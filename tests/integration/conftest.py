"""Integration tests against real servers: Redis, PostgreSQL and Celery worker processes.

They run only when KERASUI_INTEGRATION is set (as in .ci/run), with DATABASE_URL naming a PostgreSQL
database, CELERY_BROKER_URL a Redis server (default redis://127.0.0.1:6379/0) and
KERASUI_TEST_S3_ENDPOINT an S3 API (moto's server; test_bucket.py); when it is set and a server
cannot be reached, they fail.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings

INTEGRATION = os.environ.get("KERASUI_INTEGRATION", "").strip().lower() in {"1", "true", "yes", "on"}
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
# Short enough for a test, long enough for a training process to import TensorFlow and beat.
HEARTBEAT_TIMEOUT = 12


def pytest_collection_modifyitems(config, items):
    if INTEGRATION:
        return
    skip = pytest.mark.skip(
        reason="integration tests need Redis, PostgreSQL, Celery workers and an S3 API: set KERASUI_INTEGRATION=1, "
        "DATABASE_URL=postgres://..., CELERY_BROKER_URL and KERASUI_TEST_S3_ENDPOINT (see .ci/run)"
    )
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def servers(django_db_setup, django_db_blocker):
    """Fail (never skip) when the integration suite was asked for and a server is missing."""
    import redis
    from django.db import connection

    with django_db_blocker.unblock():
        vendor = connection.vendor
    if vendor != "postgresql":
        pytest.fail(f"KERASUI_INTEGRATION is set but the database is {vendor}: set DATABASE_URL=postgres://...")
    try:
        redis.Redis.from_url(django_settings.CELERY_BROKER_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as error:
        pytest.fail(f"KERASUI_INTEGRATION is set but Redis ({django_settings.CELERY_BROKER_URL}) answers no: {error}")
    from kerasui.celery import app

    # Messages a crashed earlier session left would be run ids of another database.
    with app.connection_for_write() as connection_:
        connection_.default_channel.queue_purge("training")
    return app


class Workers:
    """Real `celery -A kerasui worker -Q training -c 1` processes, each in its own process group.

    Each is named as if on its own machine (w1@machine-1, ...), so that nothing can tell its
    processes are local: a dead worker is found by its runs' heartbeats, as across machines.
    """

    def __init__(self, folder: Path, environment: dict[str, str]) -> None:
        self.folder = folder
        self.environment = environment
        self.processes: dict[str, subprocess.Popen] = {}

    def node(self, name: str) -> str:
        return f"{name}@machine-{name.lstrip('w')}"

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, name: str) -> subprocess.Popen:
        log = (self.folder / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "kerasui", "worker", "-Q", "training", "-c", "1"]
            + ["-n", self.node(name), "-l", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT,
            env=self.environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.processes[name] = process
        deadline = time.monotonic() + 60
        while f"{self.node(name)} ready." not in self.log(name):
            assert process.poll() is None, f"worker {name} exited:\n{self.log(name)[-3000:]}"
            assert time.monotonic() < deadline, f"worker {name} not ready after 60 s:\n{self.log(name)[-3000:]}"
            time.sleep(0.2)
        return process

    def ensure(self, *names: str) -> None:
        for name in names:
            if name not in self.processes or self.processes[name].poll() is not None:
                self.start(name)

    def kill(self, name: str) -> None:
        """SIGKILL the worker and every process it started: a machine that stops at once."""
        process = self.processes[name]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="module")
def shared_folder(tmp_path_factory):
    """Media and image cache the test process and the workers share (a shared folder in production)."""
    return tmp_path_factory.mktemp("shared")


@pytest.fixture(autouse=True)
def shared_media(settings, shared_folder):
    settings.MEDIA_ROOT = shared_folder / "media"
    settings.KERASUI_CACHE_DIR = shared_folder / "cache"


@pytest.fixture(scope="module")
def workers(servers, shared_folder, django_db_blocker):
    from django.db import connection

    with django_db_blocker.unblock():
        database_name = connection.settings_dict["NAME"]
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "kerasui.settings",
        "KERASUI_DATABASE_NAME": str(database_name),
        "KERASUI_MEDIA_ROOT": str(shared_folder / "media"),
        "KERASUI_CACHE_DIR": str(shared_folder / "cache"),
        "KERASUI_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
        "KERASUI_PREPROCESS_WORKERS": "1",
        "CELERY_BROKER_URL": django_settings.CELERY_BROKER_URL,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
    }
    folder = shared_folder / "workers"
    folder.mkdir()
    pool = Workers(folder, environment)
    try:
        pool.ensure("w1", "w2")
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture
def celery_backend(settings, workers):
    """The test process is the web process, with KERASUI_TRAINING_BACKEND=celery and both workers up."""
    from jobs import runner as runners

    settings.KERASUI_TRAINING_BACKEND = "celery"
    settings.KERASUI_HEARTBEAT_TIMEOUT = HEARTBEAT_TIMEOUT
    runners.reset()
    workers.ensure("w1", "w2")
    return workers
