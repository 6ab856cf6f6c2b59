"""The last week of one series as it was observed, hour by hour, and its flags: what a
dashboard draws over the seasonal band.

The seasonal profile cannot show this: it forgets order and never learns the windows of an
open incident. The trail keeps, for each of the last 168 local hours, the geometric mean
and the peak of the hour's window p95s, and the windows that raised an alert. Its cost on
the hot path is a few float operations per window; the arrays are written once per hour.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np

from baselines.baseline import HOURS_PER_WEEK, LOG_FLOOR, hour_of_week, json_column

MAX_FLAGS = 32


class HourlyTrail:
    def __init__(self) -> None:
        self._hour = np.full(HOURS_PER_WEEK, -1, dtype=np.int64)
        """Local hour index held by each slot (slot = hour-of-week); -1: none."""
        self._mean = np.full(HOURS_PER_WEEK, np.nan, dtype=np.float32)
        self._peak = np.full(HOURS_PER_WEEK, np.nan, dtype=np.float32)
        self._flags: list[tuple[float, int, float]] = []
        """(window start in epoch seconds, its local hour index, its p95 in ms) of alerts."""
        self._current = -1
        self._log_sum = 0.0
        self._count = 0
        self._max = 0.0

    def add(self, hour_index: int, p95: float) -> None:
        """One window's p95, in time order."""
        if hour_index != self._current:
            self._settle()
            self._current, self._log_sum, self._count, self._max = hour_index, 0.0, 0, 0.0
        self._log_sum += math.log(max(p95, LOG_FLOOR))
        self._count += 1
        self._max = max(self._max, p95)

    def flag(self, window_start: float, hour_index: int, p95: float) -> None:
        self._flags.append((window_start, hour_index, p95))
        del self._flags[:-MAX_FLAGS]

    def _settle(self) -> None:
        """Write the hour in progress to its slot."""
        if self._count:
            how = int(hour_of_week(self._current))
            self._hour[how] = self._current
            self._mean[how] = math.exp(self._log_sum / self._count)
            self._peak[how] = self._max

    def export(self) -> dict[str, Any]:
        """JSON-ready: per hour-of-week, the observed p95 (geometric mean of the hour's
        windows) and peak, null where that hour of the last week was not seen; the
        hour-of-week of the latest hour; the flags of the last week."""
        self._settle()
        latest = self._current
        old = (self._hour <= latest - HOURS_PER_WEEK) | (self._hour < 0)
        return {
            "observed_p95": json_column(np.where(old, np.nan, self._mean)),
            "observed_peak": json_column(np.where(old, np.nan, self._peak)),
            "latest_hour_of_week": None if latest < 0 else int(hour_of_week(latest)),
            "flags": [
                {
                    "start": datetime.fromtimestamp(start, UTC).isoformat().replace("+00:00", "Z"),
                    "hour_of_week": int(hour_of_week(hour)),
                    "p95": round(p95, 3),
                }
                for start, hour, p95 in self._flags
                if hour > latest - HOURS_PER_WEEK
            ],
        }

    @property
    def nbytes(self) -> int:
        return self._hour.nbytes + self._mean.nbytes + self._peak.nbytes + 24 * len(self._flags)

    def state(self) -> dict[str, np.ndarray]:
        self._settle()
        return {
            "hour": self._hour,
            "mean": self._mean,
            "peak": self._peak,
            "flags": np.array(self._flags, dtype=np.float64).reshape(-1, 3),
            "current": np.array([self._current, self._count], dtype=np.int64),
            "running": np.array([self._log_sum, self._max], dtype=np.float64),
        }

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> HourlyTrail:
        trail = cls()
        if not state:  # a checkpoint written before trails existed
            return trail
        trail._hour = state["hour"].astype(np.int64)
        trail._mean = state["mean"].astype(np.float32)
        trail._peak = state["peak"].astype(np.float32)
        trail._flags = [(start, int(hour), p95) for start, hour, p95 in state["flags"].tolist()]
        trail._current, trail._count = (int(v) for v in state["current"])
        trail._log_sum, trail._max = (float(v) for v in state["running"])
        return trail
