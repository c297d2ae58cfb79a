"""The app must start on Windows: no module of ours needs a Unix-only standard module to import."""

import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

ROOT = Path(settings.BASE_DIR)
PACKAGES = ["kerasui", "management", "api"]
# Standard modules Windows does not have.
UNIX_ONLY = ["fcntl", "termios", "resource", "pwd", "grp"]

IMPORT_EVERYTHING = """
import builtins, importlib, pkgutil, sys
OURS = tuple({packages!r})
UNIX_ONLY = set({unix_only!r})
real_import = builtins.__import__


def windows_import(name, globals=None, locals=None, fromlist=(), level=0):
    # Only our own modules are held to it: libraries choose their platform's modules by sys.platform.
    importer = (globals or {{}}).get("__name__", "")
    if name.split(".")[0] in UNIX_ONLY and importer.split(".")[0] in OURS:
        raise ImportError(f"{{importer}} imports {{name}}, which Windows does not have")
    return real_import(name, globals, locals, fromlist, level)


builtins.__import__ = windows_import
import django
django.setup()
failed = []
for package in OURS:
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        if ".migrations" in info.name:
            continue
        try:
            importlib.import_module(info.name)
        except ImportError as error:
            failed.append(f"{{info.name}}: {{error}}")
print("\\n".join(failed) or "all imported")
"""


def test_every_module_imports_without_unix_only_standard_modules(tmp_path):
    code = IMPORT_EVERYTHING.format(unix_only=UNIX_ONLY, packages=PACKAGES)
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **{key: value for key, value in os.environ.items() if not key.startswith("KERASUI_")},
            "KERASUI_DATA_DIR": str(tmp_path),
            "DJANGO_SETTINGS_MODULE": "kerasui.settings",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        },
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip().splitlines()[-1] == "all imported", completed.stdout


def test_a_process_check_tells_running_from_ended_and_reaped(tmp_path):
    from management.processes import pid_alive

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid_alive(child.pid)
    finally:
        child.kill()
    if hasattr(os, "waitid"):
        # Ended but not yet reaped by its parent (a zombie, on POSIX): it counts as ended.
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        assert not pid_alive(child.pid)
    child.wait()
    assert not pid_alive(child.pid)
