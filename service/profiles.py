"""The consumers' week profiles, read from their store: for the dashboards' baseline view
and to complete a report posted without a baseline.

The consumer writes, beside each service's baselines and in the same transaction, a row
``whyslow:profile:SERVICE`` of the ``whyslow_baselines`` table: JSON with, per server
operation, each hour-of-week's usual p95 and p50 (ms) and the windows behind them, and the
time zone its hours are in (baselines/snapshot.py writes it). This module only reads it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import statistics
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from service.contract import AnomalyReport, BaselineRef

PREFIX = "whyslow:profile:"


class ProfileReader:
    def __init__(self, url: str) -> None:
        self._url = url

    def get(self, service: str) -> dict[str, Any] | None:
        """The service's profile; None when there is none (or no store yet)."""
        rows = self._query(
            "SELECT payload, checksum FROM whyslow_baselines WHERE service = {}", PREFIX + service
        )
        if not rows or hashlib.sha256(bytes(rows[0][0])).hexdigest() != rows[0][1]:
            return None
        return json.loads(bytes(rows[0][0]))

    def services(self) -> list[str]:
        """The services that have a profile, by name."""
        rows = self._query(
            "SELECT service FROM whyslow_baselines WHERE service LIKE {} ORDER BY service",
            PREFIX + "%",
        )
        return [row[0].removeprefix(PREFIX) for row in rows]

    def _query(self, query: str, parameter: str) -> list[tuple[Any, ...]]:
        """Rows of a one-parameter query (``{}`` marks it); none without a store."""
        try:
            if self._url.startswith(("postgresql://", "postgres://")):
                with psycopg.connect(self._url, connect_timeout=5) as conn:
                    return conn.execute(query.format("%s"), (parameter,)).fetchall()
            path = Path(self._url.removeprefix("sqlite:///"))
            if not path.is_file():
                return []
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
                return conn.execute(query.format("?"), (parameter,)).fetchall()
        except (sqlite3.Error, psycopg.Error):
            return []


def _usual(values: list[float | None], how: int) -> tuple[float, str] | None:
    """The bucket's value, else the same hour's on other days, else all hours' median."""
    if values[how] is not None:
        return values[how], "hour_of_week"  # type: ignore[return-value]
    same_hour = [v for d in range(7) if (v := values[d * 24 + how % 24]) is not None]
    if same_hour:
        return statistics.median(same_hour), "hour_of_day"
    known = [v for v in values if v is not None]
    return (statistics.median(known), "global") if known else None


def complete(report: AnomalyReport, profile: dict[str, Any] | None) -> AnomalyReport:
    """A report without a baseline gets the one its operation's profile has for the hour
    (of its window, else now), so a hand-posted p95 is judged against the usual one."""
    if report.baseline is not None or profile is None:
        return report
    operation = profile.get("operations", {}).get(report.operation)
    if operation is None:
        return report
    moment = report.window.start if report.window else datetime.now(ZoneInfo("UTC"))
    local = moment.astimezone(ZoneInfo(profile.get("timezone", "UTC")))
    how = local.weekday() * 24 + local.hour
    p95, p50 = _usual(operation["p95"], how), _usual(operation["p50"], how)
    if p95 is None:
        return report
    baseline = BaselineRef(
        hour_of_week=how,
        p50=round(p50[0] if p50 else 0.0, 1),
        p95=round(p95[0], 1),
        samples=int(operation["samples"][how]),
        level=p95[1],  # type: ignore[arg-type]
    )
    return report.model_copy(update={"id": report.anomaly_id, "baseline": baseline})
