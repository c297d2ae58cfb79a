"""Explanation benchmark: what one occlusion heatmap costs, for the default code and a pretrained model.

    .venv/bin/python -m bench.explain [--repeat 5]

One run, one machine. Two models with untrained (random) weights - the cost of a forward pass does not
depend on the weights' values:
  - the default model code at 64 px (the dataset default), 3 labels;
  - EfficientNet-Lite0 at 224 px with a 3-label head (assembled as a pretrained run's model is).
Each is exported to ONNX and checked against Keras as a trained run's is, then served as the web process
serves it: ONNX Runtime with one thread (KERASUI_INFERENCE_THREADS=1), and Keras as the fallback. For
each: one prediction, one heatmap (ml.explain.occlusion_map: 64 occluded copies and the image
in one batch), and the overlay PNG over a 640×480 photo shown at 384 px; median and worst of `--repeat`
runs after a warm-up.
Prints a table and writes bench/results/explain.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import write_results


def timed(function, repeat: int) -> dict:
    function()
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return {"median_ms": statistics.median(seconds) * 1000, "max_ms": max(seconds) * 1000}


def build_models(folder: Path) -> dict[str, tuple[Path, int]]:
    """The two models as .keras files beside their proven ONNX exports: {name: (keras path, image size)}."""
    import keras

    from ml.efficientnet_lite import build_efficientnet_lite0
    from ml.export import export_model
    from ml.models import DEFAULT_PROCESS, ModelSpec, build_model
    from ml.transfer import assemble_model, build_head

    keras.utils.set_random_seed(0)
    models = {
        "default code, 64 px": (
            build_model(ModelSpec(code=DEFAULT_PROCESS, image_size=64, channels=3, num_classes=3)),
            64,
        ),
        "EfficientNet-Lite0, 224 px": (
            assemble_model(
                build_efficientnet_lite0(image_size=224),
                build_head(dimensions=1280, num_classes=3, dropout=0.2),
                channels=3,
            ),
            224,
        ),
    }
    paths = {}
    for index, (name, (model, size)) in enumerate(models.items()):
        path = folder / f"model_{index}.keras"
        model.save(path)
        sample = np.random.default_rng(index).integers(0, 256, (4, size, size, 3), dtype=np.uint8)
        report = export_model(path, format="onnx", target=path.with_suffix(".onnx"), images=sample)
        if not report.ok:
            raise SystemExit(f"{name}: the ONNX export was refused: {report.error}")
        paths[name] = (path, size)
    return paths


def measure(paths: dict[str, tuple[Path, int]], repeat: int) -> dict:
    from PIL import Image

    from ml.engines import KERAS, ONNXRUNTIME, load_predictor
    from ml.explain import DISPLAY_SIDE, GRID, occlusion_map, overlay_png

    photo = Image.effect_noise((640, 480), 60).convert("RGB")
    shown = photo.copy()
    shown.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE))  # as ml.explain.display_image shows an image
    results = {}
    for name, (path, size) in paths.items():
        image = np.asarray(photo.resize((size, size)), dtype=np.uint8)
        for engine in (ONNXRUNTIME, KERAS):
            predictor = load_predictor(engine, path.with_suffix(".onnx") if engine == ONNXRUNTIME else path, threads=1)
            heat = occlusion_map(predictor.predict, image, 0)
            results[f"{name} | {engine}"] = {
                "forward_passes_per_heatmap": GRID * GRID + 1,
                "prediction": timed(lambda p=predictor, x=image: p.predict(x[np.newaxis]), repeat),
                "heatmap": timed(lambda p=predictor, x=image: occlusion_map(p.predict, x, 0), repeat),
                "overlay_png": timed(lambda heat=heat: overlay_png(shown, heat), repeat),
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="kerasui-bench-explain-") as folder:
        results = measure(build_models(Path(folder)), args.repeat)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"
    print(f"One occlusion heatmap (64 occluded copies + the image, one batch), {machine}")
    print(f"{'model | engine':46} {'predict ms':>11} {'heatmap ms':>11} {'worst ms':>9} {'overlay ms':>11}")
    for name, figures in results.items():
        print(
            f"{name:46} {figures['prediction']['median_ms']:11.1f} {figures['heatmap']['median_ms']:11.1f} "
            f"{figures['heatmap']['max_ms']:9.1f} {figures['overlay_png']['median_ms']:11.1f}"
        )
    out = write_results("explain", {"machine": machine, "repeat": args.repeat, "results": results})
    print(f"written to {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")


if __name__ == "__main__":
    main()
