import keras
import numpy as np
import pytest
from keras import layers

from ml.feed import batches


@pytest.fixture
def memmap(tmp_path):
    """50 images of 4x4x1 whose every pixel is the row number, and labels row % 3, in a .npy memmap."""
    rows = np.lib.format.open_memmap(tmp_path / "rows.npy", mode="w+", dtype=np.uint8, shape=(50, 4, 4, 1))
    rows[:] = np.arange(50, dtype=np.uint8)[:, None, None, None]
    rows.flush()
    del rows
    images = np.load(tmp_path / "rows.npy", mmap_mode="r")
    labels = np.arange(50) % 3
    return images, labels


def epochs_of(dataset, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (row numbers, labels) each epoch delivered, read from the pixels themselves."""
    result = []
    for _ in range(count):
        rows, labels = [], []
        for batch_images, batch_labels in dataset:
            assert batch_images.dtype == "uint8" and batch_labels.dtype == "int32"
            rows.append(batch_images.numpy()[:, 0, 0, 0])
            labels.append(batch_labels.numpy())
        result.append((np.concatenate(rows), np.concatenate(labels)))
    return result


def test_every_index_comes_once_per_epoch_with_its_label_in_a_new_order(memmap):
    images, labels = memmap
    indices = np.arange(3, 45)
    dataset = batches(images, labels, indices, batch_size=8, shuffle=True, seed=1)
    epochs = epochs_of(dataset, 3)
    for rows, row_labels in epochs:
        assert sorted(rows) == list(indices)
        assert (row_labels == rows % 3).all()
    assert len({tuple(rows) for rows, _ in epochs}) == 3


def test_the_same_seed_shuffles_the_same_way(memmap):
    images, labels = memmap
    first = epochs_of(batches(images, labels, np.arange(50), batch_size=8, shuffle=True, seed=7), 2)
    second = epochs_of(batches(images, labels, np.arange(50), batch_size=8, shuffle=True, seed=7), 2)
    assert all((a[0] == b[0]).all() for a, b in zip(first, second, strict=True))


def test_unshuffled_rows_come_in_the_order_of_the_indices(memmap):
    images, labels = memmap
    indices = np.array([40, 2, 17, 5, 33, 0, 49, 12, 8])
    dataset = batches(images, labels, indices, batch_size=4, shuffle=False, seed=0)
    [(rows, row_labels)] = epochs_of(dataset, 1)
    assert list(rows) == list(indices)
    assert list(row_labels) == list(indices % 3)
    assert dataset.element_spec[0].shape.as_list() == [None, 4, 4, 1]


def test_indices_outside_the_images_are_refused(memmap):
    images, labels = memmap
    with pytest.raises(ValueError, match="indices"):
        batches(images, labels, np.array([0, 50]), batch_size=4, shuffle=False, seed=0)


# Keras' own shuffle=True default warns for any dataset; ours is shuffled by `batches`.
@pytest.mark.filterwarnings("ignore:`shuffle=True` was passed")
def test_a_tiny_model_fits_evaluates_and_predicts_from_batches(memmap):
    images, labels = memmap
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input(shape=(4, 4, 1)),
            layers.Rescaling(1 / 255),
            layers.Flatten(),
            layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    train = batches(images, labels, np.arange(40), batch_size=8, shuffle=True, seed=0)
    validation = batches(images, labels, np.arange(40, 50), batch_size=8, shuffle=False, seed=0)
    history = model.fit(train, epochs=1, validation_data=validation, class_weight={0: 1.0, 1: 2.0, 2: 1.0}, verbose=0)
    assert set(history.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert np.isfinite(history.history["loss"][0])
    assert len(model.evaluate(validation, verbose=0)) == 2
    predictions = model.predict(validation, verbose=0)
    expected = model.predict(np.asarray(images[40:50]), verbose=0)
    assert np.allclose(predictions, expected, atol=1e-6)
