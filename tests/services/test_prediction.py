import pytest

from datasets.models import DataSet
from management.errors import Conflict, ServiceError
from serving.prediction import prediction_predict, prediction_predict_one
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

    from django.core.files.storage import default_storage

    from serving.prediction import model_cache
    from serving.services import onnx_name

    model_cache.clear()
    os.remove(trained_dataset.current_run.model_file.path)
    default_storage.delete(onnx_name(trained_dataset.current_run))
    with pytest.raises(Conflict, match="cannot be loaded"):
        prediction_predict_one(dataset=trained_dataset, name="x.png", data=png())


def test_a_succeeded_current_run_is_warmed_into_the_cache(trained_dataset):
    from serving.prediction import model_cache, prediction_warm

    run = trained_dataset.current_run
    assert run.pk not in model_cache
    assert prediction_warm(run_id=run.pk) is True
    assert run.pk in model_cache
    assert prediction_warm(run_id=424242) is False


def test_the_cache_serves_a_new_run_and_evicts_beyond_its_bound(trained_dataset, colour_model_file, settings):
    from datasets.models import DataSet
    from serving.prediction import model_cache, prediction_predict_one
    from tests.images import colour_image
    from tests.runs import install_model

    settings.KERASUI_MODEL_CACHE_SIZE = 2
    image = colour_image("red", seed=5)
    first = prediction_predict_one(dataset=trained_dataset, name="a.png", data=image)
    # Retraining: a newer succeeded run becomes current and answers from then on.
    newer = install_model(trained_dataset, colour_model_file)
    second = prediction_predict_one(dataset=trained_dataset, name="a.png", data=image)
    assert second.run_id == newer.pk != first.run_id and second.label == first.label == "red"
    assert first.run_id not in model_cache  # the older model of the same dataset was dropped

    runs = []
    for n in range(3):
        other = DataSet.objects.create(name=f"Other {n}", image_size=16)
        run = install_model(other, colour_model_file, labels=["blue", "green", "red"])
        prediction_predict_one(dataset=other, name="a.png", data=image)
        runs.append(run.pk)
    assert [run_id in model_cache for run_id in [newer.pk, *runs]] == [False, False, True, True]


def test_threads_asking_the_cache_at_once_share_one_load_and_get_right_answers(trained_dataset):
    import threading

    import numpy as np

    from ml.images import load_image
    from serving.prediction import model_cache
    from tests.images import colour_image

    run = trained_dataset.current_run
    labels = ["red", "green", "blue"] * 4
    arrays = [
        load_image(colour_image(label, seed=700 + n), image_size=16, color_mode="rgb") for n, label in enumerate(labels)
    ]
    loads_before = model_cache.loads
    answers: dict[int, str] = {}
    start = threading.Barrier(len(labels))

    def ask(n: int) -> None:
        start.wait()
        predictor = model_cache.get(run)
        answers[n] = run.labels[int(np.argmax(predictor.predict(arrays[n][None])[0]))]

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(len(labels))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert model_cache.loads - loads_before == 1
    assert [answers[n] for n in range(len(labels))] == labels


def test_the_current_run_lookup_answers_for_unknown_and_out_of_range_ids(trained_dataset):
    from serving.prediction import prediction_current_run

    assert prediction_current_run(dataset_id=trained_dataset.pk).pk == trained_dataset.current_run_id
    for dataset_id in (424242, 2**63, 10**30, 0, -1):
        with pytest.raises(ServiceError, match=f"there is no dataset with id {dataset_id}") as error:
            prediction_current_run(dataset_id=dataset_id)
        assert error.value.field == "dataset"


def test_below_the_datasets_threshold_the_answer_is_unknown_with_the_top_labels_listed(trained_dataset):
    import io

    from PIL import Image

    # Half red, half green: the model answers one of them, not fully sure.
    picture = Image.new("RGB", (16, 16), (220, 20, 20))
    picture.paste((20, 200, 20), (0, 0, 8, 16))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    image = buffer.getvalue()
    sure = prediction_predict_one(dataset=trained_dataset, name="x.png", data=image)
    assert sure.as_dict()["result"] == sure.label and sure.unknown is False and sure.confidence < 1.0

    # A threshold above the model's confidence, set after training: it applies at once.
    DataSet.objects.filter(pk=trained_dataset.pk).update(unknown_below=min(1.0, sure.confidence + 1e-6))
    answer = prediction_predict_one(dataset=trained_dataset, name="x.png", data=image).as_dict()

    assert answer["result"] == "unknown" and answer["unknown"] is True and answer["label"] == sure.label
    assert answer["top"][0] == {"label": sure.label, "probability": sure.confidence}
    assert len(answer["top"]) == 3
