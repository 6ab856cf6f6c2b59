"""A synthetic week of telemetry with known incidents, for the demo, tests and benches.

Three services with business-hours traffic: ``checkout`` (CPU-bound, calls ``payments``),
``exchange-api`` (I/O-bound, calls ``fx-provider``), ``search`` (no calls). Two incidents
are injected: checkout saturates its CPU on Thursday afternoon, and fx-provider slows
down on Friday morning, so exchange-api is slow with *low* CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

WEEK = timedelta(days=7)


@dataclass(frozen=True)
class Incident:
    service: str
    cause: str
    start: datetime
    end: datetime

    def covers(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


@dataclass(frozen=True)
class ServiceProfile:
    name: str
    operation: str
    local_ms: float
    cpu_base: float
    peer: str | None = None
    peer_operation: str = ""
    peer_ms: float = 0.0


SERVICES = (
    ServiceProfile("checkout", "POST /checkout", 80.0, 25.0, "payments", "POST /charge", 40.0),
    ServiceProfile("exchange-api", "GET /rates", 15.0, 20.0, "fx-provider", "GET /quote", 50.0),
    ServiceProfile("search", "GET /search", 120.0, 30.0),
)
CATALOGUE = {
    "checkout": "checkout prices and renders carts in process: it is CPU-bound",
    "exchange-api": "exchange-api is I/O-bound on fx-provider",
}
"""The service catalogue of this world (WHYSLOW_CATALOGUE), as its operators would write it."""


def last_full_week_start(now: datetime) -> datetime:
    """Monday 00:00 UTC of a week that ended at least a day ago, so all data is in the past."""
    day = (now - timedelta(days=8)).date()
    monday = day - timedelta(days=day.weekday())
    return datetime(monday.year, monday.month, monday.day, tzinfo=UTC)


def demo_incidents(week_start: datetime) -> list[Incident]:
    cpu = week_start + timedelta(days=3, hours=14)
    downstream = week_start + timedelta(days=4, hours=10)
    return [
        Incident("checkout", "local_cpu_saturation", cpu, cpu + timedelta(minutes=20)),
        Incident(
            "exchange-api", "downstream_dependency", downstream, downstream + timedelta(minutes=20)
        ),
    ]


def load(moment: datetime) -> float:
    """Relative traffic: weekday business hours busy, evenings half, nights and weekends low."""
    if moment.weekday() >= 5:
        return 0.35
    if 9 <= moment.hour < 18:
        return 1.0
    return 0.5 if 7 <= moment.hour < 22 else 0.2


def telemetry(
    week_start: datetime,
    incidents: list[Incident],
    seed: int = 7,
    peak_per_minute: int = 12,
    minutes: int = 7 * 24 * 60,
) -> Iterator[list[dict[str, object]]]:
    """Yield one list of JSON-ready events per minute: spans of every service and its
    downstream calls, and a CPU sample per service."""
    rng = np.random.default_rng(seed)
    for minute in range(minutes):
        moment = week_start + timedelta(minutes=minute)
        base_ts = moment.timestamp()
        busy = load(moment)
        events: list[dict[str, object]] = []
        for svc in SERVICES:
            hit = next((i for i in incidents if i.service == svc.name and i.covers(moment)), None)
            cause = hit.cause if hit else None
            n = max(3, round(peak_per_minute * busy * rng.uniform(0.85, 1.15)))
            ts = base_ts + np.sort(rng.uniform(0, 60, n))
            local = svc.local_ms * (1 + 0.4 * busy) * rng.lognormal(0, 0.25, n)
            cpu = svc.cpu_base + 20 * busy + rng.normal(0, 3)
            if cause == "local_cpu_saturation":
                local *= 5
                cpu = 97 + rng.normal(0, 1)
            calls = np.zeros(n)
            if svc.peer:
                calls = svc.peer_ms * rng.lognormal(0, 0.2, n)
                if cause == "downstream_dependency":
                    calls *= 8
                    cpu = 12 + rng.normal(0, 2)
            traces = rng.integers(0, 2**63, (n, 2))
            for i in range(n):
                trace = f"{traces[i, 0]:016x}{traces[i, 1]:016x}"
                events.append(
                    {
                        "service": svc.name,
                        "operation": svc.operation,
                        "kind": "server",
                        "duration_ms": round(float(local[i] + calls[i]), 2),
                        "timestamp": round(float(ts[i]), 3),
                        "trace_id": trace,
                    }
                )
                if svc.peer:
                    span: dict[str, object] = {
                        "service": svc.name,
                        "operation": svc.peer_operation,
                        "kind": "client",
                        "peer_service": svc.peer,
                        "duration_ms": round(float(calls[i]), 2),
                        "timestamp": round(float(ts[i]), 3),
                        "trace_id": trace,
                    }
                    if cause == "downstream_dependency" and i % 4 == 0:
                        span["status"] = "error"
                        span["attributes"] = {
                            "exception.type": "ReadTimeout",
                            "exception.message": f"{svc.peer} {svc.peer_operation} timed out",
                        }
                    events.append(span)
            events.append(
                {
                    "service": svc.name,
                    "metric": "cpu_pct",
                    "value": round(float(np.clip(cpu, 0, 100)), 1),
                    "timestamp": base_ts + 30,
                }
            )
        yield events
