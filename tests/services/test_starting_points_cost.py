"""Listing the starting points costs a file check: no Keras import (and so no TensorFlow) in the web
process, and each weights file hashed once per process, when first seen."""

import hashlib
import subprocess
import sys

import pytest
from django.conf import settings as django_settings

from ml import backbones, efficientnet_lite
from training.pretrained import backbone_statuses, starting_points


def test_finding_keras_cache_imports_neither_keras_nor_tensorflow(tmp_path):
    code = (
        "import sys; from ml.backbones import keras_cache_dir; print(keras_cache_dir()); "
        "print(sorted(name for name in ('keras', 'tensorflow') if name in sys.modules))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=django_settings.BASE_DIR,
        env={"KERAS_HOME": str(tmp_path / "keras-home"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    folder, imported = completed.stdout.strip().splitlines()
    assert folder == str(tmp_path / "keras-home") and imported == "[]"


def test_keras_cache_dir_is_where_keras_finds_it(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "elsewhere"))
    assert backbones.keras_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("KERAS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert backbones.keras_cache_dir() == tmp_path / ".keras"


@pytest.fixture
def weights_in_keras_cache(settings, tmp_path, monkeypatch):
    """Every Keras application's weights file is in the cache (made-up bytes, their hash recorded)."""
    settings.KERASUI_WEIGHTS_DIR = tmp_path / "weights"
    folder = tmp_path / "keras" / "models"
    folder.mkdir(parents=True)
    monkeypatch.setattr(backbones, "keras_cache_dir", lambda: tmp_path / "keras")
    for name, backbone in list(backbones.BACKBONES.items()):
        if backbone.shipped:
            continue
        content = f"weights of {name}".encode() * 1000
        (folder / backbone.file_name).write_bytes(content)
        digest = hashlib.new(backbones._hash_algorithm(backbone.file_hash), content).hexdigest()
        monkeypatch.setitem(backbones.BACKBONES, name, backbone.__class__(**{**backbone.__dict__, "file_hash": digest}))
    return folder


def test_weights_are_hashed_once_then_only_checked_to_be_there(weights_in_keras_cache, monkeypatch):
    hashed = []
    real = hashlib.new

    def counting(name, *args, **kwargs):
        hashed.append(name)
        return real(name, *args, **kwargs)

    efficientnet_lite._digests.clear()
    monkeypatch.setattr(efficientnet_lite.hashlib, "new", counting)
    first = {status.name: status.cached for status in backbone_statuses()}
    downloaded = [name for name, backbone in backbones.BACKBONES.items() if not backbone.shipped]
    assert downloaded and all(first[name] for name in downloaded)
    hashed_first = len(hashed)
    assert hashed_first >= len(downloaded)
    for _ in range(3):
        starting_points()
    assert len(hashed) == hashed_first

    # A file replaced by another is hashed again, and found wrong.
    replaced = weights_in_keras_cache / backbones.BACKBONES[downloaded[0]].file_name
    replaced.unlink()
    replaced.write_bytes(b"not the weights")
    assert {status.name: status.cached for status in backbone_statuses()}[downloaded[0]] is False
