import pytest

from management.models import DataSet
from management.services.errors import Conflict, ServiceError
from management.services.prediction import prediction_predict, prediction_predict_one
from tests.images import colour_image, png


def test_prediction_follows_the_run_snapshot_not_the_datasets_current_fields(trained_dataset):
    trained_dataset.image_size = 128
    trained_dataset.color_mode = "grayscale"
    trained_dataset.save()
    prediction = prediction_predict_one(dataset=trained_dataset, name="x.png", data=colour_image("green", seed=5))
    assert prediction.label == "green"


def test_a_batch_is_answered_in_order(trained_dataset):
    labels = ["red", "blue", "green", "red"]
    images = [(f"{n}.png", colour_image(label, seed=500 + n)) for n, label in enumerate(labels)]
    assert [p.label for p in prediction_predict(dataset=trained_dataset, images=images)] == labels


def test_a_dataset_without_a_model_is_a_conflict_naming_the_dataset(db):
    dataset = DataSet.objects.create(name="Untrained")
    with pytest.raises(Conflict, match="no trained model") as error:
        prediction_predict_one(dataset=dataset, name="x.png", data=png())
    assert error.value.field == "dataset"


def test_a_non_image_is_refused_naming_the_image(trained_dataset):
    with pytest.raises(ServiceError, match="upload.bin: not an image") as error:
        prediction_predict_one(dataset=trained_dataset, name="upload.bin", data=b"garbage")
    assert error.value.field == "image"


def test_a_missing_model_file_is_a_conflict_not_a_crash(trained_dataset):
    import os

    from management.services.prediction import model_cache

    model_cache.clear()
    os.remove(trained_dataset.current_run.model_file.path)
    with pytest.raises(Conflict, match="cannot be loaded"):
        prediction_predict_one(dataset=trained_dataset, name="x.png", data=png())
