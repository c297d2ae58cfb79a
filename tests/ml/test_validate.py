import json
import subprocess
import sys

import pytest

from ml.models import DEFAULT_PROCESS, ModelSpec
from ml.validate import PROJECT_ROOT, validate_model

# Starting the child costs a TensorFlow import (about 3 s on the 2-core test machine) before the
# model code runs, so the limit for the endless loop leaves room for it: the loop itself is stopped.
LOOP_TIMEOUT = 10.0


def _spec(code: str, **values) -> ModelSpec:
    return ModelSpec(code=code, image_size=16, channels=3, num_classes=3, **values)


def test_good_code_gives_the_layers_and_parameter_counts():
    report = validate_model(_spec(DEFAULT_PROCESS), timeout=60)
    assert report.ok, report.error
    assert report.error == "" and report.line is None
    assert report.layers[0]["type"] == "Rescaling"
    assert report.layers[-1] == {
        "name": "predictions",
        "type": "Dense",
        "output_shape": [None, 3],
        "params": 128 * 3 + 3,
    }
    assert report.total_params == sum(layer["params"] for layer in report.layers) > 0
    assert report.trainable_params == report.total_params
    assert "kerasui" in report.summary and "predictions" in report.summary
    assert report.seconds > 0
    assert json.loads(json.dumps(report.as_dict()))["layers"] == report.layers


def test_the_child_prints_one_json_line_and_sends_everything_else_to_stderr():
    spec = _spec('print("hello from the model code")\nmodel.add(Flatten())')
    completed = subprocess.run(
        [sys.executable, "-m", "ml.validate"],
        input=json.dumps(spec.as_dict()),
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=60,
        check=True,
    )
    lines = completed.stdout.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["ok"] is True
    assert "hello from the model code" in completed.stderr


def test_a_syntax_error_gives_the_message_and_its_line():
    report = validate_model(_spec("model.add(Flatten())\nmodel.add(Dense(3)"), timeout=60)
    assert not report.ok
    assert report.line == 2
    assert report.error.startswith("line 2: SyntaxError")
    assert report.layers == [] and report.total_params == 0


def test_a_name_error_gives_the_message_and_its_line():
    report = validate_model(_spec("model.add(Flatten())\n\nmodel.add(Conv(3))"), timeout=60)
    assert not report.ok
    assert report.line == 3
    assert report.error == "line 3: NameError: name 'Conv' is not defined"


def test_an_endless_loop_is_stopped_at_the_time_limit():
    report = validate_model(_spec("model.add(Flatten())\nwhile True:\n    pass"), timeout=LOOP_TIMEOUT)
    assert not report.ok
    assert "limit of 10 s" in report.error
    assert LOOP_TIMEOUT <= report.seconds < LOOP_TIMEOUT + 5


def test_a_child_that_dies_without_a_report_gives_its_exit_code_and_last_words():
    code = 'import os, sys\nprint("the model code gave up", file=sys.stderr, flush=True)\nos._exit(3)'
    report = validate_model(_spec(code), timeout=60)
    assert not report.ok
    assert report.error == "the model check ended without a report (exit code 3): the model code gave up"


def test_a_child_that_prints_garbage_gives_a_readable_error(tmp_path, monkeypatch):
    fake_python = tmp_path / "python"
    fake_python.write_text("#!/bin/sh\necho 'this is not JSON'\necho 'Segmentation fault' >&2\nexit 0\n")
    fake_python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake_python))
    report = validate_model(_spec(DEFAULT_PROCESS), timeout=10)
    assert not report.ok
    assert report.error == "the model check ended without a report (exit code 0): Segmentation fault"


@pytest.mark.parametrize(
    "values, message",
    [
        ({"architecture": "efficientnet_b0"}, "EfficientNet-B0 needs images of at least 32×32 px"),
        ({"architecture": "vgg"}, "unknown architecture 'vgg'"),
    ],
)
def test_a_spec_that_cannot_give_a_model_is_refused_without_starting_a_child(values, message, monkeypatch):
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    report = validate_model(_spec(DEFAULT_PROCESS, **values))
    assert not report.ok
    assert message in report.error
    assert report.seconds < 1
