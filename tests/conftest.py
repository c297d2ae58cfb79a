import io

import pytest

from management import runners
from management.models import DataSet
from management.services.datasets import dataset_import_zip
from tests.images import colour_zip


@pytest.fixture(autouse=True)
def media_and_runner(settings, tmp_path):
    """Every test gets its own media folder; queued runs stay queued unless a test starts a runner."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.KERASUI_TRAINING_RUNNER = "none"
    runners._runner = None
    yield
    runners._runner = None


@pytest.fixture
def colour_dataset(db):
    """A dataset of three clearly separable colour classes, 16 px, trained in a few seconds."""
    dataset = DataSet.objects.create(name="Colours", image_size=16, epochs=6, batch_size=8, validation_split=0.2)
    dataset_import_zip(dataset=dataset, file=io.BytesIO(colour_zip(10)))
    return dataset
