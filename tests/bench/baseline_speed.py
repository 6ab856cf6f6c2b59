"""Speed and memory of the baseline engine, on one core, each against a reference measured
in the same run.

    .venv/bin/python tests/bench/baseline_speed.py [--rows 1000000]

- replay, in memory: ``detect`` on a latency-like series (1-minute and 5-minute steps)
  against numpy sorting the same values (the cheapest thing that touches them all);
- replay, file to file: the CLI's path (parse CSV, detect, write CSV) against numpy
  reading the same CSV and sorting it;
- streaming: ``Detector.observe`` on parsed events against a plain Python loop that only
  groups the same events into windows per series (the least any streaming aggregator does),
  for sparse windows (~12 spans per series and minute) and dense ones (~200);
- memory: bytes per series after a week, and for a series whose every bucket is full.
Targets: >= 1,000,000 observations/s in replay, >= 200,000 events/s streaming,
<= 64 KB per series.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from baselines.detect import Detector, DetectorConfig, SeriesState
from baselines.replay import detect, replay_files
from baselines.synthetic import demo_incidents, last_full_week_start, telemetry
from service.contract import TELEMETRY_EVENT, SpanEvent


def best_of(runs: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def latency_series(rows: int, step_s: int) -> tuple[np.ndarray, np.ndarray]:
    epoch = datetime(2024, 1, 1, tzinfo=UTC).timestamp() + np.arange(rows) * float(step_s)
    hour = (epoch // 3600) % 24
    weekday = (epoch // 86400 + 3) % 7
    busy = np.where((weekday < 5) & (hour >= 9) & (hour < 18), 1.0, 0.4)
    values = 100 * (1 + busy) * np.random.default_rng(0).lognormal(0, 0.15, rows)
    return epoch, values


def bench_replay(rows: int) -> None:
    config = DetectorConfig()
    for step in (60, 300):
        epoch, values = latency_series(rows, step)
        ours = best_of(3, lambda e=epoch, v=values: detect(e, v, config))
        reference = best_of(3, lambda v=values: np.sort(v))
        print(
            f"replay in memory, {step // 60}-min rows: {rows / ours:>12,.0f} obs/s "
            f"({ours:.2f}s; numpy sort of the same values {reference * 1000:.1f} ms, "
            f"ratio {ours / reference:.0f}x)"
        )
    epoch, values = latency_series(rows, 60)
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "in.csv", Path(tmp) / "out.csv"
        stamps = np.datetime_as_string(epoch.astype("datetime64[s]"), unit="s")
        with source.open("w") as out:
            out.write("timestamp,value\n")
            out.writelines(f"{t}Z,{v:.3f}\n" for t, v in zip(stamps, values, strict=True))
        ours = best_of(2, lambda: replay_files(source, target, config, "high"))
        reference = best_of(
            2,
            lambda: np.sort(np.loadtxt(source, delimiter=",", skiprows=1, usecols=1)),
        )
    print(
        f"replay file to file, 1-min rows: {rows / ours:>12,.0f} rows/s ({ours:.2f}s; numpy "
        f"loadtxt + sort of the same file {reference:.2f}s, ratio {ours / reference:.2f}x)"
    )


def events_for(days: int, peak_per_minute: int) -> list[list[SpanEvent]]:
    start = last_full_week_start(datetime.now(UTC))
    return [
        [TELEMETRY_EVENT.validate_python(e) for e in minute]
        for minute in telemetry(
            start, demo_incidents(start), minutes=days * 1440, peak_per_minute=peak_per_minute
        )
    ]


def group_only(batches: list[list[SpanEvent]]) -> None:
    """The reference: put each event's value into its (window, series) list, nothing else."""
    windows: dict[tuple[float, str, str], list[float]] = {}
    for batch in batches:
        for event in batch:
            ts = event.timestamp.timestamp()
            key = (ts - ts % 60, event.service, getattr(event, "operation", ""))
            windows.setdefault(key, []).append(getattr(event, "duration_ms", 0.0))


def bench_streaming() -> None:
    for label, days, peak in (("sparse", 3, 12), ("dense", 1, 200)):
        batches = events_for(days, peak)
        count = sum(map(len, batches))

        def run(batches: list[list[SpanEvent]] = batches) -> None:
            detector = Detector(DetectorConfig())
            for batch in batches:
                detector.observe(batch)

        ours = best_of(2, run)
        reference = best_of(2, lambda b=batches: group_only(b))
        print(
            f"streaming, {label} windows ({count / (days * 1440 * 6):.0f} events/series/min): "
            f"{count / ours:>10,.0f} events/s ({ours / count * 1e6:.2f} us/event; grouping "
            f"only {reference / count * 1e6:.2f} us/event, ratio {ours / reference:.2f}x)"
        )


def bench_memory() -> None:
    detector = Detector(DetectorConfig())
    for batch in events_for(7, 12):
        detector.observe(batch)
    series, size = detector.memory()
    full = SeriesState()
    for profile in (full.p95, full.p50, full.count, full.error_rate):
        hours = np.repeat(np.arange(168), 64)
        profile.add_many(hours, np.ones(hours.size))
    print(
        f"memory: {size / series / 1024:.1f} KB per series after a week ({series} series); "
        f"a span series with every bucket full: {full.nbytes / 1024:.1f} KB (target <= 64 KB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})  # one core, as the targets are stated
    bench_replay(args.rows)
    bench_streaming()
    bench_memory()


if __name__ == "__main__":
    main()
