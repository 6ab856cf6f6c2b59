"""The per-cause bias fit: it finds a lean planted in the scores and undoes it."""

import numpy as np
import pytest

from training.calibrate import CAUSES, accuracy, fit_bias


def _leaning_scores(lean: float, n: int = 800, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scores where the right cause is a noisy 1.5 ahead, plus ``lean`` on the first cause."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CAUSES), n)
    scores = rng.normal(0, 1, (n, len(CAUSES)))
    scores[np.arange(n), labels] += 1.5
    scores[:, 0] += lean
    return scores, labels


def test_a_planted_lean_is_found_and_undone_on_fresh_cases() -> None:
    scores, labels = _leaning_scores(lean=2.0)
    fit = fit_bias(scores, labels)
    bias = np.array([fit.bias[c] for c in CAUSES])
    assert bias[0] - bias[1:].mean() == pytest.approx(-2.0, abs=0.3)
    assert fit.loss_after < fit.loss_before and fit.accuracy_after > fit.accuracy_before + 0.1
    fresh, truth = _leaning_scores(lean=2.0, seed=1)
    assert accuracy(fresh, truth, bias) > accuracy(fresh, truth) + 0.1


def test_scores_without_a_lean_get_next_to_no_bias() -> None:
    scores, labels = _leaning_scores(lean=0.0)
    assert max(abs(b) for b in fit_bias(scores, labels).bias.values()) < 0.3


def test_bad_input_is_named() -> None:
    scores, labels = _leaning_scores(lean=0.0, n=10)
    with pytest.raises(ValueError, match="scores must be"):
        fit_bias(scores[:, :3], labels)
    with pytest.raises(ValueError, match="l2 must be positive"):
        fit_bias(scores, labels, l2=0.0)
