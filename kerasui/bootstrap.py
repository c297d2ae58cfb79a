"""One-command start for KerasUI, called by standalone.bat on Linux, macOS and Windows.

    sh standalone.bat          make .venv, install, migrate, first-run setup, serve on 127.0.0.1:8000
    sh standalone.bat demo     the same, and create the demo dataset first
    sh standalone.bat test     install the development requirements and run the test suite

On Python 3.11 the runtime comes from requirements.lock, installed with --require-hashes.
Only the standard library is used here: this runs before the virtual environment exists.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
SUPPORTED = ((3, 10), (3, 13))
# The hash-pinned lock of requirements.txt (see its header for the command that refreshes it).
LOCK = ROOT / "requirements.lock"
LOCKED_PYTHON = (3, 11)


def venv_python() -> Path:
    if os.name == "nt":
        return VENV / "Scripts" / "python.exe"
    return VENV / "bin" / "python"


def say(message: str) -> None:
    print(f"[kerasui] {message}", flush=True)


def run(*args: str | Path, env: dict[str, str] | None = None) -> None:
    completed = subprocess.run([str(arg) for arg in args], cwd=ROOT, env=env)
    if completed.returncode != 0:
        say(f"failed: {' '.join(str(arg) for arg in args)} (exit code {completed.returncode})")
        sys.exit(completed.returncode)


def ensure_environment(requirements: str) -> Path:
    """Create .venv once and (re)install the requirements whenever their files change.

    On the locked Python the runtime comes from requirements.lock, every file checked against its hash;
    requirements.txt's ranges are installed only on the other supported versions (said so), and
    development tools (pytest, ruff…) on top of the runtime.
    """
    python = venv_python()
    if not python.exists():
        say(f"creating the virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    files = [ROOT / "requirements.txt", LOCK, ROOT / requirements]
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in files if path.exists())).hexdigest()
    stamp = VENV / f"installed-{Path(requirements).stem}.sha256"
    if not stamp.exists() or stamp.read_text().strip() != digest:
        say(f"installing {requirements} (the first time takes a few minutes: TensorFlow is large)")
        for command in install_commands(requirements, python_version=sys.version_info[:2]):
            run(python, *command)
        stamp.write_text(digest)
    return python


def install_commands(requirements: str, *, python_version: tuple[int, int]) -> list[list[str]]:
    """The pip commands that install `requirements` on this Python: the lock with hashes when it fits."""
    pip = ["-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if python_version == LOCKED_PYTHON and LOCK.exists():
        commands = [[*pip, "--require-hashes", "-r", str(LOCK)]]
        if requirements != "requirements.txt":
            commands.append([*pip, "-r", str(ROOT / requirements)])
        return commands
    say(
        f"requirements.lock is for Python {LOCKED_PYTHON[0]}.{LOCKED_PYTHON[1]}: on "
        f"{python_version[0]}.{python_version[1]} the newest releases inside requirements.txt's ranges are "
        "installed instead, without hash checks"
    )
    return [[*pip, "-r", str(ROOT / requirements)]]


def serve(python: Path, *, demo: bool) -> None:
    manage = ROOT / "manage.py"
    address = os.environ.get("KERASUI_ADDRESS", "127.0.0.1:8000")
    # Said before the minutes of setting up, not after them as runserver would.
    if port_taken(address):
        say(
            f"cannot serve on {address}: the port is already in use, perhaps by a KerasUI still running "
            "(stop it, or end the process listening there), or choose another address: "
            + (
                "set KERASUI_ADDRESS=127.0.0.1:8001 then standalone.bat"
                if os.name == "nt"
                else "KERASUI_ADDRESS=127.0.0.1:8001 sh standalone.bat"
            )
        )
        sys.exit(1)
    run(python, manage, "migrate", "--noinput", "-v", "0")
    run(python, manage, "collectstatic", "--noinput", "-v", "0")
    run(python, manage, "setup_local")
    if demo:
        run(python, manage, "demo")
    run_server([str(python), str(manage), "runserver", address, "--noreload"], address=address)


def port_taken(address: str) -> bool:
    """Whether something already listens on `address` (host:port), checked by binding it as runserver would."""
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        return False  # runserver says what is wrong with the address
    host = host.strip("[]") or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        if os.name != "nt":
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as runserver: TIME_WAIT is not "taken"
        try:
            probe.bind((host, int(port)))
        except OSError:
            return True
    return False


def _die_with_parent() -> None:
    """In the server's process on Linux: the kernel sends it SIGTERM when this launcher dies, however it dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _windows_job(child: subprocess.Popen) -> object | None:
    """On Windows, a job object that kills the server when this launcher's last handle closes: closing the
    console window ends the launcher, and the server with it."""
    try:
        import ctypes
        from ctypes import wintypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)

        class Limits(ctypes.Structure):
            _fields_ = [
                ("PerProcessUserTimeLimit", ctypes.c_int64),
                ("PerJobUserTimeLimit", ctypes.c_int64),
                ("LimitFlags", wintypes.DWORD),
                ("MinimumWorkingSetSize", ctypes.c_size_t),
                ("MaximumWorkingSetSize", ctypes.c_size_t),
                ("ActiveProcessLimit", wintypes.DWORD),
                ("Affinity", ctypes.c_size_t),
                ("PriorityClass", wintypes.DWORD),
                ("SchedulingClass", wintypes.DWORD),
            ]

        counters = ("ProcessMemoryLimit", "JobMemoryLimit", "PeakProcessMemoryUsed", "PeakJobMemoryUsed")

        class Extended(ctypes.Structure):
            _fields_ = [
                ("Basic", Limits),
                ("IoInfo", ctypes.c_uint64 * 6),
                *((name, ctypes.c_size_t) for name in counters),
            ]

        kernel32.CreateJobObjectW.restype = wintypes.HANDLE
        job = kernel32.CreateJobObjectW(None, None)
        info = Extended()
        info.Basic.LimitFlags = 0x2000  # JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        kernel32.SetInformationJobObject(job, 9, ctypes.byref(info), ctypes.sizeof(info))  # extended limits
        kernel32.AssignProcessToJobObject(job, wintypes.HANDLE(child._handle))
        return job
    except (OSError, AttributeError):
        return None


def run_server(command: list[str], *, address: str) -> None:
    """Run the web server as a child that stops with this launcher: on Ctrl+C, on SIGTERM or SIGHUP (a closed
    terminal) on Linux and macOS, on Ctrl+Break or a closed console window on Windows."""
    say(f"serving on http://{address}/  (admin: http://{address}/admin/, stop with Ctrl+C)")
    linux = sys.platform.startswith("linux")
    child = subprocess.Popen(command, cwd=ROOT, preexec_fn=_die_with_parent if linux else None)  # noqa: PLW1509
    job = _windows_job(child) if os.name == "nt" else None  # noqa: F841 - kept open while the server runs

    def stop(signum, _frame) -> None:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
        sys.exit(128 + signum)

    for name in ("SIGTERM", "SIGHUP", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), stop)
    try:
        child.wait()
    except KeyboardInterrupt:
        # Ctrl+C reached the server too (same console / process group): let it finish shutting down.
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()


# The suite in parallel processes (pytest-xdist), a file each at a time: most tests wait on one core (the
# database, the servers they start), and each file keeps its own live server and browser. At most four:
# each process may hold TensorFlow and a browser.
PARALLEL = ["--numprocesses=auto", "--maxprocesses=4", "--dist=loadfile"]


def pytest_arguments(arguments: list[str]) -> list[str]:
    """The test command's pytest arguments: in parallel unless the caller chose (-n, -p no:xdist)."""
    chosen = any(a.startswith(("-n", "--numprocesses", "--dist")) or a == "no:xdist" for a in arguments)
    return list(arguments) if chosen else [*PARALLEL, *arguments]


def test(python: Path, arguments: list[str]) -> None:
    completed = subprocess.run([str(python), "-m", "pytest", *pytest_arguments(arguments)], cwd=ROOT)
    sys.exit(completed.returncode)


def main(arguments: list[str]) -> None:
    if not SUPPORTED[0] <= sys.version_info[:2] <= SUPPORTED[1]:
        say(
            f"Python {sys.version_info.major}.{sys.version_info.minor} is not supported by TensorFlow here; "
            "use Python 3.10 to 3.13 (3.11 recommended)"
        )
        sys.exit(2)
    command = arguments[0] if arguments else "serve"
    if command in {"serve", "demo"}:
        serve(ensure_environment("requirements.txt"), demo=command == "demo")
    elif command == "test":
        test(ensure_environment("requirements-dev.txt"), arguments[1:])
    else:
        say(f"unknown command {command!r}: use no argument (serve), 'demo' or 'test'")
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
