"""Deciding: how far a value is from its baseline, and whether that is a surprise for
this series.

A value is measured by a robust z: its distance to the usual value in spreads. The spread
cannot collapse, whatever the history (``floored_spread``): a series stuck at one level, a
count that is mostly zero, or a quantised metric would otherwise make every small change
infinitely far. The z is turned into a bounded score, ``log1p(z)``, so a single wild value
cannot dominate what follows.

Distance alone floods on real series: a noisy series is several spreads out every hour.
So each series learns the distribution of its own scores (``Habits``), and recent behaviour
(the mean score of the last few values) alerts only when it is improbable under that
distribution: its tail probability is below ``Thresholds.surprise``, as Numenta's anomaly
likelihood does, or when one value alone is as improbable as that many surprises (a spike
between ordinary values, which their mean dilutes). A noisy series and a quiet one then
alert at the same rate of surprise, and the likelihood (1 - tail) ranks values across
series.

An alert opens an incident (``IncidentGate``): one alert, silence until a calm value, then
a cooldown. An incident that lasts ``adopt_after_seconds`` is a new level (a deploy, a
migration): the baseline moves to it at the next hour and the incident closes.

Everything a value is judged against (baseline, floors, the score distribution) is frozen
as it stood when the value's local hour (baseline) or day (floors, scores) began, so the
replay can judge a whole day in one vectorised step with exactly the live result. A new
series is the exception, so that it can alert within its first hour: it is judged from its
``min_history``-th value, against a score distribution started from the scores of its
recent values (``Habits.seed``), refined every hour until its memory is nearly full
(``SETTLED``), and its floors are taken every hour until its recent values fill their ring.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from functools import cached_property
from statistics import NormalDist
from typing import Literal

import numpy as np

from baselines.baseline import LOG_FLOOR, SeasonalProfile

Direction = Literal["high", "low", "both"]
MAX_OFFSETS = 4096
SETTLED = 0.95
"""Share of its exponential memory a score distribution fills before it is frozen for whole
days (``Habits.settled``)."""
MIN_SCORE_SPREAD = 1e-3
"""The score distribution's spread is at least this (a perfectly regular series)."""
ADOPT_LAST = 60
"""Offsets a new level is measured on: the latest (an hour of one-minute windows)."""


@dataclass(frozen=True)
class Thresholds:
    direction: Direction = "high"
    surprise: float = 1e-4
    """Tail probability of the recent mean score, under the series' own score
    distribution, below which recent behaviour is a surprise (an alert)."""
    recent_values: int = 3
    """Values whose mean score is 'recent behaviour'."""
    memory_values: int = 1000
    """Values the score distribution effectively remembers (exponential forgetting)."""
    min_scores: int = 30
    """Scores a series must have learnt before a surprise can be measured."""
    z_flag: float = 3.5
    """A value alerts only this many spreads out (the band drawn around usual)..."""
    z_clear: float = 2.5
    """...and an incident closes below this many..."""
    flag_ratio: float = 2.0
    """...and a value alerts only if it is also this many times the usual value..."""
    clear_ratio: float = 1.5
    """...or closes the incident when the ratio falls below this."""
    min_delta: float = 20.0
    """Smallest absolute change that counts (latency: ms)."""
    min_history: int = 30
    """Values a series must have learnt before anything of it may be flagged."""
    spread_floor: float = 0.01
    """Floor of the spread relative to the level: 1% of the usual value."""
    longrun_share: float = 0.1
    """Floor of the spread relative to the series' recent spread across all hours."""
    cooldown_seconds: float = 300.0
    """No new alert for a series this soon after its incident closed (unless the trouble
    outlasts it). Short: the incidents across services already fold one fault's alerts,
    and a longer one hid a second fault of the same service minutes after the first."""
    adopt_after_seconds: float = 2 * 3600.0
    """An incident still open after this long is a new level: the baseline moves to it at
    the next hour, and it closes."""

    @cached_property
    def critical(self) -> float:
        """The standardised recent score whose upper tail is ``surprise``."""
        return NormalDist().inv_cdf(1.0 - self.surprise)

    @cached_property
    def single_margin(self) -> float:
        """How much further out than ``critical`` one value's standardised score must be to
        be a surprise by itself: its tail below ``surprise ** recent_values``, as improbable
        as that many surprises, so it stands for the recent values it replaces. A spike of
        one value a hundred spreads out is diluted by its ordinary neighbours in the recent
        mean and would not alert."""
        return -NormalDist().inv_cdf(max(self.surprise**self.recent_values, 1e-300)) - self.critical


def floored_spread(
    center: np.ndarray,
    spread: np.ndarray,
    th: Thresholds,
    log: bool,
    quantum: float | np.ndarray,
    longrun: float | np.ndarray,
) -> np.ndarray:
    """The spread a value is measured in, never below: the smallest step the series takes
    (``quantum``, in the series' units: a count cannot change by less than 1), a share of
    the level (``spread_floor``), and a share of the series' recent spread across all hours
    (``longrun``, working units: one flat hour-of-week bucket does not make the series
    flat)."""
    if log:
        step = quantum / np.maximum(np.exp(center), LOG_FLOOR)
        level = np.log1p(th.spread_floor)
    else:
        step = np.broadcast_to(quantum, center.shape)
        level = th.spread_floor * np.abs(center)
    floors = np.maximum(np.maximum(step, level), th.longrun_share * longrun)
    return np.maximum(np.maximum(spread, floors), 1e-9)


def band(
    center: np.ndarray, spread: np.ndarray, th: Thresholds, log: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) values at z_flag floored spreads from the usual one, in the series'
    units (``spread`` already floored)."""
    width = th.z_flag * spread
    if log:
        return np.exp(center - width), np.exp(center + width)
    return center - width, center + width


def flag_above(center: np.ndarray, spread: np.ndarray, th: Thresholds) -> np.ndarray:
    """For a log profile watched for highs: the value below which nothing may alert
    (z_flag spreads, flag_ratio x and min_delta above usual); above it, the series'
    surprise decides."""
    usual = np.exp(center)
    floor = np.exp(center + th.z_flag * np.maximum(spread, np.log1p(th.spread_floor)))
    return np.maximum(floor, np.maximum(usual * th.flag_ratio, usual + th.min_delta))


def deviation(
    value: np.ndarray, center: np.ndarray, spread: np.ndarray, th: Thresholds, log: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z, ratio, usual), oriented so that larger means 'more in the watched direction'.
    ``center`` and the floored ``spread`` are in the profile's working units (log values for
    a log profile); ``value`` and the returned ``usual`` are in the series' units."""
    work = np.log(np.maximum(value, LOG_FLOOR)) if log else value
    usual = np.exp(center) if log else center
    up = (work - center) / spread
    if th.direction == "high":
        return up, _ratio(value, usual), usual
    if th.direction == "low":
        return -up, _ratio(usual, value), usual
    return np.abs(up), np.maximum(_ratio(value, usual), _ratio(usual, value)), usual


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b where b > 0; elsewhere inf where a > 0, else 1."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.where(b > 0, a / b, np.where(a > 0, np.inf, 1.0))


def raw_score(z: np.ndarray) -> np.ndarray:
    """The bounded score a series' distribution is learnt on: 0 at usual, log-growing."""
    return np.log1p(np.maximum(z, 0.0))


def material_and_calm(
    value: np.ndarray, usual: np.ndarray, z: np.ndarray, ratio: np.ndarray, th: Thresholds
) -> tuple[np.ndarray, np.ndarray]:
    """(material, calm): a value may alert only if it is far enough out to matter (z_flag
    spreads, flag_ratio x and min_delta from usual); an incident closes on a calm value.
    (Closing only once recent behaviour is ordinary again kept a burst of a noisy count
    one incident, but held incidents open past the next one: it cost 12 points on the
    synthetic corpus and 1 on NAB's dev series.)"""
    material = (z >= th.z_flag) & (ratio >= th.flag_ratio) & (np.abs(value - usual) >= th.min_delta)
    calm = (z < th.z_clear) | (ratio < th.clear_ratio)
    return material, calm


_erfc = np.frompyfunc(math.erfc, 1, 1)


def likelihood(standardised: np.ndarray) -> np.ndarray:
    """1 - the upper tail probability of a standardised recent score: the score a replay
    writes (0.5 for ordinary behaviour, near 1 for a surprise); NaN (unmeasured) gives 0."""
    known = np.isfinite(standardised)
    tail = np.ones_like(standardised)
    if known.any():
        tail[known] = 0.5 * _erfc(standardised[known] / math.sqrt(2.0)).astype(np.float64)
    return np.where(known, 1.0 - tail, 0.0)


GRID_VALUES = 32
"""Distinct values a series keeps to learn the step its values take."""


@dataclass
class Habits:
    """What is ordinary for one series: the distribution of its scores (exponentially
    weighted sums) and the smallest step its values take, frozen when each local day
    begins (``begin_hour``; every hour while the series is young, and first when it is
    first judged, ``seed``), and the last scores for the recent mean."""

    s0: float = 0.0
    s1: float = 0.0
    s2: float = 0.0
    learnt: int = 0
    day: int = -1
    mean: float = math.nan
    """The frozen distribution: NaN until ``min_scores`` were learnt."""
    sd: float = math.nan
    frozen_quantum: float = 0.0
    """The smallest gap between the values of ``grid`` when the day began (0: none yet)."""
    grid: list[float] = field(default_factory=list)
    """The first ``GRID_VALUES`` distinct values, sorted: the grid the series' values lie
    on (a count's step is 1). Not the steps between consecutive values: a continuous
    series' first few steps are far apart by chance (14 ms, then 150 ms: a "step" of
    136 ms made a 30x slowdown ordinary)."""
    values: int = 0
    """Finite values committed: the grid is the series' own once one of them fell on a value
    already in it (or came after it filled). A few distinct values of a continuous series
    (two p95s, 12 ms and 148 ms) are no grid: their gap is chance, not a step."""
    tail: list[float] = field(default_factory=list)
    """The last ``recent_values - 1`` scores."""
    pending: list[float] = field(default_factory=list)
    """Scores not learnt yet: learnt when the next day (young: hour) begins."""

    @property
    def known(self) -> bool:
        """Whether the score distribution is known (``min_scores`` were learnt)."""
        return not math.isnan(self.mean)

    def begin_hour(self, hour: int, th: Thresholds) -> None:
        """At a local hour's start: when a day begins, learn the finished day's scores, then
        freeze the distribution and the step. A young series (not ``settled``) does so at
        every hour's start: its distribution is still taking shape (and it learns its
        first ``min_scores`` scores as they come, ``commit``)."""
        day = hour // 24
        if day == self.day and self.settled(th):
            return
        self.day = day
        self._learn(self.pending, th)
        self.pending = []
        self._freeze(th)
        on_grid = self.values > len(self.grid) >= 2
        self.frozen_quantum = self.quantum if on_grid else 0.0

    @property
    def quantum(self) -> float:
        """The smallest gap between the values of ``grid`` (inf: fewer than two)."""
        return float(np.diff(self.grid).min()) if len(self.grid) >= 2 else math.inf

    def settled(self, th: Thresholds) -> bool:
        """Whether the distribution is frozen for whole days: once its exponential memory
        is 95% full (about 3 x ``memory_values`` scores). Before, a series' first days
        judge it against other hours and days, more widely than later, and a distribution
        frozen on those scores alone made its second day noisier than any after."""
        return self.s0 >= SETTLED * th.memory_values

    def _learn(self, pending: list[float], th: Thresholds) -> None:
        if not pending:
            return
        scores = np.array(pending, dtype=np.float64)
        decay = 1.0 - 1.0 / th.memory_values
        weights = decay ** np.arange(scores.size - 1, -1, -1, dtype=np.float64)
        carry = decay**scores.size
        self.s0 = carry * self.s0 + float(weights.sum())
        self.s1 = carry * self.s1 + float((weights * scores).sum())
        self.s2 = carry * self.s2 + float((weights * scores * scores).sum())
        self.learnt += scores.size

    def _freeze(self, th: Thresholds) -> None:
        if self.learnt >= th.min_scores and self.s0 > 0:
            self.mean = self.s1 / self.s0
            variance = max(self.s2 / self.s0 - self.mean * self.mean, 0.0)
            self.sd = max(math.sqrt(variance), MIN_SCORE_SPREAD)

    def seed(self, profile: SeasonalProfile, center: float, spread: float, th: Thresholds) -> None:
        """A series judged for the first time (``center`` and the floored ``spread`` of its
        first judged value): its distribution starts from the scores its recent values have
        against the same baseline (they made it, so they score a little low), and it can
        alert from this value on, not ``min_scores`` values later."""
        if self.known or self.learnt:
            return
        past = profile.recent_values()
        at = (np.full(past.size, center), np.full(past.size, spread))
        scores = raw_score(deviation(past, *at, th, profile.log)[0])
        self._keep(scores[np.isfinite(scores)].tolist(), th)

    def _keep(self, scores: list[float], th: Thresholds) -> None:
        """Scores (judged ones) to learn: while the distribution is not known, at once,
        and it is frozen as soon as ``min_scores`` are learnt, so a new series can alert
        from its ``min_history + min_scores``-th value on; once known, at ``begin_hour``."""
        if not self.known:
            need = max(th.min_scores - self.learnt, 0)
            self._learn(scores[:need], th)
            self._freeze(th)
            scores = scores[need:]
        self.pending.extend(scores)

    def standardised(self, scores: np.ndarray, th: Thresholds) -> np.ndarray:
        """For consecutive scores of this day, how surprising recent behaviour is, on the
        scale of ``Thresholds.critical``: the mean of each score and the ones before it
        (``recent_values`` in all), standardised by the frozen distribution, or the score
        alone, standardised, less ``single_margin``, whichever is larger (the score alone
        only once ``judges_alone``). NaN before the distribution is known or where the score
        was not judged (NaN). Pure: ``commit`` records them."""
        if math.isnan(self.mean) or scores.size == 0:
            return np.full(scores.size, np.nan)
        recent = self._recent_mean(scores, th)
        if not self.judges_alone(th):
            return recent
        alone = (scores - self.mean) / self.sd - th.single_margin
        return np.fmax(recent, alone)

    def judges_alone(self, th: Thresholds) -> bool:
        """Whether one score may be a surprise by itself: once ``memory_values`` scores were
        learnt. A young distribution's tail is a guess (the first busy hour of a new series
        with a weekly rhythm would alert)."""
        return self.learnt >= th.memory_values

    def _recent_mean(self, scores: np.ndarray, th: Thresholds) -> np.ndarray:
        """The standardised mean of each score and the ``recent_values - 1`` before it; NaN
        where one of them was not judged (a NaN stays NaN through the sum). Summed in the
        order ``standardised_one`` sums, so the live detector and a replay agree exactly."""
        k = th.recent_values
        series = np.concatenate((np.array(self.tail, dtype=np.float64), scores))
        out = np.full(scores.size, np.nan)
        windows = series.size - k + 1
        if windows > 0:
            sums = series[:windows].copy()
            for i in range(1, k):
                sums += series[i : i + windows]
            out[scores.size - windows :] = (sums / k - self.mean) / self.sd
        return out

    def standardised_one(self, score: float, th: Thresholds) -> float:
        """``standardised`` of one score, without numpy (the live detector's path: one
        value per series and window)."""
        k, tail = th.recent_values, self.tail
        if math.isnan(self.mean) or math.isnan(score):
            return math.nan
        recent = math.nan  # a NaN among the recent scores stays NaN through the sum
        if len(tail) >= k - 1:
            window = score + sum(tail[len(tail) - k + 1 :]) if k > 1 else score
            recent = (window / k - self.mean) / self.sd
        if not self.judges_alone(th):
            return recent
        alone = (score - self.mean) / self.sd - th.single_margin
        return alone if math.isnan(recent) else max(recent, alone)

    def commit_one(self, score: float, value: float, th: Thresholds) -> None:
        """``commit`` of one score and its value, without numpy."""
        if not math.isnan(score):
            self._keep([score], th)
        if math.isfinite(value):
            self.values += 1
            grid = self.grid
            if len(grid) < GRID_VALUES:
                at = bisect.bisect_left(grid, value)
                if at == len(grid) or grid[at] != value:
                    grid.insert(at, value)
        self._remember([*self.tail, score], th)

    def commit(self, scores: np.ndarray, values: np.ndarray, th: Thresholds) -> None:
        """Record consecutive scores (NaN: not judged) and the values they scored."""
        if scores.size == 0:
            return
        self._keep(scores[~np.isnan(scores)].tolist(), th)
        finite = values[np.isfinite(values)]
        self.values += finite.size
        room = GRID_VALUES - len(self.grid)
        if room > 0:
            distinct, first = np.unique(finite, return_index=True)
            fresh = ~np.isin(distinct, self.grid)
            new = distinct[fresh][np.argsort(first[fresh], kind="stable")[:room]]
            if new.size:
                self.grid = np.unique(np.concatenate((np.array(self.grid), new))).tolist()
        self._remember(self.tail + scores[-(th.recent_values - 1) :].tolist(), th)

    def _remember(self, recent: list[float], th: Thresholds) -> None:
        """Keep the scores the next recent mean needs."""
        self.tail = recent[max(0, len(recent) - (th.recent_values - 1)) :]


@dataclass
class IncidentGate:
    """Open on the first exceeding value (that is the alert), stay open and silent until a
    calm value, then stay quiet for the cooldown. An incident that opens inside the
    cooldown is an aftershock and stays silent, unless it still exceeds once the cooldown
    is over: then it is new trouble, and alerts. While open, it keeps the values' offsets
    from the baseline, in case the incident turns out to be a new level."""

    open: bool = False
    quiet_until: float = float("-inf")
    opened_at: float = float("-inf")
    offsets: list[float] = field(default_factory=list)
    announced: bool = True
    """Whether the open incident has alerted."""

    def step(self, end: float, exceeds: bool, calm: bool, th: Thresholds) -> bool:
        """Feed one judged value at time ``end``; True when it raises a new alert."""
        if self.open and calm and not exceeds:
            self.open, self.offsets = False, []
            self.quiet_until = end + th.cooldown_seconds
        if not exceeds:
            return False
        if not self.open:
            self.open, self.opened_at = True, end
            self.announced = end > self.quiet_until
            return self.announced
        if not self.announced and end > self.quiet_until:
            self.announced = True
            return True
        return False

    def keep_offsets(self, offsets: np.ndarray) -> None:
        self.offsets.extend(offsets.tolist())
        del self.offsets[:-MAX_OFFSETS]

    def adopt_due(self, now: float, th: Thresholds) -> bool:
        """Whether the open incident has lasted long enough at ``now`` to be a new level."""
        return self.open and now - self.opened_at >= th.adopt_after_seconds and bool(self.offsets)

    def adopt(self, now: float, th: Thresholds) -> float | None:
        """At an hour's start: the offset to move the baseline by (the median of the last
        hour's worth of offsets kept), if the open incident has lasted long enough to be
        the new level (else None). The incident closes: the level is now usual."""
        if not self.adopt_due(now, th):
            return None
        offset = float(np.median(self.offsets[-ADOPT_LAST:]))
        self.open, self.offsets = False, []
        self.quiet_until = now + th.cooldown_seconds
        return offset
