"""Seeded generator of labelled week-seasonal series shaped like NAB's real-world ones.

Why synthetic: NAB's public series judge the detector, but they carry few incidents of
the kinds our users page on, and tuning against them would overfit the judge. These
series come with exactly known onsets, cover the shapes that matter (spikes, sustained
shifts, slow ramps, a deploy that must be adopted) and the traps that cost false alarms (a
holiday, weekend batch load, heavy-tailed noise, bursty counts, growth over weeks).

Every series is a calendar-driven clean signal (daily and weekly seasonality, in UTC, the
detector's default zone) times the incidents' effect, plus noise of the metric's own kind:

* latency p95 (ms): grows with load; nightly backup at 02:00; for business-hours services,
  weekend and holiday daytime batch jobs (reindexing, exports) that use the idle capacity,
  so a holiday looks like a Sunday: slower than a normal weekday at the same hour;
  multiplicative Student-t noise (heavy tails), noisier at night when requests are few.
* request rate (req/min): Poisson counts of a load curve; a traffic drop is an incident.
* CPU utilisation (%): load plus an hourly cron, Gaussian noise, clipped to 0..100;
  incidents add percentage points rather than multiply.
* event volume (count per step): over-dispersed (gamma-Poisson) counts with unlabelled
  short bursts, as event streams have.

Labels follow NAB's convention (see ``nab.label_windows``): the anomaly is the injected
onset row; its window spans ``int(10% of rows / incidents)`` rows centred on it. No
incident falls in the first eight days: a week-seasonal baseline cannot know what is
usual before it has seen a week (NAB itself only spares the first 15% of rows, at most
750, from scoring; detections after that count).

``python tests/bench/synthetic_series.py OUTDIR [--seed N]`` writes the corpus: for each
series ``NAME.csv`` (``timestamp,value``) and ``NAME.labels.json``, plus
``corpus_windows.json`` (file -> windows) in the spirit of NAB's ``combined_windows.json``.
"""

from __future__ import annotations

import argparse
import json
import zlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from nab import label_windows

Metric = Literal["latency", "requests", "cpu", "events"]
Shape = Literal["spike", "level_shift", "ramp", "deploy"]
Direction = Literal["high", "low", "both"]
TimestampFormat = Literal["nab", "rfc3339", "epoch"]
Audience = Literal["business", "consumer"]

DEFAULT_SEED = 20260504
DAY_0 = datetime(2026, 5, 4, tzinfo=UTC)
"""A Monday: series start here unless they say otherwise."""
FIVE_MIN, ONE_MIN = timedelta(minutes=5), timedelta(minutes=1)
HOLIDAY = date(2026, 5, 25)  # Memorial Day (US) and Whit Monday (much of Europe)
RAMP_HOLD = timedelta(minutes=30)
"""A ramp peaks, is noticed by someone, and is rolled back half an hour later."""


def _day(day: int, clock: str = "00:00") -> datetime:
    """``day`` days after Monday 4 May 2026, at ``clock`` (UTC)."""
    hours, minutes = map(int, clock.split(":"))
    return DAY_0 + timedelta(days=day, hours=hours, minutes=minutes)


def _minutes(count: float) -> timedelta:
    return timedelta(minutes=count)


@dataclass(frozen=True)
class Incident:
    """One injected incident. ``magnitude`` multiplies the clean signal at full effect
    (CPU: adds that many percentage points). A ramp climbs linearly over ``duration``, holds
    for ``RAMP_HOLD``, then recovers; a deploy lasts to the end of the series."""

    shape: Shape
    onset: datetime
    duration: timedelta
    magnitude: float
    why: str

    @property
    def end(self) -> datetime | None:
        if self.shape == "deploy":
            return None
        return self.onset + self.duration + (RAMP_HOLD if self.shape == "ramp" else timedelta())


@dataclass(frozen=True)
class SeriesSpec:
    name: str
    metric: Metric
    about: str
    start: datetime = DAY_0
    weeks: float = 4
    step: timedelta = FIVE_MIN
    incidents: tuple[Incident, ...] = ()
    holidays: tuple[date, ...] = ()
    growth_per_week: float = 0.0
    gap_share: float = 0.0
    """Share of rows dropped at random, as NAB's EC2 series have gaps."""
    timestamp_format: TimestampFormat = "nab"
    natural_direction: Direction = "high"
    """The direction its incidents go; the judged run uses the CLI default regardless."""
    audience: Audience = "business"


@dataclass
class GeneratedSeries:
    spec: SeriesSpec
    csv_path: Path
    labels_path: Path
    timestamps: list[float]
    windows: list[tuple[float, float]]
    onsets: list[float]
    """Onset of the first incident in each window (epoch seconds), parallel to windows."""
    rows: int = field(init=False)

    def __post_init__(self) -> None:
        self.rows = len(self.timestamps)


# The incidents, by series. Onsets sit on the series' grid; none in the first eight days.
GC_STORM = Incident("spike", _day(8, "10:35"), _minutes(10), 5.0, "GC pause storm on one pod")
CACHE_LOST = Incident("level_shift", _day(16, "15:00"), _minutes(120), 2.2, "cache node lost")
POOL_LEAK = Incident("ramp", _day(24, "09:00"), _minutes(240), 3.0, "connection-pool leak")
BAD_KEY = Incident("spike", _day(24, "14:20"), _minutes(15), 4.5, "bad cache key after a push")
DEAD_POOL = Incident("level_shift", _day(9, "14:00"), _minutes(90), 0.35, "LB drops 65% of traffic")
RETRIES = Incident("level_shift", _day(17, "10:00"), _minutes(45), 2.3, "client retry storm")
RUNAWAY = Incident("level_shift", _day(14, "11:00"), _minutes(180), 55.0, "runaway worker spins")
GC_LEAK = Incident("ramp", _day(23, "08:00"), _minutes(360), 40.0, "memory leak; GC eats CPU")
WEBHOOKS = Incident("spike", _day(9, "16:05"), _minutes(12), 7.0, "webhook retries of a batch")
CHATTY = Incident("level_shift", _day(15, "09:30"), _minutes(180), 2.5, "release logs every call")
N_PLUS_1 = Incident("deploy", _day(15, "14:00"), _minutes(0), 1.7, "release adds an N+1 query")


def corpus() -> tuple[SeriesSpec, ...]:
    """The benchmark's series (8, about 90k rows). Day 0 is Monday 4 May 2026."""
    return (
        SeriesSpec(
            name="api_latency_5m",
            metric="latency",
            about="API p95 latency: a spike, a sustained shift and a slow ramp",
            incidents=(GC_STORM, CACHE_LOST, POOL_LEAK),
        ),
        SeriesSpec(
            name="api_latency_holiday_5m",
            metric="latency",
            about="API p95 latency: a Monday holiday acts like a Sunday (no incident), "
            "then a real spike",
            incidents=(BAD_KEY,),
            holidays=(HOLIDAY,),
            timestamp_format="rfc3339",
        ),
        SeriesSpec(
            name="api_requests_5m",
            metric="requests",
            about="API request rate: a traffic drop, a surge; a holiday (no incident)",
            incidents=(DEAD_POOL, RETRIES),
            holidays=(HOLIDAY,),
            timestamp_format="rfc3339",
            natural_direction="both",
        ),
        SeriesSpec(
            name="host_cpu_5m",
            metric="cpu",
            about="host CPU %, starts mid-week, 0.4% of rows missing: runaway worker, leak",
            incidents=(RUNAWAY, GC_LEAK),
            gap_share=0.004,
            timestamp_format="epoch",
            start=_day(2, "13:35"),
        ),
        SeriesSpec(
            name="event_volume_1m",
            metric="events",
            about="events per minute, bursty: a retry storm and a sustained increase",
            incidents=(WEBHOOKS, CHATTY),
            weeks=3,
            step=ONE_MIN,
        ),
        SeriesSpec(
            name="checkout_latency_deploy_5m",
            metric="latency",
            about="checkout p95 latency: a deploy makes it 1.7x slower for good (flag once)",
            incidents=(N_PLUS_1,),
            weeks=5,
        ),
        SeriesSpec(
            name="search_latency_quiet_5m",
            metric="latency",
            about="consumer search p95 latency, evening peak, no incident (only false alarms)",
            timestamp_format="rfc3339",
            audience="consumer",
        ),
        SeriesSpec(
            name="db_latency_drift_5m",
            metric="latency",
            about="database p95 latency growing 7% a week as tables grow, no incident",
            growth_per_week=0.07,
            start=_day(-4, "09:10"),
            weeks=5,
        ),
    )


Array = npt.NDArray[np.float64]


def _bump(hour: Array, peak: float, width: float) -> Array:
    distance = (hour - peak + 12.0) % 24.0 - 12.0
    return np.exp(-0.5 * (distance / width) ** 2)


def _load(hour: Array, day: npt.NDArray[np.int64], audience: Audience) -> Array:
    """User activity, about 1 at a weekday peak; ``day`` 0..6 is Monday..Sunday."""
    if audience == "consumer":
        weekday = 0.1 + 0.45 * _bump(hour, 12.5, 2.5) + 0.7 * _bump(hour, 20.5, 2.2)
        weekend = 1.15 * (0.1 + 0.55 * _bump(hour, 13.0, 3.0) + 0.6 * _bump(hour, 20.0, 2.5))
        return np.where(day >= 5, weekend, weekday)
    weekday = 0.12 + 0.55 * _bump(hour, 10.5, 2.2) + 0.65 * _bump(hour, 15.5, 2.8)
    weekday = weekday * np.array([1.0, 1.03, 1.02, 0.98, 0.88, 1.0, 1.0])[day]
    saturday = 0.10 + 0.38 * _bump(hour, 14.0, 4.0)
    sunday = 0.09 + 0.32 * _bump(hour, 15.0, 4.0)
    return np.where(day == 5, saturday, np.where(day == 6, sunday, weekday))


def _effect(spec: SeriesSpec, t: Array) -> Array:
    """Per-row incident effect: a multiplier (CPU: added percentage points)."""
    additive = spec.metric == "cpu"
    effect = np.zeros_like(t) if additive else np.ones_like(t)
    for incident in spec.incidents:
        onset = incident.onset.timestamp()
        end = incident.end.timestamp() if incident.end else np.inf
        excess = incident.magnitude - (0.0 if additive else 1.0)
        strength = (
            np.clip((t - onset) / incident.duration.total_seconds(), 0.0, 1.0)
            if incident.shape == "ramp"
            else np.ones_like(t)
        )
        effect = effect + np.where((t >= onset) & (t < end), strength * excess, 0.0)
    return effect


@dataclass(frozen=True)
class Calendar:
    """What drives the clean signal at each row."""

    t: Array
    hour: Array
    day: npt.NDArray[np.int64]
    """0..6, Monday..Sunday; a holiday is a Sunday."""
    load: Array
    growth: Array
    effect: Array
    step_min: float


def _latency(spec: SeriesSpec, c: Calendar, rng: np.random.Generator) -> Array:
    daytime = np.clip(c.hour - 7.0, 0, 1) * np.clip(21.0 - c.hour, 0, 1)
    idle_days = (c.day >= 5) & (spec.audience == "business")
    batch = 1.0 + 0.8 * daytime * idle_days
    backup = np.where((c.hour >= 2.0) & (c.hour < 3.0), 1.35, 1.0)
    clean = (85.0 + 70.0 * c.load**1.5) * batch * backup * c.growth
    sigma = 0.04 + 0.04 * (1.0 - np.clip(c.load, 0, 1))  # fewer requests, noisier p95
    noise = np.exp(sigma * np.clip(rng.standard_t(4, c.t.size), -10, 10))
    return np.round(clean * c.effect * noise, 1)


def _requests(spec: SeriesSpec, c: Calendar, rng: np.random.Generator) -> Array:
    rate = 1500.0 * c.load * c.growth * c.effect * rng.lognormal(0.0, 0.02, c.t.size)
    return np.round(rng.poisson(rate * c.step_min) / c.step_min, 1)


def _cpu(spec: SeriesSpec, c: Calendar, rng: np.random.Generator) -> Array:
    cron = 9.0 * ((c.t % 3600.0) < 300.0).astype(np.float64)  # an hourly job, 5 minutes
    value = 6.0 + 52.0 * c.load * c.growth + cron + rng.normal(0.0, 2.5, c.t.size) + c.effect
    return np.clip(value, 0.0, 100.0).round(1)


def _events(spec: SeriesSpec, c: Calendar, rng: np.random.Generator) -> Array:
    """Gamma-Poisson counts with about ten short unlabelled bursts (1.6-3x) a day."""
    bursts = np.ones_like(c.t)
    for begin in rng.choice(c.t.size, size=int(10 * c.t.size * c.step_min / 1440), replace=False):
        span = slice(begin, begin + rng.integers(1, 5))
        bursts[span] = np.maximum(bursts[span], rng.uniform(1.6, 3.0))
    rate = 45.0 * (0.25 + c.load) * c.growth * c.effect * bursts * c.step_min
    return rng.poisson(rate * rng.gamma(15.0, 1.0 / 15.0, c.t.size)).astype(np.float64)


METRICS = {"latency": _latency, "requests": _requests, "cpu": _cpu, "events": _events}


def _values(spec: SeriesSpec, t: Array, rng: np.random.Generator) -> Array:
    days = t.astype("datetime64[s]").astype("datetime64[D]")
    day = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    for holiday in spec.holidays:
        day = np.where(days == np.datetime64(holiday), 6, day)
    hour = (t % 86400.0) / 3600.0
    calendar = Calendar(
        t=t,
        hour=hour,
        day=day,
        load=_load(hour, day, spec.audience),
        growth=(1.0 + spec.growth_per_week) ** ((t - t[0]) / (7 * 86400.0)),
        effect=_effect(spec, t),
        step_min=spec.step.total_seconds() / 60.0,
    )
    return METRICS[spec.metric](spec, calendar, rng)


def _format(ts: float, style: TimestampFormat) -> str:
    if style == "epoch":
        return str(int(ts))
    moment = datetime.fromtimestamp(ts, UTC)
    return f"{moment:%Y-%m-%d %H:%M:%S}" if style == "nab" else f"{moment:%Y-%m-%dT%H:%M:%SZ}"


def rfc3339(ts: float) -> str:
    return f"{datetime.fromtimestamp(ts, UTC):%Y-%m-%dT%H:%M:%SZ}"


def _sample(spec: SeriesSpec, seed: int) -> tuple[Array, Array]:
    """Timestamps and values; a gap never removes an onset row."""
    rng = np.random.default_rng([seed, zlib.crc32(spec.name.encode())])
    step = spec.step.total_seconds()
    count = int(spec.weeks * 7 * 86400 / step)
    t = spec.start.timestamp() + step * np.arange(count, dtype=np.float64)
    values = _values(spec, t, rng)
    keep = rng.random(count) >= spec.gap_share
    for incident in spec.incidents:
        onset = incident.onset.timestamp()
        row = round((onset - t[0]) / step)
        if onset - t[0] < 8 * 86400 or row >= count or t[row] != onset:
            raise ValueError(f"{spec.name}: onset {rfc3339(onset)} is off-grid or too early")
        keep[row] = True
    return t[keep], values[keep]


def _labels(spec: SeriesSpec, rows: int, windows: list[tuple[float, float]]) -> dict[str, Any]:
    def window_of(incident: Incident) -> list[str]:
        onset = incident.onset.timestamp()
        start, end = next(w for w in windows if w[0] <= onset <= w[1])
        return [rfc3339(start), rfc3339(end)]

    not_incidents: list[dict[str, Any]] = [
        {"kind": "holiday", "date": holiday.isoformat(), "behaves_like": "Sunday"}
        for holiday in spec.holidays
    ]
    if spec.growth_per_week:
        not_incidents.append({"kind": "growth", "per_week": spec.growth_per_week})
    return {
        "series": spec.name,
        "file": f"{spec.name}.csv",
        "about": spec.about,
        "metric": spec.metric,
        "rows": rows,
        "resolution_s": int(spec.step.total_seconds()),
        "timestamp_format": spec.timestamp_format,
        "timezone": "UTC",
        "natural_direction": spec.natural_direction,
        "incidents": [
            {
                "shape": incident.shape,
                "onset": rfc3339(incident.onset.timestamp()),
                "end": rfc3339(incident.end.timestamp()) if incident.end else None,
                "magnitude": incident.magnitude,
                "effect": "adds percentage points" if spec.metric == "cpu" else "multiplies",
                "why": incident.why,
                "window": window_of(incident),
            }
            for incident in spec.incidents
        ],
        "windows": [[rfc3339(start), rfc3339(end)] for start, end in windows],
        "not_incidents": not_incidents,
        "window_convention": "NAB: int(10% of rows / incidents) rows centred on each onset "
        "row, clipped to the series, overlaps merged",
    }


def generate(spec: SeriesSpec, out_dir: Path, seed: int = DEFAULT_SEED) -> GeneratedSeries:
    """Write ``NAME.csv`` and ``NAME.labels.json`` for one series; same seed, same bytes."""
    t, values = _sample(spec, seed)
    timestamps = t.tolist()
    onsets = [incident.onset.timestamp() for incident in spec.incidents]
    anomaly_rows = [timestamps.index(onset) for onset in onsets]
    windows = [(timestamps[a], timestamps[b]) for a, b in label_windows(len(t), anomaly_rows)]
    csv_path = out_dir / f"{spec.name}.csv"
    with csv_path.open("w") as sink:
        sink.write("timestamp,value\n")
        style = spec.timestamp_format
        sink.writelines(
            f"{_format(ts, style)},{value:g}\n" for ts, value in zip(t, values, strict=True)
        )
    labels = _labels(spec, len(t), windows) | {"seed": seed}
    labels_path = out_dir / f"{spec.name}.labels.json"
    labels_path.write_text(json.dumps(labels, indent=2) + "\n")
    first_onsets = [min(o for o in onsets if start <= o <= end) for start, end in windows]
    return GeneratedSeries(spec, csv_path, labels_path, timestamps, windows, first_onsets)


def generate_corpus(out_dir: Path, seed: int = DEFAULT_SEED) -> list[GeneratedSeries]:
    out_dir.mkdir(parents=True, exist_ok=True)
    series = [generate(spec, out_dir, seed) for spec in corpus()]
    index = {s.csv_path.name: [[rfc3339(a), rfc3339(b)] for a, b in s.windows] for s in series}
    (out_dir / "corpus_windows.json").write_text(json.dumps(index, indent=2) + "\n")
    return series


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    for series in generate_corpus(args.out_dir, args.seed):
        print(f"{series.csv_path}: {series.rows} rows, {len(series.windows)} windows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
