"""Export a trained model to other formats and prove each one in its own runtime; inspect an uploaded model.

Both run in a child process (`python -m ml.export`, a JSON request on stdin, one JSON
report line on stdout) so TensorFlow's conversions never grow the web process and a hang is killed.
Every export is of the inference function (training=False, augmentation left out), and is loaded
back in its runtime - Keras, TensorFlow, the TFLite interpreter, ONNX Runtime - and compared with
the Keras model on sample images: the largest absolute difference of a probability is the proof.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ml.child import ChildFailed, ChildTimedOut, run_module, serve
from ml.files import atomic_path

FORMATS = ("keras", "h5", "savedmodel", "tflite", "onnx")
PRECISIONS = ("float32", "float16")
# Largest accepted difference of a probability; float16 weights round to about 3 decimal digits.
TOLERANCE = {"float32": 1e-4, "float16": 1e-3}
RUNTIMES = {
    "keras": "Keras",
    "h5": "Keras",
    "savedmodel": "TensorFlow",
    "tflite": "TFLite interpreter",
    "onnx": "ONNX Runtime",
}
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
ONNX_OPSET = 17


@dataclass
class ExportReport:
    """What exporting and checking one format found: the largest difference, or why it failed."""

    ok: bool
    max_difference: float | None = None
    tolerance: float | None = None
    samples: int = 0
    size: int = 0
    seconds: float = 0.0
    runtime: str = ""
    error: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class ModelInfo:
    """What loading an uploaded model (safe mode) told: its input and output shapes, or the error."""

    ok: bool
    input_shape: list = field(default_factory=list)
    output_shape: list = field(default_factory=list)
    error: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def file_name(format: str, precision: str = "float32") -> str:
    """The export's file name inside the run's export folder."""
    suffix = {"keras": "keras", "h5": "h5", "savedmodel": "zip", "tflite": "tflite", "onnx": "onnx"}[format]
    stem = "savedmodel" if format == "savedmodel" else "model"
    return f"{stem}-float16.{suffix}" if precision == "float16" else f"{stem}.{suffix}"


def _is_augmentation(layer) -> bool:
    from keras import layers

    random_layers = tuple(
        getattr(layers, name)
        for name in dir(layers)
        if name.startswith("Random") and isinstance(getattr(layers, name), type)
    )
    return layer.name == "augmentation" or isinstance(layer, random_layers)


def inference_model(model):
    """The model as it predicts: a Sequential's augmentation (identity outside training) left out.

    The random layers hold seed state that SavedModel, TFLite and ONNX cannot carry, and they do
    nothing at inference; the same trained layers (shared weights) make the rest of the model.
    """
    import keras

    if not isinstance(model, keras.Sequential):
        return model
    kept = [layer for layer in model.layers if not _is_augmentation(layer)]
    if len(kept) == len(model.layers):
        return model
    return keras.Sequential([keras.Input(model.input_shape[1:]), *kept], name=model.name)


def _serving_function(model):
    import tensorflow as tf

    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=INPUT_NAME)

    def serve(image):
        return {OUTPUT_NAME: model(image, training=False)}

    return tf.function(serve, input_signature=[spec]), spec


def _write_savedmodel(model, folder: Path, metadata: dict) -> None:
    import keras

    serve, _ = _serving_function(model)
    archive = keras.export.ExportArchive()
    # Tracking the model makes every variable it uses reachable from the SavedModel's root.
    archive.track(model)
    archive.add_endpoint("serving_default", serve)
    archive.write_out(str(folder), verbose=False)
    # TensorFlow Serving's place for files that are not part of the graph.
    extra = folder / "assets.extra"
    extra.mkdir(exist_ok=True)
    (extra / "kerasui.json").write_text(json.dumps(metadata, indent=2))


def _zip_folder(folder: Path, target: Path, root: str) -> None:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"{root}/{path.relative_to(folder).as_posix()}")


def _write(model, format: str, precision: str, target: Path, metadata: dict, work: Path) -> None:
    """Write `model` (the inference model) as `format` to `target`."""
    if format in {"keras", "h5"}:
        model.save(str(target))
    elif format == "savedmodel":
        _write_savedmodel(model, work / "saved_model", metadata)
        _zip_folder(work / "saved_model", target, "saved_model")
    elif format == "tflite":
        import tensorflow as tf

        _write_savedmodel(model, work / "for_tflite", metadata)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(work / "for_tflite"))
        if precision == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        target.write_bytes(converter.convert())
    elif format == "onnx":
        import onnx
        import tf2onnx

        serve, spec = _serving_function(model)
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=ONNX_OPSET)
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key = key
            entry.value = value if isinstance(value, str) else json.dumps(value)
        onnx.save(proto, str(target))
    else:
        raise ValueError(f"unknown format {format!r}: choose one of {', '.join(FORMATS)}")


def _tflite_interpreter(path: Path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806 - the class, whichever package provides it
    return Interpreter(model_path=str(path))


def run_export(path: Path, format: str, images: np.ndarray, work: Path) -> np.ndarray:
    """Load an export in its own runtime and return its probabilities for `images` (float32, 0..255)."""
    images = images.astype(np.float32)
    if format in {"keras", "h5"}:
        import keras

        model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
        return np.asarray(keras.ops.convert_to_numpy(model(images, training=False)))
    if format == "savedmodel":
        import tensorflow as tf

        folder = work / "loaded"
        with zipfile.ZipFile(path) as archive:
            archive.extractall(folder)
        serve = tf.saved_model.load(str(folder / "saved_model")).signatures["serving_default"]
        return serve(**{INPUT_NAME: tf.constant(images)})[OUTPUT_NAME].numpy()
    if format == "tflite":
        interpreter = _tflite_interpreter(path)
        signature = interpreter.get_signature_runner("serving_default")
        return signature(**{INPUT_NAME: images})[OUTPUT_NAME]
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]
    raise ValueError(f"unknown format {format!r}")


def export_model(
    model_path: str | Path,
    *,
    format: str,
    target: str | Path,
    images: np.ndarray,
    precision: str = "float32",
    metadata: dict | None = None,
) -> ExportReport:
    """Export the .keras model at `model_path` to `target` and check it against Keras on `images`.

    An export whose largest difference is above the precision's tolerance is reported not ok (and
    the caller must not serve it); `target` is written either way, the caller decides what to keep.
    """
    import keras

    started = time.monotonic()
    refused = _refused(format, precision)
    if refused is not None:
        return refused
    try:
        model = keras.saving.load_model(str(model_path), compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001 - a model that does not load cannot be exported
        report = ExportReport(ok=False, runtime=RUNTIMES.get(format, ""), samples=len(images))
        report.error = f"the {format} export failed: {type(error).__name__}: {_one_line(error)}"
        report.seconds = time.monotonic() - started
        return report
    report = export_loaded_model(
        model, format=format, target=target, images=images, precision=precision, metadata=metadata
    )
    report.seconds = time.monotonic() - started
    return report


# Bump when what `_extractor_onnx` caches changes; the newest EXTRACTORS_KEPT conversions are kept.
EXTRACTOR_FORMAT = 1
EXTRACTORS_KEPT = 4
FEATURES_NAME = "features"


def _pretrained_parts(model):
    """(feature extractor, softmax Dense layer) of a model made by transfer.assemble_model, else None."""
    import keras

    if model.name != "kerasui_pretrained" or len(model.layers) < 3:
        return None
    head, backbone = model.layers[-1], model.layers[-2]
    if head.name != "head" or not isinstance(backbone, keras.Model):
        return None
    try:
        dense = head.get_layer("predictions")
    except ValueError:
        return None
    if getattr(dense.activation, "__name__", "") != "softmax" or not dense.use_bias:
        return None
    from ml.transfer import backbone_features

    return backbone_features(backbone, channels=int(model.input_shape[-1])), dense


def _extractor_key(extractor) -> str:
    digest = hashlib.sha256(json.dumps([EXTRACTOR_FORMAT, ONNX_OPSET, list(extractor.input_shape)]).encode())
    for weight in extractor.weights:
        digest.update(weight.path.encode())
        digest.update(np.ascontiguousarray(keras_numpy(weight)).tobytes())
    return digest.hexdigest()[:32]


def keras_numpy(variable) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(variable))


def _extractor_onnx(extractor, folder: Path, work: Path) -> Path:
    """The extractor's ONNX conversion (output `features`), made once for its weights and input shape."""
    import onnx

    path = folder / f"extractor-{_extractor_key(extractor)}.onnx"
    if path.is_file():
        os.utime(path)  # recently used: pruning keeps it
        return path
    converted = work / "extractor.onnx"
    _write(extractor, "onnx", "float32", converted, {}, work)
    proto = onnx.load(str(converted))
    for node in proto.graph.node:
        node.output[:] = [FEATURES_NAME if name == OUTPUT_NAME else name for name in node.output]
        node.input[:] = [FEATURES_NAME if name == OUTPUT_NAME else name for name in node.input]
    proto.graph.output[0].name = FEATURES_NAME
    with atomic_path(path) as temporary:
        onnx.save(proto, str(temporary))
    for older in sorted(folder.glob("extractor-*.onnx"), key=lambda file: file.stat().st_mtime)[:-EXTRACTORS_KEPT]:
        older.unlink(missing_ok=True)
    return path


def onnx_with_head(extractor_path: Path, kernel: np.ndarray, bias: np.ndarray, target: Path, metadata: dict) -> None:
    """The extractor's ONNX graph followed by softmax(features @ kernel + bias), saved at `target`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    proto = onnx.load(str(extractor_path))
    graph = proto.graph
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.asarray(kernel, dtype=np.float32), "head_kernel"),
            numpy_helper.from_array(np.asarray(bias, dtype=np.float32), "head_bias"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("MatMul", [FEATURES_NAME, "head_kernel"], ["head_matmul"], name="head_matmul"),
            helper.make_node("Add", ["head_matmul", "head_bias"], ["head_logits"], name="head_add"),
            helper.make_node("Softmax", ["head_logits"], [OUTPUT_NAME], axis=-1, name="head_softmax"),
        ]
    )
    batch = graph.input[0].type.tensor_type.shape.dim[0].dim_param or None
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [batch, int(kernel.shape[1])]))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(target))


def _refused(format: str, precision: str) -> ExportReport | None:
    if format not in FORMATS:
        return ExportReport(ok=False, error=f"unknown format {format!r}: choose one of {', '.join(FORMATS)}")
    if precision not in PRECISIONS or (precision == "float16" and format != "tflite"):
        return ExportReport(ok=False, error=f"precision {precision} is not offered for {format}")
    return None


def export_loaded_model(
    model,
    *,
    format: str,
    target: str | Path,
    images: np.ndarray,
    precision: str = "float32",
    metadata: dict | None = None,
    cache_folder: str | Path | None = None,
) -> ExportReport:
    """`export_model` for a model already in memory: no reload of its file.

    The training process proves its new model's ONNX export this way, with TensorFlow and the model
    already loaded (a child process would import TensorFlow and load the file again). With a
    `cache_folder`, a pretrained backbone's head (transfer.assemble_model) is exported to ONNX as the
    backbone's cached conversion plus the head's softmax layer (`onnx_with_head`): the backbone is
    converted once per backbone, weights and input, not once per run. The proof is the same either way.
    """
    import keras

    started = time.monotonic()
    refused = _refused(format, precision)
    if refused is not None:
        return refused
    tolerance = TOLERANCE[precision]
    target = Path(target)
    report = ExportReport(ok=False, tolerance=tolerance, samples=len(images), runtime=RUNTIMES[format])
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        try:
            expected = np.asarray(keras.ops.convert_to_numpy(model(images.astype(np.float32), training=False)))
            parts = _pretrained_parts(model) if format == "onnx" and cache_folder is not None else None
            if parts is not None:
                extractor, dense = parts
                kernel, bias = (np.asarray(value) for value in dense.get_weights())
                onnx_with_head(
                    _extractor_onnx(extractor, Path(cache_folder), work), kernel, bias, target, metadata or {}
                )
            else:
                _write(inference_model(model), format, precision, target, metadata or {}, work)
        except Exception as error:  # noqa: BLE001 - any conversion failure is this format's answer
            report.error = f"the {format} export failed: {type(error).__name__}: {_one_line(error)}"
            report.seconds = time.monotonic() - started
            return report
        report.size = target.stat().st_size
        try:
            answered = np.asarray(run_export(target, format, images, work), dtype=np.float64)
        except Exception as error:  # noqa: BLE001 - an export its runtime cannot run is refused
            report.error = (
                f"the {format} export does not load or run in {RUNTIMES[format]}: "
                f"{type(error).__name__}: {_one_line(error)}"
            )
            report.seconds = time.monotonic() - started
            return report
    report.seconds = time.monotonic() - started
    if answered.shape != expected.shape:
        report.error = f"the {format} export answers with shape {answered.shape}, Keras with {expected.shape}"
        return report
    report.max_difference = float(np.max(np.abs(answered - expected))) if expected.size else 0.0
    if not np.isfinite(report.max_difference) or report.max_difference > tolerance:
        report.error = (
            f"the {format} export differs from the Keras model by up to {report.max_difference:.3g} "
            f"on {len(images)} sample images (tolerance {tolerance:g}); it is not served"
        )
        return report
    report.ok = True
    return report


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:300]


def inspect_model(path: str | Path) -> ModelInfo:
    """Load a .keras file with safe mode (no Python code from the file) and give its shapes."""
    import keras

    try:
        model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except ValueError as error:
        text = str(error)
        if "safe_mode" in text or "Lambda" in text or "lambda" in text:
            return ModelInfo(
                ok=False,
                error="the model contains Python code (such as a Lambda layer), which safe mode refuses to load: "
                "rebuild it from built-in Keras layers",
            )
        return ModelInfo(ok=False, error=f"not a Keras model Keras can load: {_one_line(error)}")
    except Exception as error:  # noqa: BLE001 - any unreadable upload is the user's to fix
        return ModelInfo(ok=False, error=f"not a Keras model file ({type(error).__name__}: {_one_line(error)})")
    if not isinstance(model, keras.Model):
        return ModelInfo(ok=False, error="the file holds a Keras object that is not a model")
    try:
        inputs, outputs = model.input_shape, model.output_shape
    except (AttributeError, ValueError) as error:
        return ModelInfo(ok=False, error=f"the model has no single input and output: {_one_line(error)}")
    if isinstance(inputs, list) or isinstance(outputs, list):
        return ModelInfo(ok=False, error="the model must have exactly one input and one output")
    return ModelInfo(ok=True, input_shape=list(inputs), output_shape=list(outputs))


def export_in_child(
    model_path: str | Path,
    *,
    format: str,
    target: str | Path,
    samples_path: str | Path,
    precision: str = "float32",
    metadata: dict | None = None,
    timeout: float = 600.0,
) -> ExportReport:
    """`export_model` in a child process with a time limit; `samples_path` is a .npy of images."""
    started = time.monotonic()
    request = {
        "task": "export",
        "model": str(model_path),
        "format": format,
        "target": str(target),
        "samples": str(samples_path),
        "precision": precision,
        "metadata": metadata or {},
    }
    try:
        data = run_module("ml.export", request, timeout=timeout)
    except ChildFailed as error:
        data = {"ok": False, "error": f"exporting {error}"}
    if "runtime" not in data:
        data["error"] = f"the {format} export failed: {data.get('error')}"
    known = {name for name in ExportReport.__dataclass_fields__}
    report = ExportReport(**{key: value for key, value in data.items() if key in known})
    report.seconds = round(time.monotonic() - started, 2)
    return report


def inspect_in_child(path: str | Path, *, timeout: float = 120.0) -> ModelInfo:
    """`inspect_model` in a child process with a time limit."""
    try:
        data = run_module("ml.export", {"task": "inspect", "model": str(path)}, timeout=timeout)
    except ChildTimedOut as error:
        data = {"ok": False, "error": f"loading the model {error}"}
    except ChildFailed as error:
        data = {"ok": False, "error": f"the model check {error}"}
    known = {name for name in ModelInfo.__dataclass_fields__}
    return ModelInfo(**{key: value for key, value in data.items() if key in known})


def _handle(request: dict) -> dict:
    if request.get("task") == "inspect":
        return inspect_model(request["model"]).as_dict()
    return export_model(
        request["model"],
        format=request["format"],
        target=request["target"],
        images=np.load(request["samples"]),
        precision=request.get("precision", "float32"),
        metadata=request.get("metadata"),
    ).as_dict()


def main() -> int:
    """Read a request as JSON on stdin, write one report line as JSON on stdout."""
    return serve(_handle)


if __name__ == "__main__":
    sys.exit(main())
