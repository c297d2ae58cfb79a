"""Check a model spec by building (not training) its model in a child process with a time limit.

The web process never runs model code: `validate_model` starts `python -m ml.validate`,
sends the spec as JSON on stdin and reads one JSON report line from stdout; a child that hangs is killed.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field

from ml.child import PROJECT_ROOT, ChildFailed, ChildTimedOut, run_module, serve
from ml.models import ModelSpec, check_spec

__all__ = ["PROJECT_ROOT", "ValidationReport", "build_report", "validate_model"]


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


def validate_model(spec: ModelSpec, *, timeout: float = 60.0) -> ValidationReport:
    """Build (not train) the model in a child process `python -m ml.validate`.

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
        data = run_module("ml.validate", spec.as_dict(), timeout=timeout)
    except ChildTimedOut as error:
        message = f"building the model {error} (an endless loop in the model code?)"
        return ValidationReport(ok=False, error=message, seconds=time.monotonic() - started)
    except ChildFailed as error:
        return ValidationReport(ok=False, error=f"the model check {error}", seconds=time.monotonic() - started)
    report = _report_from(data)
    report.seconds = time.monotonic() - started
    return report


def _report_from(data: dict) -> ValidationReport:
    try:
        return ValidationReport(
            ok=bool(data["ok"]),
            summary=str(data.get("summary", "")),
            layers=list(data.get("layers", [])),
            total_params=int(data.get("total_params", 0)),
            trainable_params=int(data.get("trainable_params", 0)),
            error=str(data.get("error", "")),
            line=data.get("line") if isinstance(data.get("line"), int) else None,
        )
    except (ValueError, TypeError) as error:
        return ValidationReport(ok=False, error=f"the model check gave an unreadable report ({error})")


def build_report(spec: ModelSpec) -> ValidationReport:
    """Build the model in this process and describe it; errors a user can cause become the report."""
    from ml.models import ModelCodeError, build_model, model_layers, model_summary, parameter_counts

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


def _handle(request: dict) -> dict:
    started = time.monotonic()
    try:
        spec = ModelSpec.from_dict(request)
    except (ValueError, TypeError, AttributeError) as error:
        report = ValidationReport(ok=False, error=f"not a model spec: {error}")
    else:
        report = build_report(spec)
    report.seconds = time.monotonic() - started
    return report.as_dict()


def main() -> int:
    """Read a spec as JSON on stdin, write one report line as JSON on stdout."""
    return serve(_handle)


if __name__ == "__main__":
    sys.exit(main())
