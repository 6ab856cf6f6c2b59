"""One service's learnt baselines as bytes, and back: the payload the store checkpoints;
and the consumer's own record (stream position, outbox, recently applied messages).

An ``.npz`` archive (no pickle: loading it cannot run code) holding every profile's arrays
and a JSON manifest naming each series, its incident gate and the payload version. The
store already checks integrity and version; this module refuses a payload whose manifest
does not match what it expects, with the reason.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

import numpy as np

from baselines.baseline import SeasonalProfile, json_column
from baselines.detect import Detector, SeriesState, ServiceExtras
from baselines.judge import Habits, IncidentGate, Thresholds, band, flag_above
from baselines.trail import HourlyTrail
from baselines.window import SpanKey, SpanWindow
from service.contract import PROFILE_KEY_PREFIX, CallEdge, OperationProfile, WeekProfile

PAYLOAD_VERSION = 1
PROFILES = ("p95", "p50", "count", "error_rate")
RESERVED_PREFIX = "whyslow:"
"""Store keys that are not a service's baselines start with this."""
CONSUMER_KEY_PREFIX = "whyslow:consumer:"
"""Store key of a consumer's own record: this prefix and its queue's name."""


class SnapshotFormatError(ValueError):
    """A payload that does not decode into baselines; the message says why."""


def encode(
    series: dict[SpanKey, SeriesState],
    metrics: dict[tuple[str, str], SeasonalProfile],
    extras: ServiceExtras | None = None,
) -> bytes:
    arrays: dict[str, np.ndarray] = {}
    series_entries: list[dict[str, object]] = []
    metric_entries: list[dict[str, object]] = []
    for i, (key, state) in enumerate(series.items()):
        for name in PROFILES:
            for part, array in getattr(state, name).state().items():
                arrays[f"s{i}.{name}.{part}"] = array
        for part, array in state.trail.state().items():
            arrays[f"s{i}.trail.{part}"] = array
        arrays[f"s{i}.habits.pending"] = np.array(state.habits.pending, dtype=np.float64)
        pool = state.pool
        if pool is not None:
            arrays[f"s{i}.pool.durations"] = np.array(pool.durations, dtype=np.float64)
        gate = {f.name: getattr(state.gate, f.name) for f in fields(IncidentGate)}
        habits = {
            f.name: getattr(state.habits, f.name) for f in fields(Habits) if f.name != "pending"
        }
        series_entries.append(
            {
                "key": list(key),
                "gate": gate,
                "habits": habits,
                "hour": state.hour,
                "pool": None
                if pool is None
                else [
                    pool.errors,
                    pool.slowest,
                    list(pool.evidence),
                    pool.windows,
                    [[lo, up, n] for (lo, up), n in pool.buckets.items()],
                ],
            }
        )
    for i, (metric, profile) in enumerate(metrics.items()):
        for part, array in profile.state().items():
            arrays[f"m{i}.{part}"] = array
        metric_entries.append({"key": list(metric)})
    manifest = {
        "version": PAYLOAD_VERSION,
        "series": series_entries,
        "metrics": metric_entries,
        "extras": extras,
    }
    arrays["manifest"] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    out = io.BytesIO()
    np.savez_compressed(out, **arrays)  # type: ignore[arg-type]  # array names; none is allow_pickle
    return out.getvalue()


def decode(
    payload: bytes,
) -> tuple[
    dict[SpanKey, SeriesState], dict[tuple[str, str], SeasonalProfile], ServiceExtras | None
]:
    """A payload's series, metrics, and the service's calls out and usual errors (None in a
    payload of a build that did not learn them)."""
    try:
        archive = np.load(io.BytesIO(payload), allow_pickle=False)
        manifest = json.loads(archive["manifest"].tobytes())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise SnapshotFormatError(f"not a baseline snapshot: {exc}") from exc
    if manifest.get("version") != PAYLOAD_VERSION:
        raise SnapshotFormatError(
            f"payload version {manifest.get('version')!r}, this build reads {PAYLOAD_VERSION}"
        )
    try:
        series: dict[SpanKey, SeriesState] = {}
        for i, entry in enumerate(manifest["series"]):
            profiles = {
                name: SeasonalProfile.from_state(_parts(archive, f"s{i}.{name}."))
                for name in PROFILES
            }
            gate = IncidentGate(**_known(IncidentGate, entry["gate"]))
            habits = Habits(**_known(Habits, entry.get("habits", {})))
            if f"s{i}.habits.pending" in archive.files:
                habits.pending = archive[f"s{i}.habits.pending"].tolist()
            trail = HourlyTrail.from_state(_parts(archive, f"s{i}.trail."))
            pool = None
            if entry.get("pool") is not None:
                errors, slowest, evidence, windows, *rest = entry["pool"]
                buckets = {
                    (float(lo), float(up)): int(n) for lo, up, n in (rest[0] if rest else [])
                }
                pool = SpanWindow(
                    archive[f"s{i}.pool.durations"].tolist(),
                    errors,
                    [(float(d), str(t)) for d, t in slowest],
                    dict.fromkeys(evidence),
                    windows,
                    buckets,
                    sum(buckets.values()),
                )
            series[tuple(entry["key"])] = SeriesState(
                **profiles,
                gate=gate,
                habits=habits,
                hour=entry.get("hour", -1),
                trail=trail,
                pool=pool,
            )
        metrics: dict[tuple[str, str], SeasonalProfile] = {
            tuple(entry["key"]): SeasonalProfile.from_state(_parts(archive, f"m{i}."))
            for i, entry in enumerate(manifest["metrics"])
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotFormatError(f"incomplete baseline snapshot: {exc!r}") from exc
    extras = manifest.get("extras")
    return series, metrics, extras if isinstance(extras, dict) else None


def _known(cls: type, saved: dict[str, Any]) -> dict[str, Any]:
    """The saved fields this build's dataclass still has (a snapshot of an older build
    carries fields since dropped, and lacks new ones, which take their defaults)."""
    names = {f.name for f in fields(cls)}
    return {name: value for name, value in saved.items() if name in names}


def _parts(archive: np.lib.npyio.NpzFile, prefix: str) -> dict[str, np.ndarray]:
    return {name[len(prefix) :]: archive[name] for name in archive.files if name.startswith(prefix)}


def checkpoint(detector: Detector, services: set[str]) -> dict[str, bytes]:
    """Each service's baselines, and its readable profile beside them."""
    payloads = {service: encode(*detector.export(service)) for service in services}
    timezone = detector.config.timezone
    thresholds = detector.config.thresholds
    payloads |= {
        PROFILE_KEY_PREFIX + s: profile(detector, s, timezone, thresholds) for s in services
    }
    return payloads


def restore(detector: Detector, payloads: dict[str, bytes]) -> None:
    """Install the services' baselines; rows that are not a service's are ignored."""
    for service, payload in payloads.items():
        if service.startswith(RESERVED_PREFIX):
            continue
        try:
            detector.install(*decode(payload))
        except SnapshotFormatError as exc:
            raise SnapshotFormatError(f"service {service!r}: {exc}") from exc


def profile(detector: Detector, service: str, timezone: str, thresholds: Thresholds) -> bytes:
    """A service's week profile, the contract's WeekProfile as JSON (the service's API and
    minimal reports read it): per server operation, each hour-of-week's usual p95 and p50
    (ms) and the windows behind them, the band a window is judged against
    (``band_low``/``band_high`` at z_flag; ``flag_above``: where the ratio and delta floors
    also hold), and the last week as observed with its flags (baselines/trail.py)."""
    series, _, _ = detector.export(service)
    operations = {}
    for (_, operation, kind, _), state in series.items():
        if kind in ("server", "consumer"):
            p95, samples = state.p95.bucket_usuals()
            p50, _ = state.p50.bucket_usuals()
            operations[operation] = OperationProfile.model_validate(
                {
                    "p95": p95,
                    "p50": p50,
                    "samples": samples,
                    **_band(state.p95, max(state.hour // 24, 0), thresholds),
                    **state.trail.export(),
                }
            )
    calls = [
        CallEdge(
            callee=callee,
            calls=calls,
            last_seen=datetime.fromtimestamp(last_seen, UTC) if last_seen > 0 else None,
        )
        for callee, (calls, last_seen) in sorted(detector.graph.export(service).items())
    ][:1000]
    week = WeekProfile(service=service, timezone=timezone, operations=operations, calls=calls)
    return week.model_dump_json().encode()


def _band(p95: SeasonalProfile, local_day: int, th: Thresholds) -> dict[str, list[float | None]]:
    center, spread = p95.week_estimates(local_day)
    low, high = band(center, spread, th, log=True)
    return {
        "band_low": json_column(low),
        "band_high": json_column(high),
        "flag_above": json_column(flag_above(center, spread, th)),
    }


@dataclass
class ConsumerRecord:
    """What a consumer checkpoints besides the services' baselines, in the same
    transaction: the stream state of its detector, the reports not yet delivered (with
    their trace context), the ids of the last messages applied (a redelivered one, or a
    copy the router sent twice, is skipped), and the services it owns."""

    stream: dict[str, Any]
    outbox: list[tuple[str, dict[str, str]]]
    applied: list[str]
    services: list[str]

    def encode(self) -> bytes:
        return json.dumps({"version": PAYLOAD_VERSION, **asdict(self)}).encode()

    @classmethod
    def decode(cls, payload: bytes) -> ConsumerRecord:
        try:
            data = json.loads(payload)
            if data.pop("version") != PAYLOAD_VERSION:
                raise SnapshotFormatError("consumer record of another version")
            return cls(**data)
        except (ValueError, KeyError, TypeError) as exc:
            raise SnapshotFormatError(f"not a consumer record: {exc!r}") from exc
