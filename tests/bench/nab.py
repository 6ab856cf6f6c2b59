"""NAB scoring (Numenta Anomaly Benchmark) of binary detections, for one series or a corpus.

Why our own copy: the detector is judged the way NAB judges, so the benchmark must reward
and punish exactly as NAB does, without pulling in NAB itself (Python 2 era, pandas). This
follows NAB's current scorer (``nab/sweeper.py``, ``nab/runner.py``, ``nab/labeler.py``):

* Windows are labelled ``(start, end)`` timestamps; positions inside them are measured in
  rows, not seconds, as NAB does.
* The first detection in a window of width ``W`` rows whose last row is ``R`` earns
  ``A_tp * S(-(R - i + 1) / W) / S(-1)``, where ``S(y) = 2 / (1 + exp(5 y)) - 1``: exactly
  ``A_tp`` on the window's first row, about ``0.25 A_tp`` on its last. Later detections in
  the same window are ignored (NAB keeps the window's best score, which is its first).
* A window without a detection costs ``A_fn``.
* A detection outside every window adds ``A_fp * S(d / (W_prev - 1))`` (negative, as S is
  for ``d > 0``), with ``d`` the rows since the end of the preceding window of width
  ``W_prev``: an alert just after a window costs little, one far after it about ``A_fp``,
  one with no window before it exactly ``A_fp`` (``S(y) = -1`` for ``y >= 3``).
* Detections in the probationary period, the first ``min(floor(15% of rows), 750)`` rows,
  are ignored, and so is a window lying wholly inside it.
* Normalised score ``100 * (raw - null) / (perfect - null)``: ``null`` is the raw score of a
  detector that flags nothing, ``perfect`` is ``A_tp`` per labelled window (NAB's runner;
  it equals one detection on the first row of every window). Over a corpus the raw, null
  and perfect scores are summed first, then normalised, as NAB reports its final score.

Cost weights are magnitudes, as in NAB's ``config/profiles.json``: a false positive costs
``fp`` (so the brief's ``A_fp = -0.11`` is ``fp=0.11`` here).

Run ``python tests/bench/nab.py --self-check`` to check the arithmetic on hand-computed
cases.
"""

from __future__ import annotations

import argparse
import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PROBATION_PERCENT = 0.15
"""Share of a series NAB lets a detector learn before scoring it (capped at 750 rows)."""

WINDOW_SHARE = 0.10
"""NAB labelling: all windows of a series together span 10% of its rows."""


@dataclass(frozen=True)
class Profile:
    """One NAB application profile; weights are positive magnitudes."""

    name: str
    tp: float
    fp: float
    fn: float


STANDARD = Profile("standard", tp=1.0, fp=0.11, fn=1.0)
LOW_FP = Profile("reward_low_FP_rate", tp=1.0, fp=0.22, fn=1.0)
LOW_FN = Profile("reward_low_FN_rate", tp=1.0, fp=0.11, fn=2.0)
PROFILES: tuple[Profile, ...] = (STANDARD, LOW_FP, LOW_FN)

RowWindow = tuple[int, int]
"""(first row, last row) of a window, both inclusive."""


def scaled_sigmoid(position: float) -> float:
    """NAB's ``scaledSigmoid``: 0.987 at -1 (window start), 0 at 0 (window end), -1 from 3."""
    if position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


MAX_TP = scaled_sigmoid(-1.0)


def probation_rows(rows: int, percent: float = PROBATION_PERCENT) -> int:
    """Leading rows whose detections NAB ignores: ``min(floor(15% of rows), 750)``."""
    return int(min(math.floor(percent * rows), percent * 5000))


def window_rows(
    timestamps: Sequence[float], windows: Iterable[tuple[float, float]]
) -> list[RowWindow]:
    """Rows inside each ``(start, end)`` window (inclusive); windows must be sorted, disjoint."""
    result: list[RowWindow] = []
    for start, end in windows:
        first, last = bisect_left(timestamps, start), bisect_right(timestamps, end) - 1
        if last < first:
            raise ValueError(f"window ({start}, {end}) holds no row")
        if result and first <= result[-1][1]:
            raise ValueError("windows overlap or are not sorted")
        result.append((first, last))
    return result


def label_windows(rows: int, anomaly_rows: Sequence[int]) -> list[RowWindow]:
    """NAB's labeller: each anomaly gets a window of ``int(10% * rows / anomalies)`` rows
    centred on it (``a - L // 2 .. a + L // 2``, clipped to the series); overlapping windows
    are merged, as NAB's ``checkWindows`` does."""
    if not anomaly_rows:
        return []
    length = int(WINDOW_SHARE * rows / len(anomaly_rows))
    merged: list[RowWindow] = []
    for row in sorted(anomaly_rows):
        first, last = max(row - length // 2, 0), min(row + length // 2, rows - 1)
        if merged and first <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(last, merged[-1][1]))
        else:
            merged.append((first, last))
    return merged


def _true_positive(window: RowWindow, row: int, profile: Profile) -> float:
    first, last = window
    width = last - first + 1
    return profile.tp * scaled_sigmoid(-(last - row + 1) / width) / MAX_TP


def _false_positive(previous: RowWindow | None, row: int, profile: Profile) -> float:
    if previous is None:
        return profile.fp * scaled_sigmoid(3.0)
    first, last = previous
    width = last - first + 1
    # NAB divides by (width - 1); a one-row window would divide by zero there.
    position = (row - last) / (width - 1) if width > 1 else 3.0
    return profile.fp * scaled_sigmoid(position)


@dataclass(frozen=True)
class SeriesScore:
    """Raw NAB score of one series with the null and perfect scores that normalise it."""

    raw: float
    null: float
    perfect: float

    @property
    def normalised(self) -> float | None:
        """100 is perfect, 0 is flagging nothing; None where the series has no window."""
        return normalise(self.raw, self.null, self.perfect)


def normalise(raw: float, null: float, perfect: float) -> float | None:
    if perfect == null:
        return None
    return 100.0 * (raw - null) / (perfect - null)


def score_series(
    detections: Sequence[bool],
    windows: Sequence[RowWindow],
    profile: Profile = STANDARD,
    probation: int | None = None,
) -> SeriesScore:
    """Score one series' per-row detections against its windows (rows, from ``window_rows``).

    ``probation`` defaults to NAB's; pass 0 to score every row."""
    rows = len(detections)
    skip = probation_rows(rows) if probation is None else probation
    scored = [w for w in windows if w[1] >= skip]
    raw = -profile.fn * len(scored)
    null = raw
    best: dict[RowWindow, float] = {}
    previous: RowWindow | None = None
    upcoming = 0
    for row in range(skip, rows):
        while upcoming < len(windows) and windows[upcoming][1] < row:
            previous = windows[upcoming]
            upcoming += 1
        if not detections[row]:
            continue
        inside = upcoming < len(windows) and windows[upcoming][0] <= row
        if not inside:
            raw += _false_positive(previous, row, profile)
        elif windows[upcoming] not in best:
            window = windows[upcoming]
            best[window] = _true_positive(window, row, profile)
            raw += profile.fn + best[window]
    return SeriesScore(raw=raw, null=null, perfect=profile.tp * len(windows))


def score_corpus(scores: Iterable[SeriesScore]) -> float | None:
    """NAB's final score: sums of raw, null and perfect over the corpus, then normalised."""
    raw = null = perfect = 0.0
    for score in scores:
        raw, null, perfect = raw + score.raw, null + score.null, perfect + score.perfect
    return normalise(raw, null, perfect)


def _flags(rows: int, *flagged: int) -> list[bool]:
    return [row in flagged for row in range(rows)]


def self_check() -> list[str]:
    """Hand-computed cases; returns the failures (empty when all pass)."""
    window = [(40, 49)]  # 10 rows; 100-row series scored without probation
    s = STANDARD
    cases: list[tuple[str, float | None, float]] = [
        # S(-1) = 2 / (1 + e^-5) - 1
        ("S(-1)", scaled_sigmoid(-1.0), 0.986614),
        ("S(-0.5)", scaled_sigmoid(-0.5), 0.848284),
        ("S(0)", scaled_sigmoid(0.0), 0.0),
        ("S(3) = -1", scaled_sigmoid(3.0), -1.0),
        ("first row of window earns A_tp", score_series(_flags(100, 40), window, s, 0).raw, 1.0),
        # last row: y = -1/10, S(-0.1) = 2 / (1 + e^-0.5) - 1 = 0.244919; / S(-1)
        ("last row of window", score_series(_flags(100, 49), window, s, 0).raw, 0.248242),
        # halfway (row 45): y = -5/10 -> 0.848284 / 0.986614
        ("middle of window", score_series(_flags(100, 45), window, s, 0).raw, 0.859793),
        ("later detections ignored", score_series(_flags(100, 40, 45), window, s, 0).raw, 1.0),
        ("missed window costs A_fn", score_series(_flags(100), window, s, 0).raw, -1.0),
        ("missed, low-FN profile", score_series(_flags(100), window, LOW_FN, 0).raw, -2.0),
        # FP before any window: full A_fp, plus the missed window
        ("FP with no preceding window", score_series(_flags(100, 10), window, s, 0).raw, -1.11),
        ("same, low-FP profile", score_series(_flags(100, 10), window, LOW_FP, 0).raw, -1.22),
        # FP 10 rows after the end of a 10-row window: y = 10 / 9, S = -0.992298, x 0.11
        ("TP + distant FP", score_series(_flags(100, 40, 59), window, s, 0).raw, 0.890847),
        # FP on the row right after the window: y = 1/9, S = -0.270847, x 0.11
        ("TP + FP just after", score_series(_flags(100, 40, 50), window, s, 0).raw, 0.970207),
        ("probation: 15% of 100 rows", float(probation_rows(100)), 15.0),
        ("probation capped at 750 rows", float(probation_rows(10_000)), 750.0),
        ("detection in probation ignored", score_series(_flags(100, 5), window, s).raw, -1.0),
        ("normalised: perfect", score_series(_flags(100, 40), window, s, 0).normalised, 100.0),
        ("normalised: nothing flagged", score_series(_flags(100), window, s, 0).normalised, 0.0),
        # raw -1.11 against null -1, perfect 1: 100 * -0.11 / 2
        ("normalised: one FP only", score_series(_flags(100, 10), window, s, 0).normalised, -5.5),
        # two series: raw 1 + 0.248242, null -2, perfect 2 -> 100 * 3.248242 / 4
        (
            "corpus normalised",
            score_corpus(
                [
                    score_series(_flags(100, 40), window, s, 0),
                    score_series(_flags(100, 49), window, s, 0),
                ]
            ),
            81.206,
        ),
    ]
    labelled: list[tuple[str, object, object]] = [
        # 1000 rows, one anomaly: L = 100 -> 450..550
        ("one window of 10%", label_windows(1000, [500]), [(450, 550)]),
        ("two windows of 5%", label_windows(1000, [100, 900]), [(75, 125), (875, 925)]),
        ("clipped at the start", label_windows(1000, [10]), [(0, 60)]),
        ("overlaps merged", label_windows(1000, [500, 520]), [(475, 545)]),
        ("timestamps to rows", window_rows([0, 60, 120, 180, 240], [(60, 180)]), [(1, 3)]),
    ]
    failures = [
        f"{name}: got {got}, expected {want}"
        for name, got, want in cases
        if got is None or not math.isclose(got, want, abs_tol=5e-6 if abs(want) < 10 else 5e-3)
    ]
    failures += [f"{name}: got {got}, expected {w}" for name, got, w in labelled if got != w]
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self-check", action="store_true", help="run the hand-computed cases")
    args = parser.parse_args(argv)
    if not args.self_check:
        parser.print_help()
        return 0
    failures = self_check()
    for failure in failures:
        print(f"FAIL {failure}")
    print("nab self-check:", "failed" if failures else "ok")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
