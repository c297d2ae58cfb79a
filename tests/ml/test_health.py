"""Dataset health's computations on synthetic features and generated images (no Django, no backbone)."""

import numpy as np
from PIL import Image, ImageEnhance

from ml import health


def clustered_features(count=400, classes=10, dimensions=32, seed=0):
    generator = np.random.default_rng(seed)
    labels = np.arange(count) % classes
    centres = generator.normal(0, 3, (classes, dimensions))
    return centres[labels] + generator.normal(0, 1, (count, dimensions)), labels


def flip(labels, fraction, classes, seed=1):
    generator = np.random.default_rng(seed)
    flipped = generator.choice(len(labels), int(len(labels) * fraction), replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + generator.integers(1, classes, len(flipped))) % classes
    return noisy, flipped


def test_five_percent_flipped_labels_rank_among_the_first_suspects():
    features, labels = clustered_features()
    noisy, flipped = flip(labels, 0.05, 10)
    probabilities = health.out_of_fold_probabilities(
        noisy, num_classes=10, fit_predict=health.head_fit_predict(features, noisy, num_classes=10)
    )
    top = health.ranked_by_quality(noisy, probabilities)[: 2 * len(flipped)]
    assert len(set(top) & set(flipped)) >= 0.7 * len(flipped)
    issues = health.find_label_issues(noisy, probabilities)
    found = {issue.row for issue in issues}
    assert len(found & set(flipped)) >= 0.7 * len(flipped)
    suggested = {issue.row: issue.suggested for issue in issues}
    assert sum(suggested.get(row) == labels[row] for row in flipped) >= 0.7 * len(flipped)


def test_fewer_folds_when_a_label_has_few_images():
    assert health.fold_count(np.array([0] * 50 + [1] * 3)) == 3
    assert health.fold_count(np.array([0] * 50 + [1] * 1)) == 2
    assert health.fold_count(np.array([0] * 50 + [1] * 50)) == 5


def noise_image(seed, size=32):
    pixels = np.random.default_rng(seed).integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8)
    return Image.fromarray(pixels).resize((size, size), Image.Resampling.NEAREST)


def test_planted_exact_and_near_duplicates_are_grouped(tmp_path):
    paths = []
    for seed in range(8):
        path = tmp_path / f"{seed}.png"
        noise_image(seed).save(path)
        paths.append(path)
    # 8: the bytes of 0 again; 9: the pixels of 1 as a BMP; 10: 2 a little brighter as a JPEG.
    (tmp_path / "8.png").write_bytes(paths[0].read_bytes())
    noise_image(1).save(tmp_path / "9.bmp")
    ImageEnhance.Brightness(noise_image(2)).enhance(1.08).save(tmp_path / "10.jpg", quality=92)
    paths += [tmp_path / "8.png", tmp_path / "9.bmp", tmp_path / "10.jpg"]
    groups = health.duplicate_groups([health.image_hashes(path) for path in paths])
    assert {tuple(group["rows"]): group["exact"] for group in groups} == {(0, 8): True, (1, 9): True, (2, 10): False}


def test_a_duplicate_in_training_and_in_validation_is_a_leak():
    groups = [{"rows": [0, 1], "exact": True}, {"rows": [2, 3], "exact": False}]
    item_ids = [10, 11, 12, 13]
    splits = {"train": [10, 12, 13], "validation": [11], "test": []}
    leaks = health.leaking_groups(groups, item_ids=item_ids, splits=splits)
    assert leaks == [{"rows": [0, 1], "exact": True, "splits": ["train", "validation"]}]


def test_an_image_far_from_every_label_is_an_outlier():
    features, labels = clustered_features(count=200, classes=4)
    features[17] = 40.0
    scores = health.outlier_scores(features, labels, num_classes=4)
    assert health.find_outliers(scores)[0] == 17
    assert 17 in health.find_outliers(scores) and len(health.find_outliers(scores)) < 10


def test_label_balance_names_the_small_labels_and_the_imbalance():
    balance = health.label_balance({"cat": 120, "dog": 30, "fox": 3})
    assert balance["smallest"][0] == {"label": "fox", "count": 3}
    assert balance["imbalance_ratio"] == 40
    text = " ".join(balance["notes"])
    assert "'fox' has 3 images" in text and "add at least 17" in text and "balance classes" in text
