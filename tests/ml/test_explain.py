"""Occlusion sensitivity: a heatmap of the image's size, 0..1, hot where the object the model reads is;
its overlay is a PNG of the image's size; any engine's forward pass will do."""

import io

import numpy as np
import pytest
from PIL import Image

from ml.engines import ONNXRUNTIME, load_predictor
from ml.explain import GRID, display_image, occlusion_map, overlay_png, patch_boxes

RED, BLUE = (220, 30, 30), (30, 60, 220)


def square_on_background(size: int, box: tuple[int, int, int, int], colour=RED, background=BLUE) -> np.ndarray:
    """A plain background with one coloured square at `box` (top, left, bottom, right)."""
    image = np.zeros((size, size, 3), dtype=np.uint8)
    image[:, :] = background
    top, left, bottom, right = box
    image[top:bottom, left:right] = colour
    return image


def redness_model(images: np.ndarray) -> np.ndarray:
    """A hand-made two-label model: 'red square' grows with the number of strongly red pixels."""
    pixels = images.astype(np.float64)
    red = (pixels[..., 0] > 150) & (pixels[..., 2] < 100)
    share = red.reshape(len(images), -1).mean(axis=1)
    red_probability = 1 / (1 + np.exp(-(share - 0.02) * 200))
    return np.stack([1 - red_probability, red_probability], axis=1)


def inside_and_outside(heat: np.ndarray, box) -> tuple[float, float]:
    top, left, bottom, right = box
    mask = np.zeros(heat.shape, dtype=bool)
    mask[top:bottom, left:right] = True
    return float(heat[mask].mean()), float(heat[~mask].mean())


@pytest.mark.parametrize("box", [(4, 4, 12, 12), (20, 18, 30, 28)])
def test_the_heat_concentrates_on_the_red_square_wherever_it_is(box):
    image = square_on_background(32, box)
    heat = occlusion_map(redness_model, image, class_index=1)
    inside, outside = inside_and_outside(heat, box)
    assert inside > 2 * outside
    hottest = np.unravel_index(np.argmax(heat), heat.shape)
    assert box[0] <= hottest[0] < box[2] and box[1] <= hottest[1] < box[3]


def test_the_heatmap_has_the_images_size_and_values_between_0_and_1():
    for shape in [(32, 32, 3), (20, 28, 1), (224, 224, 3)]:
        image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        heat = occlusion_map(lambda batch: np.random.default_rng(1).random((len(batch), 3)), image, class_index=2)
        assert heat.shape == shape[:2]
        assert heat.min() >= 0 and heat.max() <= 1
        assert np.isclose(heat.max(), 1.0)


def test_one_batch_of_at_most_64_occluded_copies_is_predicted_whatever_the_size():
    calls = []

    def predict(batch):
        calls.append(batch.shape)
        return np.full((len(batch), 2), 0.5)

    for size in (16, 224, 300):
        occlusion_map(predict, np.zeros((size, size, 3), dtype=np.uint8), class_index=0)
    assert [shape[0] for shape in calls] == [GRID * GRID + 1] * 3
    assert len(patch_boxes(224, 224)) == 64
    # Nothing the model reads changes: no heat at all, not noise scaled up.
    assert not occlusion_map(predict, np.zeros((16, 16, 3), dtype=np.uint8), class_index=0).any()


def test_a_class_the_model_does_not_have_is_refused():
    with pytest.raises(ValueError, match="class_index 5"):
        occlusion_map(redness_model, square_on_background(16, (2, 2, 8, 8)), class_index=5)


def test_the_overlay_is_a_png_of_the_images_size_coloured_where_the_heat_is():
    image = Image.new("RGB", (60, 40), (128, 128, 128))
    heat = np.zeros((16, 16))
    heat[:, 8:] = 1.0
    overlay = Image.open(io.BytesIO(overlay_png(image, heat)))
    assert overlay.format == "PNG" and overlay.size == (60, 40)
    pixels = np.asarray(overlay.convert("RGB"), dtype=int)
    # Hot (right) is red-dominant; cold (left) stays close to the grey image.
    assert pixels[20, 55, 0] > pixels[20, 55, 2] + 60
    assert abs(pixels[20, 3] - 128).max() < 60


def test_the_displayed_image_is_upright_and_at_most_the_display_size():
    buffer = io.BytesIO()
    photo = Image.new("RGB", (800, 400), RED)
    exif = photo.getexif()
    exif[0x0112] = 6  # rotated: a viewer shows it 400 wide, 800 high
    photo.save(buffer, format="JPEG", exif=exif)
    shown = display_image(buffer.getvalue(), max_side=200)
    assert shown.mode == "RGB" and shown.size == (100, 200)


def test_a_trained_model_served_by_onnx_runtime_looks_at_the_red_square_for_red(colour_model_file):
    """The default code trained on colours (tests/conftest.py), through the web process's engine: asked why
    'red' on a green image with a red square, the heat is on the square."""
    predictor = load_predictor(ONNXRUNTIME, colour_model_file.with_suffix(".onnx"), threads=1)
    box = (3, 8, 9, 14)
    image = square_on_background(16, box, colour=(220, 40, 40), background=(40, 200, 50))
    heat = occlusion_map(predictor.predict, image, class_index=["blue", "green", "red"].index("red"))
    assert heat.shape == (16, 16) and 0 <= heat.min() and heat.max() <= 1
    inside, outside = inside_and_outside(heat, box)
    assert inside > 2 * outside


def test_a_pretrained_starting_point_is_explained_in_one_batch():
    """EfficientNet-Lite0 as a run assembles it (random weights: the shape and the batch are what is checked;
    at 96 px to keep the test quick - 224 px costs about a second, see bench/explain.py)."""
    import keras

    from ml.efficientnet_lite import build_efficientnet_lite0
    from ml.transfer import assemble_model, build_head

    model = assemble_model(
        build_efficientnet_lite0(image_size=96), build_head(dimensions=1280, num_classes=3, dropout=0.2), channels=3
    )
    batches = []

    def predict(batch):
        batches.append(len(batch))
        return keras.ops.convert_to_numpy(model(batch.astype(np.float32), training=False))

    image = square_on_background(96, (20, 50, 44, 80))
    heat = occlusion_map(predict, image, class_index=int(predict(image[np.newaxis]).argmax()))
    assert heat.shape == (96, 96) and 0 <= heat.min() and heat.max() <= 1
    assert batches == [1, GRID * GRID + 1]
