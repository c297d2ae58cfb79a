"""Check a model spec by building (not training) its model in a child process with a time limit.

The web process never runs model code: `validate_model` starts `python -m management.ml.validate`,
sends the spec as JSON on stdin and reads one JSON report line from stdout; a child that hangs is killed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from management.ml.models import ModelSpec, check_spec

# The folder holding the `management` package: the child's working directory, so `-m` finds it.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
# TensorFlow's C++ log lines ("E0000 00:00:17... cuda_platform.cc:52] ...") say nothing about the model.
TENSORFLOW_LOG_LINE = re.compile(r"^[IWEF]\d{4} |^WARNING: All log messages before absl")


@dataclass
class ValidationReport:
    """What building the model told: its layers and parameters, or the error."""

    ok: bool
    summary: str = ""
    layers: list[dict] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    error: str = ""
    line: int | None = None
    seconds: float = 0.0  # wall time of the whole check, TensorFlow import included

    def as_dict(self) -> dict:
        return asdict(self)


def _child_environment() -> dict[str, str]:
    environment = dict(os.environ)
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    environment.setdefault("CUDA_VISIBLE_DEVICES", "")
    return environment


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _last_message(stderr: str) -> str:
    """The last line of the child's stderr that is not one of TensorFlow's own log lines."""
    lines = [line for line in stderr.splitlines() if line.strip() and not TENSORFLOW_LOG_LINE.match(line)]
    return _last_line("\n".join(lines) or stderr)[:500]


def validate_model(spec: ModelSpec, *, timeout: float = 60.0) -> ValidationReport:
    """Build (not train) the model in a child process `python -m management.ml.validate`.

    The spec goes as JSON on stdin and the report comes back as JSON on stdout. The child is killed
    after `timeout` seconds (ok=False, the error names the limit); a child that crashes or prints
    garbage gives ok=False with a readable error that includes the last line of its stderr.
    """
    started = time.monotonic()
    try:
        # Size, architecture and weights file are checked here without Keras: no child needed.
        check_spec(spec)
    except ValueError as error:
        return ValidationReport(ok=False, error=str(error), seconds=time.monotonic() - started)
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "management.ml.validate"],
            input=json.dumps(spec.as_dict()),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=PROJECT_ROOT,
            env=_child_environment(),
            check=False,
        )
    except OSError as error:
        return ValidationReport(
            ok=False, error=f"the model check could not start: {error}", seconds=time.monotonic() - started
        )
    except subprocess.TimeoutExpired:
        return ValidationReport(
            ok=False,
            error=f"building the model took longer than the limit of {timeout:g} s and was stopped "
            "(an endless loop in the model code?)",
            seconds=time.monotonic() - started,
        )
    seconds = time.monotonic() - started
    report = _parse_report(completed.stdout)
    if report is None:
        stderr = _last_message(completed.stderr)
        detail = f": {stderr}" if stderr else ""
        return ValidationReport(
            ok=False,
            error=f"the model check ended without a report (exit code {completed.returncode}){detail}",
            seconds=seconds,
        )
    report.seconds = seconds
    return report


def _parse_report(stdout: str) -> ValidationReport | None:
    try:
        data = json.loads(_last_line(stdout) or "null")
        return ValidationReport(
            ok=bool(data["ok"]),
            summary=str(data.get("summary", "")),
            layers=list(data.get("layers", [])),
            total_params=int(data.get("total_params", 0)),
            trainable_params=int(data.get("trainable_params", 0)),
            error=str(data.get("error", "")),
            line=data.get("line") if isinstance(data.get("line"), int) else None,
        )
    except (ValueError, TypeError, KeyError):
        return None


def build_report(spec: ModelSpec) -> ValidationReport:
    """Build the model in this process and describe it; errors a user can cause become the report."""
    from management.ml.models import ModelCodeError, build_model, model_layers, model_summary, parameter_counts

    try:
        model = build_model(spec)
    except ModelCodeError as error:
        return ValidationReport(ok=False, error=str(error), line=error.line)
    except ValueError as error:
        return ValidationReport(ok=False, error=str(error))
    counts = parameter_counts(model)
    return ValidationReport(
        ok=True,
        summary=model_summary(model),
        layers=model_layers(model),
        total_params=counts["total"],
        trainable_params=counts["trainable"],
    )


def main() -> int:
    """Read a spec as JSON on stdin, write one report line as JSON on stdout."""
    # Keras, TensorFlow and print() in the model code write to stdout; only the report may.
    report_stream = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    started = time.monotonic()
    try:
        spec = ModelSpec.from_dict(json.loads(sys.stdin.read()))
    except (ValueError, TypeError, AttributeError) as error:
        report = ValidationReport(ok=False, error=f"not a model spec: {error}")
    else:
        report = build_report(spec)
    report.seconds = time.monotonic() - started
    sys.stdout.flush()
    report_stream.write(json.dumps(report.as_dict()) + "\n")
    report_stream.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
