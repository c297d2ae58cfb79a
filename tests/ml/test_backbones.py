"""The backbone registry: Keras' download-and-hash path against a real HTTP server on loopback,
hand-copied files imported after a hash check, and a message naming the command when nothing works."""

import dataclasses
import hashlib
import http.server
import threading
from functools import partial

import numpy as np
import pytest

from ml.backbones import BACKBONES, Backbone, WeightsUnavailable, backbone_named, check_image_size

PAYLOAD = b"pretend these are the weights of a backbone\n" * 100


class _Server:
    """A static file server on 127.0.0.1 in a thread, counting the requests it answers."""

    def __init__(self, folder):
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(self.path)
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(folder)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    (served / "mirror" / "applications").mkdir(parents=True)
    (served / "mirror" / "applications" / "tiny_notop.h5").write_bytes(PAYLOAD)
    running = _Server(served)
    yield running
    running.close()


def _entry(file_hash: str = hashlib.sha256(PAYLOAD).hexdigest()) -> Backbone:
    def build(image_size, path):
        raise AssertionError("not built in these tests")

    return Backbone(
        name="tiny_imagenet",
        label="Tiny, pretrained on nothing",
        build_with_weights=build,
        file_name="tiny_notop.h5",
        file_hash=file_hash,
        origin_path="mirror/applications/tiny_notop.h5",
    )


def test_fetch_downloads_the_file_from_the_base_url_and_checks_its_hash(server, tmp_path):
    cache = tmp_path / "keras" / "models"
    entry = _entry()
    assert not entry.is_cached(cache_dir=cache, weights_dir=tmp_path)

    path = entry.fetch(base_url=server.base_url, cache_dir=cache, weights_dir=tmp_path)

    assert path == cache / "tiny_notop.h5"
    assert path.read_bytes() == PAYLOAD
    assert server.requests == ["/mirror/applications/tiny_notop.h5"]
    assert entry.is_cached(cache_dir=cache, weights_dir=tmp_path)


def test_a_cached_file_is_not_downloaded_again(server, tmp_path):
    cache = tmp_path / "models"
    entry = _entry()
    entry.fetch(base_url=server.base_url, cache_dir=cache, weights_dir=tmp_path)
    entry.fetch(base_url=server.base_url, cache_dir=cache, weights_dir=tmp_path)
    assert len(server.requests) == 1


def test_a_download_with_the_wrong_hash_is_refused_and_not_kept(server, tmp_path):
    cache = tmp_path / "models"
    entry = _entry(file_hash=hashlib.sha256(b"the real weights").hexdigest())

    with pytest.raises(WeightsUnavailable, match="expected hash"):
        entry.fetch(base_url=server.base_url, cache_dir=cache, weights_dir=tmp_path)

    assert server.requests == ["/mirror/applications/tiny_notop.h5"]
    assert not (cache / "tiny_notop.h5").exists()
    assert not entry.is_cached(cache_dir=cache, weights_dir=tmp_path)


def test_an_md5_hash_as_keras_records_them_is_checked_too(server, tmp_path):
    entry = _entry(file_hash=hashlib.md5(PAYLOAD).hexdigest())  # noqa: S324 - Keras' own hashes are md5
    path = entry.fetch(base_url=server.base_url, cache_dir=tmp_path / "models", weights_dir=tmp_path)
    assert path.read_bytes() == PAYLOAD


def test_weights_neither_cached_nor_downloadable_fail_naming_the_commands(server, tmp_path):
    entry = dataclasses.replace(_entry(), origin_path="mirror/nowhere.h5")

    with pytest.raises(WeightsUnavailable) as raised:
        entry.fetch(base_url=server.base_url, cache_dir=tmp_path / "models", weights_dir=tmp_path)

    message = str(raised.value)
    assert "python manage.py weights fetch tiny_imagenet" in message
    assert "python manage.py weights import tiny_imagenet FILE" in message
    assert "404" in message


def test_without_a_base_url_nothing_is_downloaded(server, tmp_path):
    with pytest.raises(WeightsUnavailable, match="weights import tiny_imagenet"):
        _entry().fetch(base_url="", cache_dir=tmp_path / "models", weights_dir=tmp_path)
    assert server.requests == []


def test_import_copies_a_file_with_the_right_hash_into_the_cache(tmp_path):
    copied = tmp_path / "usb-stick" / "tiny_notop.h5"
    copied.parent.mkdir()
    copied.write_bytes(PAYLOAD)
    cache = tmp_path / "models"

    path = _entry().import_file(copied, cache_dir=cache, weights_dir=tmp_path)

    assert path == cache / "tiny_notop.h5" and path.read_bytes() == PAYLOAD
    assert _entry().is_cached(cache_dir=cache, weights_dir=tmp_path)


def test_import_refuses_a_file_with_another_hash(tmp_path):
    wrong = tmp_path / "tiny_notop.h5"
    wrong.write_bytes(PAYLOAD + b"tampered")
    cache = tmp_path / "models"

    with pytest.raises(WeightsUnavailable, match="sha256"):
        _entry().import_file(wrong, cache_dir=cache, weights_dir=tmp_path)
    assert not cache.exists() or not list(cache.iterdir())


def test_a_keras_application_is_built_from_the_fetched_file(tmp_path):
    """MobileNetV3-Small's registry entry, with a file of random weights in the legacy h5 layout."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    model = keras.applications.MobileNetV3Small(
        input_shape=(96, 96, 3), include_top=False, weights=None, pooling="avg", include_preprocessing=True
    )
    path = tmp_path / "models" / "weights.h5"
    path.parent.mkdir()
    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, model)
    entry = dataclasses.replace(
        BACKBONES["mobilenet_v3_small_imagenet"],
        file_name="weights.h5",
        file_hash=hashlib.sha256(path.read_bytes()).hexdigest(),
    )

    backbone = entry.build(image_size=96, base_url="", cache_dir=path.parent, weights_dir=tmp_path)

    images = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3)).astype("float32")
    np.testing.assert_allclose(backbone.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-5)


def test_lite0_needs_no_download_and_nothing_to_import(tmp_path):
    lite = backbone_named("efficientnet_lite0")
    assert not lite.is_cached(weights_dir=tmp_path)

    lite.fetch(base_url="", weights_dir=tmp_path)

    assert lite.is_cached(weights_dir=tmp_path)
    with pytest.raises(WeightsUnavailable, match="nothing to import"):
        lite.import_file(tmp_path / "anything.pth", weights_dir=tmp_path)


def test_unknown_backbones_and_small_images_are_refused_with_a_message():
    with pytest.raises(ValueError, match="unknown backbone 'resnet'"):
        backbone_named("resnet")
    with pytest.raises(ValueError, match="at least 96"):
        check_image_size(64)
    check_image_size(96)


def test_keras_cache_dir_is_found_without_loading_keras(monkeypatch, tmp_path):
    # A web page lists the starting points and where their weights are: that must not load TensorFlow.
    import sys

    from ml.backbones import keras_cache_dir

    for name in [name for name in sys.modules if name == "keras" or name.startswith("keras.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    assert keras_cache_dir() == tmp_path / "keras-home"
    assert "keras" not in sys.modules
