"""What a window holds of a span series: quantiles as numpy's linear interpolation gives
them, one slow call among a few told apart from several, and a sparse series' windows
pooled into one. Runs without the model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from baselines.window import MAX_EXEMPLARS, SMALL_WINDOW, SpanWindow, second_slowest, summarise


def window(durations: list[float], traces: bool = False) -> SpanWindow:
    agg = SpanWindow()
    for i, duration in enumerate(durations):
        agg.add_value(duration, f"{i:032x}" if traces else None)
    return agg


@pytest.mark.parametrize("n", [1, 2, 7, 20, 101])
def test_quantiles_are_numpys_linear_ones(n: int) -> None:
    durations = np.random.default_rng(n).lognormal(3.0, 0.5, n).tolist()
    expected = np.percentile(durations, [50, 95, 99])
    assert summarise(window(durations)) == pytest.approx(expected.tolist())


def test_a_small_windows_second_slowest_span_is_what_its_p95_stands_on() -> None:
    assert second_slowest(window([3.0, 2.0, 51.0, 2.5])) == 3.0
    assert second_slowest(window([3.0] * (SMALL_WINDOW + 1))) == math.inf
    assert second_slowest(window([3.0])) == math.inf


def test_pooled_windows_keep_every_span_and_the_slowest_exemplars() -> None:
    first, second = window([1.0, 2.0, 3.0], traces=True), window([10.0] * 8, traces=True)
    pooled = first.merged(second)
    assert (pooled.count, pooled.windows) == (11, 2)
    assert len(pooled.slowest) == MAX_EXEMPLARS
    assert min(d for d, _ in pooled.slowest) == 10.0
