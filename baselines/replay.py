"""Backtest: the live detector's profile, scoring and incident gate over a CSV series.

Contract (stable): reads ``timestamp,value`` rows (the first two columns; a header is
required), writes ``timestamp,value,expected,score,is_anomaly``. Each row is one
observation, judged like one window of the live detector: against the profile as it stood
when the row's local hour began and the series' floors and score distribution as they
stood when its local day began, so a whole hour is judged in one vectorised step, and a
run of hours of one local day whose hour-of-week buckets are mature in one more.

A row is a metric of unknown unit, judged in its own units (a CPU %, a count, a
temperature: their noise is additive; latency windows of the live detector are judged in
log units). ``score`` is the likelihood of the row's recent behaviour under the series' own
score distribution (0.5 ordinary, near 1 a surprise) where the row could raise an alert:
far enough from usual to matter, no incident open before it, no cooldown after one (0
elsewhere, and before the distribution is known). So it ranks candidate alerts, and
``is_anomaly`` is exactly where it crossed ``1 - surprise``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO
from zoneinfo import ZoneInfo

import numpy as np
from tqdm import tqdm

from baselines.baseline import SeasonalProfile, hour_of_week, local_hours
from baselines.detect import DetectorConfig
from baselines.judge import (
    Direction,
    Habits,
    IncidentGate,
    Thresholds,
    band,
    deviation,
    floored_spread,
    likelihood,
    material_and_calm,
    raw_score,
)

if TYPE_CHECKING:
    from _csv import Reader

PROGRESS_MIN_ROWS = 200_000
HEADER = ["timestamp", "value", "expected", "score", "is_anomaly"]


class ReplayInputError(ValueError):
    """The CSV cannot be replayed; the message names the line and what is wrong."""


@dataclass
class Series:
    """Parsed input: the raw texts (echoed in the output), epoch seconds, values."""

    stamps: list[str]
    texts: list[str]
    epoch: np.ndarray
    values: np.ndarray


@dataclass
class ReplayResult:
    """One entry per input row; skipped rows (not finite, out of order) score 0."""

    expected: np.ndarray
    score: np.ndarray
    is_anomaly: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    skipped_not_finite: int = 0
    skipped_out_of_order: int = 0
    flagged: int = field(init=False)

    def __post_init__(self) -> None:
        self.flagged = int(self.is_anomaly.sum())


def replay_thresholds(config: DetectorConfig, direction: Direction) -> Thresholds:
    """A row is one observation of a metric of unknown unit: no ms floor, no ratio floor (a
    CPU going from 40% to 70% matters); the surprise decides."""
    return replace(
        config.thresholds, direction=direction, min_delta=0.0, flag_ratio=1.0, clear_ratio=1.0
    )


# --------------------------------------------------------------------------- parsing


def read_series(source: TextIO) -> Series:
    reader = csv.reader(source)
    try:
        stamps, texts, lines = _columns(reader)
    except csv.Error as exc:  # a field over csv's size limit, a stray carriage return
        raise ReplayInputError(f"line {reader.line_num}: {exc}") from None
    values = _floats(texts, "value", lines)
    return Series(stamps, texts, parse_timestamps(stamps, lines), values)


def _columns(reader: Reader) -> tuple[list[str], list[str], list[int]]:
    """The first two columns, and the line each row ends on (blank lines are skipped, so
    an error names the line of the file, not the count of rows)."""
    header = next(reader, None)
    if header is None or len(header) < 2:
        raise ReplayInputError("line 1: expected a header with at least two columns")
    if _is_number(header[1]):
        raise ReplayInputError(f"line 1: expected a header, got data {header[:2]}")
    stamps: list[str] = []
    texts: list[str] = []
    lines: list[int] = []
    for row in reader:
        if len(row) < 2:
            if not row:
                continue
            raise ReplayInputError(f"line {reader.line_num}: expected timestamp,value, got {row}")
        stamps.append(row[0])
        texts.append(row[1])
        lines.append(reader.line_num)
    return stamps, texts, lines


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _floats(texts: list[str], what: str, lines: Sequence[int]) -> np.ndarray:
    try:
        return np.array(texts, dtype=np.float64)
    except ValueError:
        for row, text in enumerate(texts):
            if not _is_number(text):
                raise ReplayInputError(
                    f"line {lines[row]}: {what} {text!r} is not a number"
                ) from None
        raise


EPOCH_RANGE = (
    datetime(1, 1, 2, tzinfo=UTC).timestamp(),
    datetime(9999, 12, 30, tzinfo=UTC).timestamp(),
)
"""Timestamps a local hour can be computed for in any time zone (a day inside the years
``datetime`` knows); a finite one outside is refused, not left to crash the detector."""


def parse_timestamps(stamps: list[str], lines: Sequence[int]) -> np.ndarray:
    """Epoch seconds from epoch numbers or RFC 3339 texts (vectorised when offsets are
    'Z' or absent, which is nearly always; per row otherwise). ``lines``: each row's line
    in the file, for the errors."""
    epoch = _epoch_seconds(stamps, lines)
    outside = np.flatnonzero(
        np.isfinite(epoch) & ((epoch < EPOCH_RANGE[0]) | (epoch > EPOCH_RANGE[1]))
    )
    if outside.size:
        row = int(outside[0])
        raise ReplayInputError(
            f"line {lines[row]}: timestamp {stamps[row]!r} is out of range "
            "(0001-01-02 to 9999-12-30 UTC)"
        )
    return epoch


def _epoch_seconds(stamps: list[str], lines: Sequence[int]) -> np.ndarray:
    if not stamps:
        return np.empty(0)
    if _is_number(stamps[0]):
        return _floats(stamps, "timestamp", lines)
    naive = [s[:-1] if s.endswith(("Z", "z")) else s for s in stamps]
    if not any("+" in s[10:] or "-" in s[10:] for s in naive[:1000]):
        try:
            parsed = np.array(naive, dtype="datetime64[us]")
        except ValueError:
            pass
        else:
            if not np.isnat(parsed).any():  # numpy reads "NaT" as not-a-time: refused below
                return parsed.astype(np.int64) / 1e6
    epoch = np.empty(len(stamps))
    for row, text in enumerate(stamps):
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ReplayInputError(
                f"line {lines[row]}: timestamp {text!r} is not RFC 3339"
            ) from None
        epoch[row] = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    return epoch


# --------------------------------------------------------------------------- detection


def _hour_runs(hours: np.ndarray) -> Iterator[tuple[int, int]]:
    cuts = np.flatnonzero(np.diff(hours)) + 1
    starts = np.concatenate(([0], cuts))
    ends = np.concatenate((cuts, [hours.size]))
    yield from zip(starts.tolist(), ends.tolist(), strict=True)


def detect(
    epoch: np.ndarray,
    values: np.ndarray,
    config: DetectorConfig,
    direction: Direction = "high",
    progress: bool = False,
) -> ReplayResult:
    th = replay_thresholds(config, direction)
    n_rows = values.size
    finite = np.isfinite(values) & np.isfinite(epoch)
    ordered = epoch >= np.maximum.accumulate(np.where(finite, epoch, -np.inf))
    keep = np.flatnonzero(finite & ordered)
    ts, x = epoch[keep], values[keep]
    hours = local_hours(ts, ZoneInfo(config.timezone))
    n = x.size
    center, spread, history = np.full(n, np.nan), np.zeros(n), np.zeros(n, dtype=np.int64)
    standardised = np.full(n, np.nan)
    profile, gate, habits = SeasonalProfile(keep_robust=True), IncidentGate(), Habits()
    positive = bool(n) and bool(np.all(x > 0))  # a new level scales the daily shape
    runs = list(_hour_runs(hours)) if n else []
    run_starts = np.array([a for a, _ in runs], dtype=np.int64)
    hows = hour_of_week(hours[run_starts]) if runs else np.empty(0, dtype=np.int64)
    # per hour's run, the run after the last one of its local day
    day_ends = np.searchsorted(hours[run_starts] // 24, hours[run_starts] // 24, side="right")
    alerts: list[int] = []
    bar = tqdm(total=n, unit="rows", disable=not progress, desc="replay")
    r, resume = 0, -1
    while r < len(runs):
        first, (lo, end) = r, runs[r]
        if resume < 0:  # an hour's start
            habits.begin_hour(int(hours[lo]), th)
            offset = gate.adopt(float(ts[lo]), th)
            if offset is not None:
                move_level(profile, offset, positive)
        else:
            lo = resume
        resume, judging = -1, True
        whole = lo == runs[r][0] and habits.settled(th)
        mature = profile.mature(hows[r : day_ends[r]]) if whole else None
        if mature is not None and mature[0] and profile.pool_full(int(hours[lo])):
            # hours of one day in one step, once the score distribution stays frozen all day
            r += int(mature.size if mature.all() else mature.argmin())
            u, s = profile.weekly_estimates(hows[first:r], profile.pooled_spread(int(hours[lo])))
            hi = runs[r - 1][1]
            lengths = [b - a for a, b in runs[first:r]]
            center[lo:hi], spread[lo:hi] = np.repeat(u, lengths), np.repeat(s, lengths)
            history[lo:hi] = profile.history
        else:
            hi = end
            estimate = profile.estimate(int(hours[lo]), th.min_history)
            if estimate is None:  # too young for any: learnt, not judged
                judging = False
                hi = min(end, lo + max(profile.min_level_samples - profile.history, 1))
            else:
                if estimate.history < th.min_history:  # not kept: asked again next row
                    judging, hi = False, lo + 1
                center[lo:hi], spread[lo:hi] = estimate.center, estimate.spread
                history[lo:hi] = estimate.history
        # the series' recent spread as it stood when first judged this day (this hour, young)
        longrun = profile.recent_spread(int(hours[lo])) if judging else 0.0
        floors = (th, False, habits.frozen_quantum, longrun)
        spread[lo:hi] = floored_spread(center[lo:hi], spread[lo:hi], *floors)
        if judging:
            habits.seed(profile, float(center[lo]), float(spread[lo]), th)
            if not habits.known:  # the score distribution freezes after min_scores
                hi = min(hi, lo + max(th.min_scores - habits.learnt, 1))
        if r == first:  # one hour, or the part of it up to a change of the series' state
            if hi < end:
                resume = hi
            else:
                r += 1
        batch = Batch(ts, x, center, spread, history, standardised, positive, lo, hi)
        learn, cut = _judge(batch, run_starts[first:r] - lo, gate, habits, th, alerts)
        if cut < hi:  # the incident became a new level at an hour's start: go on from there
            r = first + int(np.searchsorted(run_starts[first:r], cut))
            resume = -1
        profile.add_many(hours[lo:cut][learn], x[lo:cut][learn])
        bar.update(cut - lo)
    bar.close()

    known = ~np.isnan(center)
    expected = np.where(known, center, x)  # no baseline yet: itself
    lower, upper = band(expected, np.where(known, spread, 0.0), th, log=False)

    def on_rows(judged: np.ndarray, skipped: np.ndarray) -> np.ndarray:
        """Per input row: the value for judged rows, ``skipped`` for the others."""
        out = skipped.astype(np.float64)
        out[keep] = judged
        return out

    is_anomaly = np.zeros(n_rows, dtype=np.int8)
    is_anomaly[keep[alerts]] = 1
    return ReplayResult(
        expected=on_rows(expected, values),
        score=on_rows(likelihood(standardised), np.zeros(n_rows)),
        is_anomaly=is_anomaly,
        lower=on_rows(lower, values),
        upper=on_rows(upper, values),
        skipped_not_finite=int(n_rows - finite.sum()),
        skipped_out_of_order=int((finite & ~ordered).sum()),
    )


def level_offsets(x: np.ndarray, center: np.ndarray, positive: bool) -> np.ndarray:
    """How far values are from usual, as a new level would move the profile: a log ratio
    for a positive series, a difference otherwise."""
    if positive:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(x / center)
    return x - center


def move_level(profile: SeasonalProfile, offset: float, positive: bool) -> None:
    """Adopt a new level measured by ``level_offsets``."""
    if positive:
        profile.rescale(float(np.exp(offset)))
    else:
        profile.shift(offset)


@dataclass
class Batch:
    """Rows lo..hi of a replay, judged in one step, and the arrays they live in."""

    ts: np.ndarray
    x: np.ndarray
    center: np.ndarray
    spread: np.ndarray
    """Floored."""
    history: np.ndarray
    standardised: np.ndarray
    """Written: each row's standardised recent score where it could raise an alert (far
    enough out, no incident open before it, no cooldown), NaN elsewhere."""
    positive: bool
    lo: int
    hi: int


def _judge(
    b: Batch,
    hour_starts: np.ndarray,
    gate: IncidentGate,
    habits: Habits,
    th: Thresholds,
    alerts: list[int],
) -> tuple[np.ndarray, int]:
    """Run the incident gate over rows lo..hi (only its transitions are visited). Returns
    which rows the profile may learn (those not inside an open incident) and the row the
    batch was judged up to: ``hi``, or the start of an hour at which the open incident
    became a new level (the baseline moves there, and judging goes on with it)."""
    lo, hi = b.lo, b.hi
    x, center = b.x[lo:hi], b.center[lo:hi]
    judged = (b.history[lo:hi] >= th.min_history) & ~np.isnan(center)
    z, ratio, usual = deviation(x, center, b.spread[lo:hi], th, log=False)
    scores = np.where(judged, raw_score(z), np.nan)
    surprise = habits.standardised(scores, th)
    material, calm = material_and_calm(x, usual, z, ratio, th)
    exceeds = judged & material & (surprise > th.critical)
    exceed_at = np.flatnonzero(exceeds)
    calm_at = np.flatnonzero(judged & calm & ~exceeds)
    offsets = level_offsets(x, center, b.positive)
    ts = b.ts[lo:hi]
    learn = np.ones(hi - lo, dtype=bool)
    inside = np.zeros(hi - lo, dtype=bool)
    quiet_until = np.full(hi - lo, gate.quiet_until)
    cut = hi - lo
    pos = 0
    late: list[int] = []
    while True:
        if gate.open:
            k = int(np.searchsorted(calm_at, pos))
            stop = int(calm_at[k]) if k < calm_at.size else hi - lo
            due = [h for h in hour_starts.tolist() if pos < h <= stop]
            due = [h for h in due if gate.adopt_due(float(ts[h]), th)]
            if due:
                stop = cut = due[0]
            if not gate.announced:  # opened in the cooldown: alerts if it outlasts it
                still = exceed_at[(exceed_at >= pos) & (exceed_at < stop)]
                still = still[ts[still] > gate.quiet_until]
                if still.size and gate.step(float(ts[still[0]]), True, False, th):
                    alerts.append(lo + int(still[0]))
                    late.append(int(still[0]))
            learn[pos:stop] = False
            inside[pos : stop + 1] = True
            gate.keep_offsets(offsets[pos:stop][judged[pos:stop]])
            if stop == cut or k == calm_at.size:
                break
            gate.step(float(ts[stop]), False, True, th)
            quiet_until[stop + 1 :] = gate.quiet_until
            pos = stop + 1
        else:
            k = int(np.searchsorted(exceed_at, pos))
            if k == exceed_at.size:
                break
            j = int(exceed_at[k])
            if gate.step(float(ts[j]), True, False, th):
                alerts.append(lo + j)
            learn[j] = False
            gate.keep_offsets(offsets[j : j + 1])
            pos = j + 1
    candidate = material & ~inside & (ts > quiet_until)
    candidate[late] = True
    b.standardised[lo : lo + cut] = np.where(candidate, surprise, np.nan)[:cut]
    habits.commit(scores[:cut], x[:cut], th)
    return learn[:cut], lo + cut


# --------------------------------------------------------------------------- files


def write_result(sink: TextIO, series: Series, result: ReplayResult) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(
        zip(
            series.stamps,
            series.texts,
            [f"{v:.6g}" for v in result.expected.tolist()],
            [f"{v:.8f}" for v in result.score.tolist()],
            result.is_anomaly.tolist(),
            strict=True,
        )
    )
    sink.write(out.getvalue())


def replay(
    source: TextIO,
    sink: TextIO,
    config: DetectorConfig,
    direction: Direction = "high",
    progress: bool = False,
) -> ReplayResult:
    series = read_series(source)
    result = detect(series.epoch, series.values, config, direction, progress)
    write_result(sink, series, result)
    return result


def _utf8_text(path: Path) -> str:
    """The file as UTF-8 text; bytes that are not name their line (a streamed decoder would
    fail a whole buffer ahead of the line)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ReplayInputError(
            f"line {line}: not UTF-8 text (byte {data[exc.start]:#04x})"
        ) from None


def replay_files(
    input_path: Path, output_path: Path, config: DetectorConfig, direction: Direction
) -> tuple[Series, ReplayResult]:
    series = read_series(io.StringIO(_utf8_text(input_path), newline=""))
    progress = series.values.size >= PROGRESS_MIN_ROWS
    result = detect(series.epoch, series.values, config, direction, progress)
    with output_path.open("w", newline="") as sink:
        write_result(sink, series, result)
    return series, result
