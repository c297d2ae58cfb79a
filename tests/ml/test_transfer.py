"""Transfer learning: backbone features cached once and reused, a head trained on them, optional
fine-tuning, and one ordinary Keras model at the end."""

import keras
import numpy as np
import pytest

from ml.fit import split_indices
from ml.images import load_image
from ml.models import Augmentation
from ml.transfer import (
    FEATURES,
    FINE_TUNE,
    HEAD,
    Stopped,
    TransferOptions,
    build_feature_cache,
    feature_cache_key,
    head_probabilities,
    train_pretrained,
)
from tests.images import COLOURS, colour_image
from tests.memory import needs_smaps, resident_bytes

LABELS = sorted(COLOURS)


def colour_data(size: int = 16, per_label: int = 8, color_mode: str = "rgb"):
    images = np.stack(
        [
            load_image(colour_image(label, seed=n, size=size), image_size=size, color_mode=color_mode)
            for label in LABELS
            for n in range(per_label)
        ]
    )
    return images, np.repeat(np.arange(len(LABELS)), per_label).astype(np.int32)


def small_backbone(size: int = 16) -> keras.Model:
    """A stand-in for an ImageNet backbone: 0..255 RGB in, pooled features out, with a batch norm."""
    from keras import layers

    inputs = keras.Input(shape=(size, size, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Conv2D(8, 3, padding="same", kernel_initializer="ones", name="conv")(x)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Conv2D(8, 1, name="top_conv")(x)
    x = layers.Concatenate()([layers.GlobalAveragePooling2D()(x), layers.GlobalAveragePooling2D()(inputs)])
    return keras.Model(inputs, x, name="small_backbone")


class Counting:
    """Counts how often the backbone is built and how many images go through it."""

    def __init__(self, size: int = 16):
        self.size = size
        self.built = 0
        self.images = 0

    def make_backbone(self):
        self.built += 1
        return small_backbone(self.size)

    def make_extractor(self):
        backbone = self.make_backbone()

        def extract(batch):
            self.images += len(batch)
            return backbone.predict_on_batch(batch)

        return extract


def test_features_are_computed_once_and_read_from_the_cache_afterwards(tmp_path):
    images, _ = colour_data()
    counting = Counting()

    first = build_feature_cache(images, folder=tmp_path, key="a1", make_extractor=counting.make_extractor)
    second = build_feature_cache(images, folder=tmp_path, key="a1", make_extractor=counting.make_extractor)

    assert counting.built == 1 and counting.images == len(images)
    assert first.shape == (len(images), 11) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)
    assert [path.name for path in tmp_path.iterdir()] == ["a1.npy"]


def test_another_dataset_version_backbone_or_size_names_other_features(tmp_path):
    key = feature_cache_key("images-v1", backbone="efficientnet_lite0", weights_id="w", image_size=224)
    assert key != feature_cache_key("images-v2", backbone="efficientnet_lite0", weights_id="w", image_size=224)
    assert key != feature_cache_key("images-v1", backbone="mobilenet_v3_small_imagenet", weights_id="w", image_size=224)
    assert key != feature_cache_key("images-v1", backbone="efficientnet_lite0", weights_id="w2", image_size=224)
    assert key != feature_cache_key("images-v1", backbone="efficientnet_lite0", weights_id="w", image_size=160)

    images, _ = colour_data()
    counting = Counting()
    build_feature_cache(images, folder=tmp_path, key="v1", make_extractor=counting.make_extractor)
    build_feature_cache(images[:-1], folder=tmp_path, key="v1", make_extractor=counting.make_extractor)
    build_feature_cache(images, folder=tmp_path, key="v2", make_extractor=counting.make_extractor)
    assert counting.built == 3  # a cache of another length is not taken either


def test_features_known_already_are_written_as_they_are_and_only_the_others_computed(tmp_path):
    images, _ = colour_data()
    computed = []

    def make_extractor():
        def extract(batch):
            computed.extend(int(value) for value in batch[:, 0, 0, 0])
            return batch.reshape(len(batch), -1)[:, :4].astype(np.float32)

        return extract

    images = images.copy()
    images[:, 0, 0, 0] = np.arange(len(images))  # each image names its row
    known_rows = np.array([0, 5, len(images) - 1])
    known = (known_rows, np.full((3, 4), 7.0, dtype=np.float32))

    features = build_feature_cache(images, folder=tmp_path, key="part", make_extractor=make_extractor, known=known)

    others = np.setdiff1d(np.arange(len(images)), known_rows)
    assert sorted(computed) == others.tolist()
    np.testing.assert_array_equal(features[known_rows], known[1])
    np.testing.assert_array_equal(features[others], images.reshape(len(images), -1)[others, :4])
    # All known: no extractor is built at all.
    everything = (np.arange(len(images)), np.asarray(features))
    build_feature_cache(
        images, folder=tmp_path, key="all", make_extractor=lambda: pytest.fail("built"), known=everything
    )


def test_cancelling_while_features_are_computed_leaves_no_cache(tmp_path):
    images, _ = colour_data()
    with pytest.raises(Stopped):
        build_feature_cache(
            images, folder=tmp_path, key="k", make_extractor=Counting().make_extractor, report=lambda done, total: False
        )
    assert list(tmp_path.iterdir()) == []


def _train(tmp_path, images, labels, options, counting, *, channels=3, phases=None):
    splits = split_indices(labels, validation_split=0.25, test_split=0, seed=0)
    return train_pretrained(
        images,
        labels,
        splits,
        options,
        make_backbone=counting.make_backbone,
        channels=channels,
        num_classes=len(LABELS),
        feature_folder=tmp_path / "features",
        feature_key="colours",
        phase=lambda name, percent: (phases if phases is not None else []).append(name),
        report=lambda progress: True,
    ), splits


def test_a_head_trained_on_cached_features_predicts_and_a_second_run_needs_no_backbone_pass(tmp_path, monkeypatch):
    from ml import transfer

    extractors = []
    real_extractor = transfer.feature_extractor
    monkeypatch.setattr(
        transfer, "feature_extractor", lambda *args, **kwargs: extractors.append(1) or real_extractor(*args, **kwargs)
    )
    images, labels = colour_data()
    counting = Counting()
    options = TransferOptions(epochs=60, batch_size=8, learning_rate=0.05, dropout=0.0)
    phases = []

    result, splits = _train(tmp_path, images, labels, options, counting, phases=phases)

    assert phases[0] == FEATURES and HEAD in phases and FINE_TUNE not in phases
    # The linear probe: one converged fit, its L2 strength chosen by cross-validation.
    assert len(result.history) == 1 and result.metrics["val_accuracy"] == 1.0
    assert result.metrics["head"]["folds"] >= 2 and len(result.metrics["head"]["scores"]) > 1
    assert result.model.predict(images.astype("float32"), verbose=0).argmax(axis=1).tolist() == labels.tolist()
    # The head on cached features predicts what the assembled model predicts.
    np.testing.assert_allclose(
        head_probabilities(result.head, result.features, splits.validation),
        result.model.predict(images[splits.validation], verbose=0),
        atol=1e-5,
    )

    retrained, _ = _train(tmp_path, images, labels, options, counting)
    assert len(extractors) == 1  # the features came from the cache the second time
    assert retrained.metrics["val_accuracy"] == 1.0


def test_fine_tuning_trains_the_top_of_the_backbone_within_its_time_budget(tmp_path):
    images, labels = colour_data()
    counting = Counting()
    options = TransferOptions(
        epochs=3,
        batch_size=8,
        learning_rate=0.05,
        fine_tune_seconds=60,
        augmentation=Augmentation(flip="horizontal", seed=1),
    )
    phases = []

    result, _ = _train(tmp_path, images, labels, options, counting, phases=phases)

    assert phases.index(FINE_TUNE) > phases.index(HEAD)
    # 18 training images at batch 8 are 3 steps an epoch: 3 epochs would be 9 steps, so fine-tuning
    # runs the epochs that make FINE_TUNE_MIN_STEPS (60) steps, after the head's one row.
    assert [row["epoch"] for row in result.history] == list(range(1, 22))
    assert result.metrics["fine_tune_note"].startswith("Fine-tuning")
    backbone = result.model.get_layer("small_backbone")
    assert backbone.get_layer("bn").trainable is False
    # Augmentation wrapped the model while fine-tuning; the model itself has no random layer.
    assert "augmentation" not in [layer.name for layer in result.model.layers]
    assert result.model.predict(images, verbose=0).shape == (len(images), 3)


def test_a_fine_tuning_budget_of_a_moment_stops_after_one_batch(tmp_path):
    images, labels = colour_data()
    options = TransferOptions(epochs=2, batch_size=4, fine_tune_seconds=1e-6)
    result, _ = _train(tmp_path, images, labels, options, Counting())
    # The head's row, then one fine-tuning epoch cut short by the budget, and the run page says so.
    assert len(result.history) == 2
    assert "stopped at its time budget" in result.metrics["fine_tune_note"]


def test_grayscale_images_go_through_the_rgb_backbone_with_their_channel_repeated(tmp_path):
    images, labels = colour_data(color_mode="grayscale")
    assert images.shape[-1] == 1
    options = TransferOptions(epochs=40, batch_size=8, learning_rate=0.05, dropout=0.0)

    result, _ = _train(tmp_path, images, labels, options, Counting(), channels=1)

    assert result.model.input_shape == (None, 16, 16, 1)
    assert result.model.predict(images, verbose=0).shape == (len(images), 3)


def test_the_pretrained_model_saves_and_loads_as_an_ordinary_keras_file(tmp_path, recwarn):
    images, labels = colour_data()
    options = TransferOptions(epochs=5, batch_size=8)
    result, _ = _train(tmp_path, images, labels, options, Counting())

    path = tmp_path / "model.keras"
    result.model.save(path)
    loaded = keras.saving.load_model(path)

    np.testing.assert_allclose(loaded.predict(images, verbose=0), result.model.predict(images, verbose=0), atol=1e-6)
    assert not [warning for warning in recwarn if "Skipping variable loading" in str(warning.message)]


def pattern_data(size: int, per_label: int):
    """Grey stripes across, stripes down and a checkerboard, each at a random phase and width."""
    generator = np.random.default_rng(0)
    rows, columns = np.mgrid[0:size, 0:size]
    images = []
    for kind in range(3):
        for _ in range(per_label):
            width, phase = int(generator.integers(6, 12)), int(generator.integers(0, 12))
            across, down = (rows + phase) // width % 2, (columns + phase) // width % 2
            pattern = [across, down, across ^ down][kind]
            images.append((pattern * 200 + 30).astype(np.uint8)[:, :, np.newaxis])
    return np.stack(images), np.repeat(np.arange(3), per_label).astype(np.int32)


def test_efficientnet_lite0_features_train_a_head_on_grayscale_images(tmp_path):
    from ml.backbones import backbone_named

    images, labels = pattern_data(96, per_label=4)
    lite = backbone_named("efficientnet_lite0")
    splits = split_indices(labels, validation_split=0.25, test_split=0, seed=0)

    result = train_pretrained(
        images,
        labels,
        splits,
        TransferOptions(epochs=30, batch_size=4, learning_rate=0.01),
        make_backbone=lambda: lite.build(image_size=96, base_url="", weights_dir=tmp_path / "weights"),
        channels=1,
        num_classes=3,
        feature_folder=tmp_path / "features",
        feature_key="grey",
        phase=lambda name, percent: True,
        report=lambda progress: True,
    )

    assert result.features.shape == (12, 1280)
    assert result.model.predict(images, verbose=0).argmax(axis=1).tolist() == labels.tolist()


def test_the_same_features_labels_and_seed_give_the_same_model(tmp_path):
    images, labels = colour_data()
    options = TransferOptions(epochs=3, batch_size=8, seed=7)

    first, _ = _train(tmp_path, images, labels, options, Counting())
    second, _ = _train(tmp_path, images, labels, options, Counting())  # the same (cached) features

    for one, other in zip(first.head.get_weights(), second.head.get_weights(), strict=True):
        np.testing.assert_array_equal(one, other)
    assert first.history[0]["val_loss"] == second.history[0]["val_loss"]


def test_a_fine_tune_that_does_not_beat_the_head_says_so_in_words():
    from ml.transfer import fine_tune_note

    history = [
        {"epoch": 1, "val_loss": 0.20},
        {"epoch": 2, "val_loss": 0.31},
        {"epoch": 3, "val_loss": 0.25},
    ]
    note = fine_tune_note(history, head_epochs=1, fine_tuned=False, ran_out=True, seconds=30)
    assert note == (
        "Fine-tuning did not beat the head alone (best val loss 0.25 against the head's 0.2): the head's weights "
        "were kept. It stopped at its time budget of 30 s after 2 epoch(s)."
    )
    history[2]["val_loss"] = 0.1
    note = fine_tune_note(history, head_epochs=1, fine_tuned=True, ran_out=False, seconds=30)
    assert note == "Fine-tuning beat the head alone: val loss 0.1 at epoch 3 against the head's 0.2."


@needs_smaps
def test_computing_features_does_not_keep_every_image_and_feature_resident(tmp_path):
    # 20,000 images of 32 × 32 (20 MB), read memory-mapped as the decoded-image cache is.
    generator = np.random.default_rng(0)
    source = tmp_path / "images.npy"
    np.save(source, generator.integers(0, 256, (20000, 32, 32, 1), dtype=np.uint8))
    images = np.load(source, mmap_mode="r")

    def make_extractor():
        return lambda batch: np.repeat(batch.reshape(len(batch), 64, 16).mean(axis=2), 4, axis=1)  # 256 features

    features = build_feature_cache(images, folder=tmp_path / "features", key="f", make_extractor=make_extractor)

    # Every image was read, yet at most a few thousand of them stay in this process's memory (they stay
    # in the page cache); the feature rows were let go of as they were written, and none was lost.
    assert resident_bytes(source) < images.nbytes / 2
    expected = np.repeat(np.asarray(images).reshape(20000, 64, 16).mean(axis=2), 4, axis=1)
    np.testing.assert_array_equal(features, expected.astype(np.float32))


def test_fine_tuning_takes_at_most_its_own_batch_whatever_the_runs_batch_size():
    from ml.transfer import FINE_TUNE_MAX_BATCH, fine_tune_schedule

    # The model code's batch of 128 would hold 128 images' activations at 224 px in the backbone at once.
    options = TransferOptions(epochs=3, batch_size=128)
    assert FINE_TUNE_MAX_BATCH == 32
    assert fine_tune_schedule(640, options) == (3, 20, 60)  # 640 images at 32 a step
    assert fine_tune_schedule(640, TransferOptions(epochs=3, batch_size=8)) == (3, 80, 240)


def test_the_fine_tuning_fit_is_fed_batches_of_at_most_its_own_size(tmp_path, monkeypatch):
    from ml import feed, transfer

    sizes = []
    real_batches = feed.batches
    monkeypatch.setattr(
        feed, "batches", lambda *args, **kwargs: sizes.append(kwargs["batch_size"]) or real_batches(*args, **kwargs)
    )
    monkeypatch.setattr(transfer, "FINE_TUNE_MAX_BATCH", 4)
    images, labels = colour_data()
    options = TransferOptions(epochs=1, batch_size=16, fine_tune_seconds=1e-6)
    _train(tmp_path, images, labels, options, Counting())
    assert sizes and set(sizes) == {4}
