"""Deciding: how far a value is from its baseline, and when that is an incident.

A value is scored by a robust z (distance to the usual value in robust standard
deviations, floored at a fraction of the usual value so a flat history does not make every
wiggle infinite) and by a ratio to the usual value. It is *over* when both are large and
the absolute change matters. Real telemetry is heavy-tailed: single values several
deviations out are ordinary, incidents persist. So a value *exceeds* (and may alert) when
it is over and so was the previous judged value, or when it is over by ``z_spike`` on its
own. An open incident closes when a value is back near usual. One incident gives one alert,
and a cooldown after it absorbs the aftershocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from baselines.baseline import LOG_FLOOR

Direction = Literal["high", "low", "both"]
MAX_OFFSETS = 4096


@dataclass(frozen=True)
class Thresholds:
    direction: Direction = "high"
    z_flag: float = 5.0
    """Robust z of two values in a row that exceed (the score reaches 0.5 here)..."""
    z_spike: float = 12.0
    """...or of a single value that does."""
    z_clear: float = 2.5
    """An open incident closes when the z falls below this..."""
    flag_ratio: float = 2.0
    """...and a value exceeds only if it is also this many times the usual value..."""
    clear_ratio: float = 1.5
    """...or closes when the ratio falls below this."""
    min_delta: float = 20.0
    """Smallest absolute change that counts (latency: ms)."""
    min_history: int = 30
    """Values a series must have learnt before anything of it may be flagged."""
    spread_floor: float = 0.05
    """The spread used is at least this fraction of the usual value."""
    cooldown_seconds: float = 900.0
    adopt_after_seconds: float = 6 * 3600.0
    """An incident still open at the start of a local day after this long is a new normal
    (a deploy, a migration): the baseline is moved to its level, and it closes."""


def scale(center: np.ndarray, spread: np.ndarray, th: Thresholds, log: bool) -> np.ndarray:
    """The spread a value is measured in: at least ``spread_floor`` of the usual value."""
    floor = np.log1p(th.spread_floor) if log else th.spread_floor * np.abs(center)
    return np.maximum(np.maximum(spread, floor), 1e-9)


def band(
    center: np.ndarray, spread: np.ndarray, th: Thresholds, log: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) values at z_flag from the usual one, in the series' units."""
    width = th.z_flag * scale(center, spread, th, log)
    if log:
        return np.exp(center - width), np.exp(center + width)
    return center - width, center + width


def deviation(
    value: np.ndarray, center: np.ndarray, spread: np.ndarray, th: Thresholds, log: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(score 0..1, z, ratio, usual), oriented so that larger means 'more in the watched
    direction'. ``center`` and ``spread`` are in the profile's working units (log values
    for a log profile); ``value`` and the returned ``usual`` are in the series' units."""
    work = np.log(np.maximum(value, LOG_FLOOR)) if log else value
    usual = np.exp(center) if log else center
    up = (work - center) / scale(center, spread, th, log)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rise = np.where(usual > 0, value / usual, np.where(value > 0, np.inf, 1.0))
        fall = np.where(value > 0, usual / value, np.where(usual > 0, np.inf, 1.0))
    if th.direction == "high":
        z, ratio = up, rise
    elif th.direction == "low":
        z, ratio = -up, fall
    else:
        z, ratio = np.abs(up), np.maximum(rise, fall)
    score = 1.0 - np.power(0.5, np.maximum(z, 0.0) / th.z_flag)
    return score, z, ratio, usual


def over_and_calm(
    value: np.ndarray, usual: np.ndarray, z: np.ndarray, ratio: np.ndarray, th: Thresholds
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(over, spike, calm) per value: see the module docstring."""
    big = (ratio >= th.flag_ratio) & (np.abs(value - usual) >= th.min_delta)
    calm = (z < th.z_clear) | (ratio < th.clear_ratio)
    return big & (z >= th.z_flag), big & (z >= th.z_spike), calm


def flag_above(center: np.ndarray, spread: np.ndarray, th: Thresholds) -> np.ndarray:
    """For a log profile watched for highs: the value above which ``over_and_calm`` calls a
    value over (z_flag deviations up, and flag_ratio x and min_delta above usual)."""
    _, high = band(center, spread, th, log=True)
    usual = np.exp(center)
    return np.maximum(high, np.maximum(usual * th.flag_ratio, usual + th.min_delta))


def exceeding(over: np.ndarray, spike: np.ndarray, before: np.ndarray) -> np.ndarray:
    """A spike, or over with the previous judged value of the same series (``before``)
    over too."""
    return spike | (over & before)


def previous(over: np.ndarray, last: bool) -> np.ndarray:
    """``before`` for consecutive values of one series, the one before them being ``last``."""
    return np.concatenate(([last], over[:-1]))


@dataclass
class IncidentGate:
    """Open on the first exceeding value (that is the alert), stay open and silent until a
    calm value, then stay quiet for the cooldown. While open, it keeps the values' offsets
    from the baseline, in case the incident turns out to be a new normal."""

    open: bool = False
    quiet_until: float = float("-inf")
    opened_at: float = float("-inf")
    last_over: bool = False
    """Whether the previous judged value was over the threshold."""
    offsets: list[float] = field(default_factory=list)

    def step(self, end: float, exceeds: bool, calm: bool, th: Thresholds) -> bool:
        """Feed one judged value at time ``end``; True when it raises a new alert."""
        if self.open and calm and not exceeds:
            self.open, self.offsets = False, []
            self.quiet_until = end + th.cooldown_seconds
        if not exceeds:
            return False
        alert = not self.open and end > self.quiet_until
        if not self.open:
            self.open, self.opened_at = True, end
        return alert

    def keep_offsets(self, offsets: np.ndarray) -> None:
        self.offsets.extend(offsets.tolist())
        del self.offsets[:-MAX_OFFSETS]

    def adopt(self, now: float, th: Thresholds) -> float | None:
        """At a day's start: the offset to move the baseline by, if the open incident has
        lasted long enough to be the new normal (else None)."""
        if not self.open or now - self.opened_at < th.adopt_after_seconds or not self.offsets:
            return None
        offset = float(np.median(self.offsets))
        self.offsets = []
        return offset
