"""Week-seasonal profile of one scalar series (a window's p95, a request count, a CPU %...).

Each of the 168 hour-of-week buckets keeps the most recent ``depth`` values in a ring; a
second ring keeps the ``recent`` latest values of any hour. The usual value is a median and
the spread a median absolute deviation, so outliers and heavy tails barely move them, and
the rings forget old values, so the profile follows drift. A profile in log mode (for
positive, multiplicative, heavy-tailed series such as latency) keeps log values, so its
spread is relative: 100 -> 125 ms is as unusual as 1 -> 1.25 s. A young bucket falls back to the
same hour on days of the same kind (weekdays, or the weekend), then on any day, then to the
recent values of any hour; the estimate says which level answered and on how many values,
and a less specific level is trusted less: its spread is widened (x1.25 for the same kind of
day, x1.5 for any day, x2 for the recent values), so a first Saturday compared with
weekdays does not look like an outage.

A bucket's spread comes from a few dozen values and is sometimes far too small by chance;
it is shrunk towards the series' typical within-hour spread (the median spread of its
mature buckets, taken once per local day, or every hour while fewer than a day's worth are
mature), as if that pooled value had been seen ``min_level_samples`` more times.

A window is judged against the profile *as it stood when the window's local hour began*
(``estimate`` is memoised per hour, the pooled spread per day once it is full, the spread
of the recent values per day once their ring is full; a series too young for any estimate
then gets its first one as soon as it has enough values): an incident cannot drag its own
hour's baseline up, and a replay can judge a whole hour, or a whole day of mature buckets,
in one vectorised step with exactly the live detector's result.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, overload
from zoneinfo import ZoneInfo

import numpy as np

HOURS_PER_WEEK = 168
EPOCH_WEEKDAY_HOURS = 72
"""1970-01-01 was a Thursday: local hour index h has hour-of-week (h + 72) % 168."""
MAD_TO_SIGMA = 1.4826
WEEKDAYS, WEEKEND = range(5), range(5, 7)
POOL_BUCKETS = 24
"""Mature hour-of-week buckets (a day's worth) from which the pooled spread is taken once
a day; until then, every hour."""
Level = Literal["hour_of_week", "hour_of_day", "global"]


def local_hour(epoch_s: float, zone: ZoneInfo) -> int:
    """Index of the local hour containing ``epoch_s`` (hours since 1970-01-01 00:00 local)."""
    offset = datetime.fromtimestamp(epoch_s, UTC).astimezone(zone).utcoffset()
    return int((epoch_s + (offset.total_seconds() if offset else 0.0)) // 3600)


def local_hours(epoch_s: np.ndarray, zone: ZoneInfo) -> np.ndarray:
    """Vectorised ``local_hour``. UTC offsets are looked up once per day, and per quarter hour
    only on the days where the offset changes (DST), so a year costs ~365 look-ups."""
    if epoch_s.size == 0:
        return np.empty(0, dtype=np.int64)
    day = np.floor(epoch_s / 86400).astype(np.int64)
    first, last = int(day.min()), int(day.max()) + 1
    offsets = np.array([_offset(d * 86400.0, zone) for d in range(first, last + 1)])
    point_offset = offsets[day - first]
    for changing in np.flatnonzero(offsets[:-1] != offsets[1:]) + first:
        in_day = day == changing
        quarters = np.floor(epoch_s[in_day] / 900).astype(np.int64)
        table = {q: _offset(q * 900.0, zone) for q in np.unique(quarters).tolist()}
        point_offset[in_day] = [table[q] for q in quarters.tolist()]
    return np.floor((epoch_s + point_offset) / 3600).astype(np.int64)


def _offset(epoch_s: float, zone: ZoneInfo) -> float:
    offset = datetime.fromtimestamp(epoch_s, UTC).astimezone(zone).utcoffset()
    return offset.total_seconds() if offset else 0.0


@overload
def hour_of_week(hour_index: int) -> int: ...
@overload
def hour_of_week(hour_index: np.ndarray) -> np.ndarray: ...
def hour_of_week(hour_index: int | np.ndarray) -> int | np.ndarray:
    """0 = Monday 00:00 local, from a local hour index."""
    return (hour_index + EPOCH_WEEKDAY_HOURS) % HOURS_PER_WEEK


@dataclass(frozen=True)
class Estimate:
    usual: float
    """The median, in the series' own units."""
    center: float
    """The median in the profile's working units (log values in log mode)."""
    spread: float
    """Robust standard deviation (1.4826 x MAD) in working units."""
    samples: int
    """Values at the level that answered: the confidence of this estimate."""
    level: Level
    hour_of_week: int
    history: int
    """Values the series has learnt in all: how long it has been watched."""


def json_column(values: np.ndarray) -> list[float | None]:
    """Values for a JSON document a dashboard draws: rounded to 3 places, NaN as null."""
    return [None if np.isnan(v) else round(v, 3) for v in values.tolist()]


def row_medians(rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """np.median of each row's first ``counts`` values (the rest NaN), bit for bit, without
    numpy's masked-array nanmedian (40x slower on these small rows)."""
    ordered = np.sort(rows, axis=1)  # NaN sorts last
    row = np.arange(rows.shape[0])
    return (ordered[row, (counts - 1) // 2] + ordered[row, counts // 2]) / 2


def median(values: np.ndarray) -> float:
    """np.median of a non-empty 1-D array without NaN, bit for bit, without its per-call
    overhead (a replay's day step takes a few, and they were a tenth of its time)."""
    ordered = np.sort(values)
    n = ordered.size
    return float((ordered[(n - 1) // 2] + ordered[n // 2]) / 2)


def robust(values: np.ndarray) -> tuple[float, float]:
    """(median, 1.4826 x MAD), in float64 like the vectorised path, so both agree exactly."""
    values = values.astype(np.float64)
    usual = median(values)
    return usual, MAD_TO_SIGMA * median(np.abs(values - usual))


LOG_FLOOR = 1e-6
"""Values are clipped to this before the log, so a 0 ms window cannot produce -inf."""


def _holds(memo: tuple[int, bool, object], hour_index: int) -> bool:
    """Whether a spread taken at hour ``memo[0]`` still holds at ``hour_index``: in the same
    hour, or the same local day once it was taken full (``memo[1]``)."""
    return memo[0] == hour_index or (memo[1] and memo[0] // 24 == hour_index // 24)


class SeasonalProfile:
    def __init__(
        self,
        depth: int = 48,
        recent: int = 256,
        min_level_samples: int = 24,
        log: bool = False,
        keep_robust: bool = False,
    ) -> None:
        self.depth = depth
        self.log = log
        self.min_level_samples = min_level_samples
        self._weekly: np.ndarray | None = None  # (168, depth), allocated on first use
        self._written = np.zeros(HOURS_PER_WEEK, dtype=np.int64)
        self._recent = np.full(recent, np.nan, dtype=np.float32)
        self._recent_written = 0
        self._kept: tuple[np.ndarray, np.ndarray] | None = None
        """With ``keep_robust``, each bucket's (median, spread) as last computed, and whether
        it still holds: a replay's day step then recomputes the buckets written since, not
        all 168 (2.7 KB: the live detector's many series do without)."""
        if keep_robust:
            self._kept = np.zeros((HOURS_PER_WEEK, 2)), np.zeros(HOURS_PER_WEEK, dtype=bool)
        self._memo: tuple[int, Estimate] | None = None
        self._pool_memo: tuple[int, bool, float | None] | None = None
        """(the hour it was taken at, whether it holds all that day, the pooled spread)."""
        self._recent_memo: tuple[int, bool, float] | None = None
        """(the hour it was taken at, whether the ring was full then, the recent spread)."""

    # ----------------------------------------------------------------- reading

    def estimate(self, hour_index: int, settled: int = 0) -> Estimate | None:
        """The baseline of this local hour: computed on first use in the hour, then kept.
        An estimate on fewer than ``settled`` values (or none: fewer than
        ``min_level_samples``) is not kept: a young series is asked again at its next value,
        so it is judged from the value it has enough history for, not from the next hour."""
        if self._memo is not None and self._memo[0] == hour_index:
            return self._memo[1]
        pooled = self.pooled_spread(hour_index)
        estimate = self._estimate(int(hour_of_week(hour_index)), pooled)
        if estimate is not None and estimate.history >= settled:
            self._memo = (hour_index, estimate)
        return estimate

    def pooled_spread(self, hour_index: int) -> float | None:
        """Median spread of the mature buckets, as the profile stood when the local day
        began (its first use in the day); while fewer than ``POOL_BUCKETS`` are mature, as
        it stood when this hour began: a series born late in a day is not judged all day
        against the spreads of its first bucket or two, which by chance may be narrow."""
        memo = self._pool_memo
        if memo is not None and _holds(memo, hour_index):
            return memo[2]
        pooled, mature = self._pooled()
        self._pool_memo = (hour_index, mature >= POOL_BUCKETS, pooled)
        return pooled

    def pool_full(self, hour_index: int) -> bool:
        """Whether the pooled spread of this hour holds for the rest of its day."""
        self.pooled_spread(hour_index)
        return self._pool_memo is not None and self._pool_memo[1]

    def _pooled(self) -> tuple[float | None, int]:
        """(median spread of the mature buckets now, how many are mature)."""
        if self._weekly is None:
            return None, 0
        mature = np.flatnonzero(np.minimum(self._written, self.depth) >= self.min_level_samples)
        if not mature.size:
            return None, 0
        _, spreads = self._robust_rows(mature)
        return median(spreads), int(mature.size)

    def recent_spread(self, hour_index: int) -> float:
        """Robust spread of the recent values of any hour (0 before any): the series' own
        scale, whatever the hour. As the profile stood when the local day began (its first
        use in the day); while the ring of recent values is not full, as it stood when this
        hour began, so a series born late in a day is not floored until midnight by the
        spread of its first few values."""
        memo = self._recent_memo
        if memo is not None and _holds(memo, hour_index):
            return memo[2]
        values = self._recent[: min(self._recent_written, self._recent.size)]
        spread = robust(values)[1] if values.size else 0.0
        self._recent_memo = (hour_index, self._recent_written >= self._recent.size, spread)
        return spread

    def _bucket(self, how: int) -> np.ndarray:
        if self._weekly is None:
            return np.empty(0, dtype=np.float32)
        return self._weekly[how, : min(int(self._written[how]), self.depth)]

    def _estimate(self, how: int, pooled: float | None) -> Estimate | None:
        same_type = WEEKEND if how >= 5 * 24 else WEEKDAYS
        candidates: tuple[tuple[Level, float, np.ndarray], ...] = (
            ("hour_of_week", 1.0, self._bucket(how)),
            ("hour_of_day", 1.25, self._hour_of_day(how, same_type)),
            ("hour_of_day", 1.5, self._hour_of_day(how, range(7))),
            ("global", 2.0, self._recent[: min(self._recent_written, self._recent.size)]),
        )
        for level, caution, values in candidates:
            if values.size >= self.min_level_samples:
                center, spread = robust(values)
                spread = caution * float(self.shrink(np.asarray(spread), values.size, pooled))
                return Estimate(
                    self.to_units(center),
                    center,
                    spread,
                    int(values.size),
                    level,
                    how,
                    self._recent_written,
                )
        return None

    def _hour_of_day(self, how: int, days: range) -> np.ndarray:
        return np.concatenate([self._bucket(d * 24 + how % 24) for d in days])

    def shrink(self, spread: np.ndarray, n: int | np.ndarray, pooled: float | None) -> np.ndarray:
        if pooled is None:
            return spread
        n0 = self.min_level_samples
        return np.sqrt((n * spread**2 + n0 * pooled**2) / (n + n0))

    def mature(self, hows: np.ndarray) -> np.ndarray:
        """Per bucket, whether the hour-of-week level answers for it (it stays true)."""
        return np.minimum(self._written[hows], self.depth) >= self.min_level_samples

    @property
    def history(self) -> int:
        return self._recent_written

    def weekly_estimates(
        self, hows: np.ndarray, pooled: float | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(center, spread) of mature buckets in working units, vectorised over ``hows``,
        their spreads shrunk towards ``pooled``: with ``pooled_spread`` of an hour where
        ``pool_full``, the same numbers ``estimate`` gives for those hours of its day."""
        center, spread = self._robust_rows(hows)
        return center, self.shrink(spread, np.minimum(self._written[hows], self.depth), pooled)

    def _robust_rows(self, hows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``robust`` of several buckets at once (kept ones not computed again)."""
        if self._kept is None:
            return self._compute_rows(hows)
        robust, fresh = self._kept
        stale = hows[~fresh[hows]]
        if stale.size:
            robust[stale, 0], robust[stale, 1] = self._compute_rows(stale)
            fresh[stale] = True
        return robust[hows, 0], robust[hows, 1]

    def _changed(self, buckets: int | np.ndarray | slice) -> None:
        """The kept median and spread of these buckets no longer hold."""
        if self._kept is not None:
            self._kept[1][buckets] = False

    def _compute_rows(self, hows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert self._weekly is not None
        rows = self._weekly[hows].astype(np.float64)  # unwritten slots are NaN
        filled = np.minimum(self._written[hows], self.depth)
        center = row_medians(rows, filled)
        spread = MAD_TO_SIGMA * row_medians(np.abs(rows - center[:, None]), filled)
        return center, spread

    def bucket_usuals(self) -> tuple[list[float | None], list[int]]:
        """Each hour-of-week bucket's usual value (its median, in the series' units; None
        when empty) and how many values stand behind it: the profile a dashboard draws."""
        counts = np.minimum(self._written, self.depth)
        usual: list[float | None] = [None] * HOURS_PER_WEEK
        filled = np.flatnonzero(counts > 0)
        if filled.size:
            centers, _ = self._robust_rows(filled)
            for how, center in zip(filled.tolist(), centers.tolist(), strict=True):
                usual[how] = round(self.to_units(center), 3)
        return usual, counts.tolist()

    def week_estimates(self, local_day: int) -> tuple[np.ndarray, np.ndarray]:
        """(center, spread) in working units that each hour of the week is judged against
        on ``local_day``, fallback levels included (NaN: no estimate yet): the band a
        dashboard draws. Mature buckets in one vectorised step, the others one by one. The
        pooled spread is the day's, or (young) the one of now: drawing the band does not
        change what the detector judges with."""
        center = np.full(HOURS_PER_WEEK, np.nan)
        spread = np.full(HOURS_PER_WEEK, np.nan)
        if self._weekly is None:
            return center, spread
        mature = np.minimum(self._written, self.depth) >= self.min_level_samples
        memo = self._pool_memo
        if memo is not None and memo[1] and memo[0] // 24 == local_day:
            pooled = memo[2]
        else:
            pooled = self._pooled()[0]
        hows = np.flatnonzero(mature)
        if hows.size:
            center[hows], spread[hows] = self.weekly_estimates(hows, pooled)
        for how in np.flatnonzero(~mature).tolist():
            estimate = self._estimate(how, pooled)
            if estimate is not None:
                center[how], spread[how] = estimate.center, estimate.spread
        return center, spread

    def working(self, values: np.ndarray) -> np.ndarray:
        """Values in the profile's working units."""
        return np.log(np.maximum(values, LOG_FLOOR)) if self.log else values

    def to_units(self, center: float) -> float:
        return float(np.exp(center)) if self.log else center

    def recent_values(self) -> np.ndarray:
        """The recent values of any hour (up to ``recent``), in the series' units."""
        work = self._recent[: min(self._recent_written, self._recent.size)].astype(np.float64)
        return np.exp(work) if self.log else work

    # ----------------------------------------------------------------- learning

    def add(self, hour_index: int, value: float) -> None:
        if self.log:
            value = float(np.log(max(value, LOG_FLOOR)))
        how = int(hour_of_week(hour_index))
        if self._weekly is None:
            self._weekly = np.full((HOURS_PER_WEEK, self.depth), np.nan, dtype=np.float32)
        self._weekly[how, self._written[how] % self.depth] = value
        self._written[how] += 1
        self._changed(how)
        self._recent[self._recent_written % self._recent.size] = value
        self._recent_written += 1

    def add_many(self, hour_index: np.ndarray, values: np.ndarray) -> None:
        """``add`` of many values in time order, in one step. Each hour's values must be
        contiguous and the hours less than a week apart (one bucket, one run)."""
        n = values.size
        if n == 0:
            return
        if self._weekly is None:
            self._weekly = np.full((HOURS_PER_WEEK, self.depth), np.nan, dtype=np.float32)
        work = self.working(values)
        how = hour_of_week(hour_index)
        starts = np.concatenate(([0], np.flatnonzero(np.diff(how)) + 1))
        counts = np.diff(np.concatenate((starts, [n])))
        group = np.repeat(np.arange(starts.size), counts)
        rank = np.arange(n) - starts[group]
        keep = counts[group] - rank <= self.depth  # only the last `depth` of a run survive
        buckets = how[starts]
        slots = (self._written[buckets][group] + rank) % self.depth
        self._weekly[how[keep], slots[keep]] = work[keep]
        self._written[buckets] += counts
        self._changed(buckets)
        size = self._recent.size
        last = min(n, size)
        self._recent[(self._recent_written + np.arange(n - last, n)) % size] = work[n - last :]
        self._recent_written += n

    def shift(self, offset: float) -> None:
        """Move every learnt value by ``offset`` (working units): a new level, same shape."""
        if self._weekly is not None:
            self._weekly += np.float32(offset)
        self._recent[: min(self._recent_written, self._recent.size)] += np.float32(offset)
        self._changed(slice(None))
        self._memo = None

    def rescale(self, factor: float) -> None:
        """Multiply every learnt value by ``factor`` (a profile in the series' units): a new
        level of a positive series whose daily shape scales with it (load, latency)."""
        if self.log:
            self.shift(float(np.log(factor)))
            return
        if self._weekly is not None:
            self._weekly *= np.float32(factor)
        self._recent[: min(self._recent_written, self._recent.size)] *= np.float32(factor)
        self._changed(slice(None))
        self._memo = None
        self._recent_memo = None
        memo = self._pool_memo
        if memo is not None and memo[2] is not None:
            self._pool_memo = (memo[0], memo[1], memo[2] * factor)

    # ----------------------------------------------------------------- state

    @property
    def nbytes(self) -> int:
        weekly = 0 if self._weekly is None else self._weekly.nbytes
        kept = 0 if self._kept is None else sum(a.nbytes for a in self._kept)
        return weekly + self._written.nbytes + self._recent.nbytes + kept

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that rebuild this profile exactly (see ``from_state``)."""
        weekly = self._weekly if self._weekly is not None else np.empty((0, self.depth))
        return {
            "weekly": weekly.astype(np.float32),
            "written": self._written,
            "recent": self._recent,
            "meta": np.array(
                [self.depth, self.min_level_samples, self._recent_written, int(self.log)]
            ),
        }

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> SeasonalProfile:
        depth, min_level_samples, recent_written, log = (int(v) for v in state["meta"])
        profile = cls(depth, state["recent"].size, min_level_samples, bool(log))
        if state["weekly"].size:
            profile._weekly = state["weekly"].astype(np.float32).reshape(HOURS_PER_WEEK, depth)
        profile._written = state["written"].astype(np.int64)
        profile._recent = state["recent"].astype(np.float32)
        profile._recent_written = recent_written
        return profile
