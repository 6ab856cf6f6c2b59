"""Week-seasonal baseline of one scalar series (a window's p95, its request count...).

Each of the 168 hour-of-week buckets keeps the most recent window values in a small ring
buffer; the "usual" value is their median, which shrugs off the odd outlier. A young
bucket falls back to the same hour on any weekday, then to everything seen, and the answer
says which level answered and on how many windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np

HOURS_PER_WEEK = 168
Level = Literal["hour_of_week", "hour_of_day", "global"]


def hour_of_week(epoch_s: float, zone: ZoneInfo) -> int:
    """0 = Monday 00:00 local time, so business hours follow the zone across DST changes."""
    local = datetime.fromtimestamp(epoch_s, UTC).astimezone(zone)
    return local.weekday() * 24 + local.hour


@dataclass(frozen=True)
class Estimate:
    usual: float
    samples: int
    level: Level


class SeasonalBaseline:
    def __init__(self, capacity: int = 64, min_level_samples: int = 10) -> None:
        self._capacity = capacity
        self._min_level_samples = min_level_samples
        self._values: dict[int, np.ndarray] = {}
        self._written: dict[int, int] = {}

    def add(self, how: int, value: float) -> None:
        ring = self._values.get(how)
        if ring is None:
            ring = self._values[how] = np.empty(self._capacity, dtype=np.float32)
            self._written[how] = 0
        ring[self._written[how] % self._capacity] = value
        self._written[how] += 1

    def _bucket(self, how: int) -> np.ndarray:
        ring = self._values.get(how)
        if ring is None:
            return np.empty(0, dtype=np.float32)
        return ring[: min(self._written[how], self._capacity)]

    def estimate(self, how: int) -> Estimate | None:
        """Median of the most specific level with enough history, or None with no history."""
        levels: tuple[tuple[Level, list[int]], ...] = (
            ("hour_of_week", [how]),
            ("hour_of_day", [day * 24 + how % 24 for day in range(7)]),
            ("global", list(self._values)),
        )
        for level, buckets in levels:
            values = np.concatenate([self._bucket(b) for b in buckets] or [np.empty(0)])
            if values.size >= self._min_level_samples or (level == "global" and values.size):
                return Estimate(float(np.median(values)), int(values.size), level)
        return None

    @property
    def nbytes(self) -> int:
        return sum(ring.nbytes for ring in self._values.values())
