"""Backtest: run the detector's seasonal baseline and incident gate over a CSV series.

Contract (DESIGN.md, stable): reads ``timestamp,value`` rows (the first two columns; a
header is required), writes ``timestamp,value,expected,score,is_anomaly``. Each row is one
observation, judged like one window of the live detector.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TextIO
from zoneinfo import ZoneInfo

from baselines.baseline import SeasonalBaseline, hour_of_week
from baselines.detect import DetectorConfig, IncidentGate

Direction = Literal["high", "low", "both"]


class ReplayInputError(ValueError):
    """The CSV cannot be replayed; the message names the line and what is wrong."""


@dataclass
class ReplaySummary:
    rows: int = 0
    flagged: int = 0
    skipped: int = 0


def parse_timestamp(text: str) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _score(value: float, expected: float, direction: Direction) -> tuple[float, float]:
    """(score in 0..1, ratio oriented so that > 1 means 'in the watched direction')."""
    up = value / expected if expected > 0 else (math.inf if value > 0 else 1.0)
    down = expected / value if value > 0 else (math.inf if expected > 0 else 1.0)
    ratio = {"high": up, "low": down, "both": max(up, down)}[direction]
    return max(0.0, 1 - 1 / ratio), ratio


def replay(
    source: TextIO, sink: TextIO, config: DetectorConfig, direction: Direction = "high"
) -> ReplaySummary:
    # A row is one observation, not a window of many spans, and its unit is unknown; a
    # baseline level with 10 observations may judge (hourly data: ten days of one hour).
    config = replace(config, min_window_count=1, min_delta_ms=0.0, min_baseline_windows=10)
    zone = ZoneInfo(config.timezone)
    reader = csv.reader(source)
    header = next(reader, None)
    if header is None or len(header) < 2:
        raise ReplayInputError("line 1: expected a header with at least two columns")
    try:
        float(header[1])
    except ValueError:
        pass
    else:
        raise ReplayInputError(f"line 1: expected a header, got data {header[:2]}")
    writer = csv.writer(sink, lineterminator="\n")
    writer.writerow(["timestamp", "value", "expected", "score", "is_anomaly"])
    baseline, gate, summary = SeasonalBaseline(), IncidentGate(), ReplaySummary()
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) < 2:
            raise ReplayInputError(f"line {line}: expected timestamp,value, got {row}")
        try:
            ts, value = parse_timestamp(row[0]), float(row[1])
        except ValueError as exc:
            raise ReplayInputError(f"line {line}: {exc}") from exc
        if not math.isfinite(value):
            summary.skipped += 1
            continue
        summary.rows += 1
        how = hour_of_week(ts, zone)
        estimate = baseline.estimate(how)
        expected = estimate.usual if estimate else value
        score, ratio = _score(value, expected, direction)
        judged = estimate is not None and estimate.samples >= config.min_baseline_windows
        alert = gate.step(config, ts, ratio if judged else None, judged, abs(value - expected))
        if alert:
            summary.flagged += 1
        if not gate.open:
            baseline.add(how, value)
        writer.writerow([row[0], row[1], f"{expected:.6g}", f"{score:.4f}", int(alert)])
    return summary


def replay_files(
    input_path: Path, output_path: Path, config: DetectorConfig, direction: Direction
) -> ReplaySummary:
    with input_path.open(newline="") as source, output_path.open("w", newline="") as sink:
        return replay(source, sink, config, direction)
