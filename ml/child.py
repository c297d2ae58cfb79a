"""Run a module of this package in a child process: a JSON request on stdin, one JSON report line on
stdout, killed after a time limit.

Model code and TensorFlow's conversions run there, never in the web process; `serve` is the child's
side, `run_module` the parent's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

# The folder holding the `ml` package: the child's working directory, so `-m` finds it.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
# TensorFlow's C++ log lines ("E0000 00:00:17... cuda_platform.cc:52] ...") say nothing about the work.
TENSORFLOW_LOG_LINE = re.compile(r"^[IWEF]\d{4} |^WARNING: All log messages before absl")


class ChildFailed(Exception):
    """The child gave no report; the message ("could not start: …", "ended without a report …")
    completes a sentence whose subject the caller names."""


class ChildTimedOut(ChildFailed):
    """The child was stopped at its time limit."""


def _environment() -> dict[str, str]:
    environment = dict(os.environ)
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    environment.setdefault("CUDA_VISIBLE_DEVICES", "")
    return environment


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def last_message(stderr: str) -> str:
    """The last line of the child's stderr that is not one of TensorFlow's own log lines."""
    lines = [line for line in stderr.splitlines() if line.strip() and not TENSORFLOW_LOG_LINE.match(line)]
    return last_line("\n".join(lines) or stderr)[:500]


def run_module(module: str, request: dict, *, timeout: float) -> dict:
    """`python -m module` with `request`; its report (a dict with "ok"), or ChildFailed saying why not."""
    try:
        completed = subprocess.run(
            [sys.executable, "-m", module],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=PROJECT_ROOT,
            env=_environment(),
            check=False,
        )
    except OSError as error:
        raise ChildFailed(f"could not start: {error}") from None
    except subprocess.TimeoutExpired:
        raise ChildTimedOut(f"took longer than the limit of {timeout:g} s and was stopped") from None
    try:
        report = json.loads(last_line(completed.stdout) or "null")
    except ValueError:
        report = None
    if not isinstance(report, dict) or "ok" not in report:
        stderr = last_message(completed.stderr)
        detail = f": {stderr}" if stderr else ""
        raise ChildFailed(f"ended without a report (exit code {completed.returncode}){detail}")
    return report


def serve(handle: Callable[[dict], dict]) -> int:
    """The child's side: read the request, answer `handle(request)` as the one line on stdout.

    Everything else written to stdout (Keras, TensorFlow, print() in model code) goes to stderr.
    """
    report_stream = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        request = json.loads(sys.stdin.read())
    except ValueError as error:
        report = {"ok": False, "error": f"not a request: {error}"}
    else:
        report = handle(request)
    sys.stdout.flush()
    report_stream.write(json.dumps(report) + "\n")
    report_stream.flush()
    return 0
