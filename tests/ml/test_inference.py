"""The inference path gives the Keras model's answers, alone, in batches and from many threads."""

import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

from ml.inference import COMPILED, EAGER, Predictor


def images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 16, 16, 3), dtype=np.uint8)


def test_compiled_answers_equal_the_keras_model_for_one_image_and_batches(colour_model_file):
    predictor = Predictor(colour_model_file)
    assert predictor.engine == COMPILED
    model = keras.saving.load_model(colour_model_file, compile=False)
    for count in (1, 7, 32):
        batch = images(count, seed=count)
        expected = keras.ops.convert_to_numpy(model(batch.astype(np.float32), training=False))
        assert np.abs(predictor.predict(batch) - expected).max() < 1e-5


def test_the_eager_fallback_answers_the_same(colour_model_file, monkeypatch):
    compiled = Predictor(colour_model_file).predict(images(5))

    def no_tracing(*args, **kwargs):
        raise RuntimeError("no tracing")

    # Tracing a model needs the spec of its input; when that fails the predictor falls back to eager calls.
    # (tf.function itself cannot be refused: Keras' eager layers use it too.)
    monkeypatch.setattr(tf, "TensorSpec", no_tracing)
    fallback = Predictor(colour_model_file)
    assert fallback.engine == EAGER
    assert np.abs(fallback.predict(images(5)) - compiled).max() < 1e-5


def test_threads_predicting_at_once_all_get_their_own_answers(colour_model_file):
    predictor = Predictor(colour_model_file)
    inputs = [images(1 + n % 4, seed=100 + n) for n in range(24)]
    expected = [predictor.predict(batch) for batch in inputs]
    results: dict[int, np.ndarray] = {}

    def work(n: int) -> None:
        for _ in range(5):
            results[n] = predictor.predict(inputs[n])

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for n, batch_expected in enumerate(expected):
        assert np.abs(results[n] - batch_expected).max() < 1e-6


def test_images_of_the_wrong_shape_are_refused(colour_model_file):
    with pytest.raises(ValueError, match=r"the model takes \(16, 16, 3\)"):
        Predictor(colour_model_file).predict(np.zeros((1, 8, 8, 3), dtype=np.uint8))
