"""One-command start for KerasUI, called by standalone.bat on Linux, macOS and Windows.

    sh standalone.bat          make .venv, install, migrate, first-run setup, serve on 127.0.0.1:8000
    sh standalone.bat demo     the same, and create the demo dataset first
    sh standalone.bat test     install the development requirements and run the test suite

Only the standard library is used here: this runs before the virtual environment exists.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
SUPPORTED = ((3, 10), (3, 13))


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
    """Create .venv once and (re)install the requirements whenever their files change."""
    python = venv_python()
    if not python.exists():
        say(f"creating the virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    files = [ROOT / "requirements.txt", ROOT / requirements]
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()
    stamp = VENV / f"installed-{Path(requirements).stem}.sha256"
    if not stamp.exists() or stamp.read_text().strip() != digest:
        say(f"installing {requirements} (the first time takes a few minutes: TensorFlow is large)")
        run(python, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-r", ROOT / requirements)
        stamp.write_text(digest)
    return python


def serve(python: Path, *, demo: bool) -> None:
    manage = ROOT / "manage.py"
    run(python, manage, "migrate", "--noinput", "-v", "0")
    run(python, manage, "collectstatic", "--noinput", "-v", "0")
    run(python, manage, "setup_local")
    if demo:
        run(python, manage, "demo")
    address = os.environ.get("KERASUI_ADDRESS", "127.0.0.1:8000")
    say(f"serving on http://{address}/  (admin: http://{address}/admin/, stop with Ctrl+C)")
    try:
        subprocess.run([str(python), str(manage), "runserver", address, "--noreload"], cwd=ROOT)
    except KeyboardInterrupt:
        pass


def test(python: Path, arguments: list[str]) -> None:
    completed = subprocess.run([str(python), "-m", "pytest", *arguments], cwd=ROOT)
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
