"""Choosing a starting point by repeated cross-validation on a small dataset (ml/selection.py)."""

import numpy as np
import pytest

from ml.selection import CandidateScore, choose, is_small, probe_fold_scores, repeated_folds

# A short grid of L2 strengths keeps these tests fast; the trainer uses the probe's whole grid.
GRID = (0.01, 0.1, 1.0)


def features_and_labels(per_label=8, labels=3, dimensions=12, noise=1.5, seed=0):
    generator = np.random.default_rng(seed)
    y = np.repeat(np.arange(labels), per_label)
    centres = generator.normal(size=(labels, dimensions)) * 2
    x = (centres[y] + generator.normal(scale=noise, size=(len(y), dimensions))).astype(np.float32)
    return x, y


def own_split(y, seed=0):
    generator = np.random.default_rng(seed)
    validation = np.sort(
        np.concatenate([generator.choice(np.flatnonzero(y == label), 2, replace=False) for label in np.unique(y)])
    )
    train = np.setdiff1d(np.arange(len(y)), validation)
    return train, validation


def test_a_dataset_is_small_below_fifty_images_of_some_label():
    y = np.array([0] * 60 + [1] * 49)
    assert is_small(y, np.arange(len(y)))
    assert not is_small(y, np.arange(60 + 49), per_label=49)
    assert not is_small(np.array([0] * 50 + [1] * 50), np.arange(100))


def test_the_folds_start_with_the_runs_own_split_then_repeat_a_stratified_k_fold():
    _, y = features_and_labels(per_label=8)
    train, validation = own_split(y)

    folds = repeated_folds(y, train=train, validation=validation, seed=4, repeats=2)

    assert np.array_equal(folds[0][0], train) and np.array_equal(folds[0][1], validation)
    assert len(folds) == 1 + 2 * 5
    for fold_train, scored in folds[1:]:
        assert not set(fold_train) & set(scored)
        assert set(np.bincount(y[scored], minlength=3).tolist()) <= {1, 2}  # stratified: 8 images in 5 folds
    # Each repeat's folds cover every image once.
    first_repeat = np.sort(np.concatenate([scored for _, scored in folds[1:6]]))
    assert np.array_equal(first_repeat, np.arange(len(y)))
    # The same seed gives the same folds; another seed others.
    again = repeated_folds(y, train=train, validation=validation, seed=4, repeats=2)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))
    other = repeated_folds(y, train=train, validation=validation, seed=5, repeats=2)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(folds[1:], other[1:], strict=True))


def test_with_one_image_of_a_label_only_the_runs_own_split_is_scored():
    y = np.array([0, 0, 0, 1, 1, 1, 2])
    folds = repeated_folds(y, train=np.array([0, 1, 3, 4, 6]), validation=np.array([2, 5]), seed=0)
    assert len(folds) == 1


def test_the_probe_is_scored_on_every_fold_and_the_same_data_and_seed_give_the_same_scores():
    x, y = features_and_labels(per_label=8)
    train, validation = own_split(y)
    folds = repeated_folds(y, train=train, validation=validation, seed=1)

    first = probe_fold_scores(x, y, folds, num_classes=3, seed=1, c_grid=GRID)
    second = probe_fold_scores(x, y, folds, num_classes=3, seed=1, c_grid=GRID)

    assert len(first.accuracies) == len(folds) and first.scored == list(range(len(folds)))
    assert first.accuracies == second.accuracies and first.losses == second.losses
    assert 0.5 < first.mean() <= 1.0
    summary = first.as_dict()
    assert summary["folds"] == len(folds) and summary["spread"] >= 0 and summary["mean"] == round(first.mean(), 4)


def test_the_probe_on_informative_features_beats_it_on_noise_by_cross_validation():
    x, y = features_and_labels(per_label=8, noise=0.5)
    noise = np.random.default_rng(3).normal(size=x.shape).astype(np.float32)
    train, validation = own_split(y)
    folds = repeated_folds(y, train=train, validation=validation, seed=2, repeats=1)

    good = probe_fold_scores(x, y, folds, num_classes=3, seed=2, name="good", c_grid=GRID)
    bad = probe_fold_scores(noise, y, folds, num_classes=3, seed=2, name="noise", c_grid=GRID)
    index, reason = choose([bad, good])

    assert index == 1 and "best mean accuracy" in reason and "noise" in reason


def test_candidates_are_compared_on_the_folds_they_share():
    # The head is better on average over all its folds, but worse on the two folds the code was scored on.
    head = CandidateScore(name="head", accuracies=[0.6, 0.7, 1.0, 1.0, 1.0], losses=[0.5] * 5)
    code = CandidateScore(name="code", accuracies=[0.8, 0.8, None, None, None], losses=[0.4, 0.4, None, None, None])

    index, reason = choose([head, code])

    assert head.mean() > code.mean()
    assert index == 1
    assert "2 fold(s)" in reason and "80.0%" in reason and "65.0%" in reason


@pytest.mark.parametrize(
    ("losses", "winner", "words"),
    [([0.3, 0.2], 1, "lower mean loss"), ([0.2, 0.2], 0, "tried first")],
)
def test_a_tie_goes_to_the_lower_loss_then_to_the_cheaper_candidate(losses, winner, words):
    first = CandidateScore(name="first", accuracies=[0.9, 0.9], losses=[losses[0]] * 2)
    second = CandidateScore(name="second", accuracies=[0.9, 0.9], losses=[losses[1]] * 2)
    index, reason = choose([first, second])
    assert index == winner and words in reason


def test_the_same_features_labels_and_seed_choose_the_same_candidate():
    x, y = features_and_labels(per_label=6, noise=2.5, seed=7)
    other = x[:, ::-1] + np.random.default_rng(8).normal(scale=2.0, size=x.shape).astype(np.float32)
    train, validation = own_split(y, seed=7)

    def decide():
        folds = repeated_folds(y, train=train, validation=validation, seed=11, repeats=1)
        scores = [
            probe_fold_scores(x, y, folds, num_classes=3, seed=11, name="a", c_grid=GRID),
            probe_fold_scores(other, y, folds, num_classes=3, seed=11, name="b", c_grid=GRID),
        ]
        return choose(scores), [score.accuracies for score in scores]

    assert decide() == decide()


def test_with_the_runs_l2_strength_each_fold_is_one_fit(monkeypatch):
    from ml import probe

    x, y = features_and_labels(per_label=6)
    train, validation = own_split(y)
    folds = repeated_folds(y, train=train, validation=validation, seed=3, repeats=1)
    fits = []
    real_fit = probe._fit
    monkeypatch.setattr(probe, "_fit", lambda *args, **kwargs: fits.append(args[3]) or real_fit(*args, **kwargs))

    fixed = probe_fold_scores(x, y, folds, num_classes=3, seed=3, c=0.1)

    assert fits == [0.1] * len(folds)
    assert fixed.accuracies == probe_fold_scores(x, y, folds, num_classes=3, seed=3, c_grid=(0.1,)).accuracies
