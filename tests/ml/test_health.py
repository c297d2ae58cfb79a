"""Dataset health's computations on synthetic features and generated images (no Django, no backbone)."""

import numpy as np
from PIL import Image, ImageEnhance

from ml import health
from tests.memory import needs_smaps, resident_bytes, traced_peak


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


# Bounded memory at 60,000 images (issue 24): the same answers as the whole-array formulas, in chunks.


def every_near_pair(hashes, max_bits):
    """The pairs as every row against every other row finds them."""
    distances = [
        [bin(int(a) ^ int(b)).count("1") for a, b in zip(first, second, strict=True)]
        for first, second in ((hashes[i], hashes[j]) for i in range(len(hashes)) for j in range(i + 1, len(hashes)))
    ]
    pairs = [(i, j) for i in range(len(hashes)) for j in range(i + 1, len(hashes))]
    return [pair for pair, bits in zip(pairs, distances, strict=True) if max(bits) <= max_bits]


def test_near_pairs_in_small_squares_are_every_close_pair():
    generator = np.random.default_rng(3)
    # Hashes of 16 bits (as uint64), so that random rows are often close in one column and not the other.
    hashes = generator.integers(0, 1 << 16, (200, 2), dtype=np.uint64)
    hashes[50] = hashes[7]
    hashes[199] = hashes[0] ^ np.uint64(0b101)
    expected = every_near_pair(hashes, 4)
    assert (0, 199) in expected and (7, 50) in expected and len(expected) > 20
    for chunk in (1, 7, 64, 1000):
        assert health.near_pairs(hashes, max_bits=4, chunk=chunk) == expected


def test_near_pairs_memory_does_not_grow_with_the_number_of_rows():
    hashes = np.random.default_rng(4).integers(0, 1 << 63, (6000, 2), dtype=np.uint64)
    _, peak = traced_peak(lambda: health.near_pairs(hashes, max_bits=6, chunk=64))
    # A strip of 64 rows against all 6,000 is 3 MB of uint64; a square of 64 × 64, 32 kB.
    assert peak < 64 * len(hashes) * 8 / 4


def whole_array_outlier_scores(features, labels, num_classes):
    """The formula as it was, over the whole array at once."""
    features = np.asarray(features, dtype=np.float64)
    features = (features - features.mean(axis=0)) / (features.std(axis=0) + 1e-6)
    centres = np.stack(
        [features[labels == label].mean(axis=0) if (labels == label).any() else np.full(features.shape[1], np.inf)
         for label in range(num_classes)]
    )  # fmt: skip
    squared = (features**2).sum(axis=1)[:, None] - 2 * features @ np.where(np.isinf(centres), 0, centres).T
    squared += np.where(np.isinf(centres), np.inf, centres**2).sum(axis=1)[None, :]
    nearest = np.sqrt(np.maximum(squared.min(axis=1), 0))
    median = np.median(nearest)
    return (nearest - median) / (np.median(np.abs(nearest - median)) * 1.4826 + 1e-9)


def test_outlier_scores_in_chunks_are_the_whole_array_scores():
    features, labels = clustered_features(count=1000, classes=5, dimensions=24)
    features = features.astype(np.float32)
    features[[3, 400]] = 25.0
    # Label 5 of 6 has no image: it has no centre and is never the nearest.
    expected = whole_array_outlier_scores(features, labels, 6)
    for chunk in (1, 97, 4096):
        scores = health.outlier_scores(features, labels, num_classes=6, chunk=chunk)
        np.testing.assert_allclose(scores, expected, rtol=1e-9, atol=1e-9)
        assert health.find_outliers(scores) == health.find_outliers(expected)


def test_outlier_scores_never_copy_the_features_whole():
    features, labels = clustered_features(count=20000, classes=10, dimensions=64)
    features = features.astype(np.float32)
    _, peak = traced_peak(lambda: health.outlier_scores(features, labels, num_classes=10, chunk=1024))
    # One float64 copy of the features is 10 MB; the whole-array formula held three at once.
    assert peak < features.size * 8 / 2


def test_a_fold_holds_one_copy_of_its_training_features():
    features, labels = clustered_features(count=20000, classes=10, dimensions=64)
    features = features.astype(np.float32)
    train_rows, held_out_rows = np.arange(4000, 20000), np.arange(4000)
    fit_predict = health.head_fit_predict(features, labels, num_classes=10)
    probabilities, peak = traced_peak(lambda: fit_predict(train_rows, held_out_rows))
    assert probabilities.shape == (4000, 10) and (probabilities.argmax(axis=1) == labels[:4000]).mean() > 0.9
    # The copy of the 16,000 training rows is 4 MB; centring and scaling them made two more, and the
    # norms a third.
    assert peak < 2 * features[train_rows].nbytes


@needs_smaps
def test_the_label_check_and_the_outliers_leave_a_feature_file_in_the_page_cache(tmp_path):
    features, labels = clustered_features(count=8000, classes=10, dimensions=256)
    np.save(tmp_path / "features.npy", features.astype(np.float32))
    mapped = np.load(tmp_path / "features.npy", mmap_mode="r")
    fit_predict = health.head_fit_predict(mapped, labels, num_classes=10)
    fit_predict(np.arange(2000, 8000), np.arange(2000))
    # The fold read every row (8 MB) into its own copy; the file's pages need not stay in this process.
    assert resident_bytes(tmp_path / "features.npy") < mapped.nbytes / 2
    scores = health.outlier_scores(mapped, labels, num_classes=10)
    assert resident_bytes(tmp_path / "features.npy") < mapped.nbytes / 2
    np.testing.assert_allclose(scores, whole_array_outlier_scores(features.astype(np.float32), labels, 10), atol=1e-9)
