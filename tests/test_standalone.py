"""standalone.bat's launcher (kerasui/bootstrap.py) in a real process: its server stops with it on SIGTERM
(a closed terminal, `kill`), and a port already in use is said at once, naming KERASUI_ADDRESS."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVE = (
    "import sys; from pathlib import Path; from kerasui import bootstrap; "
    "bootstrap.serve(Path(sys.executable), demo=False)"
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM and /proc: Linux and macOS")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "\nState:\tZ" not in status.read_text()


def launcher(tmp_path, port: int) -> subprocess.Popen:
    env = {**os.environ, "KERASUI_DATA_DIR": str(tmp_path / "data"), "KERASUI_ADDRESS": f"127.0.0.1:{port}"}
    env.pop("DJANGO_SETTINGS_MODULE", None)  # manage.py's own, not the test run's
    return subprocess.Popen(
        [sys.executable, "-c", SERVE], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads the process tree from /proc (Linux)")
def test_sigterm_to_the_launcher_stops_its_server_and_frees_the_port(tmp_path):
    port = free_port()
    process = launcher(tmp_path, port)
    servers = []
    try:
        deadline = time.monotonic() + 180  # migrate and collectstatic on an empty folder first
        while not answers(port):
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "the server never answered"
            time.sleep(0.5)
        servers = children(process.pid)
        assert servers, "runserver runs as the launcher's child"
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        deadline = time.monotonic() + 10
        while (answers(port) or any(alive(pid) for pid in servers)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not answers(port), "a server still answers on the launcher's port"
        assert not any(alive(pid) for pid in servers), "runserver outlived its launcher"
    finally:
        for pid in [process.pid, *servers]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=10)


def test_a_port_in_use_is_said_at_once_with_what_to_do(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = launcher(tmp_path, port)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert f"cannot serve on 127.0.0.1:{port}: the port is already in use" in output
    assert "KERASUI_ADDRESS=127.0.0.1:8001 sh standalone.bat" in output
    assert "serving on" not in output
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").glob("*.sqlite3"))  # nothing set up first
