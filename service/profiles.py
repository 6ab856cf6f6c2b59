"""The consumers' week profiles, read from their store: for the dashboards' baseline view
and to complete a report posted without a baseline.

The consumer writes, beside each service's baselines and in the same transaction, a row
``whyslow:profile:SERVICE`` of the ``whyslow_baselines`` table: the contract's WeekProfile
as JSON (baselines/snapshot.py writes it). This module only reads it; a row it cannot read
(another version, a shape the contract refuses) is no profile, logged once per row.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import statistics
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from pydantic import ValidationError

from service.contract import (
    PROFILE_KEY_PREFIX,
    AnomalyReport,
    BaselineLevel,
    BaselineRef,
    WeekProfile,
)

log = logging.getLogger(__name__)


class ProfileReader:
    def __init__(self, url: str) -> None:
        self._url = url
        self._refused: dict[str, str] = {}
        """Per service, the checksum of the row last refused: each bad row is logged once,
        not at every request that reads it."""

    def get(self, service: str) -> WeekProfile | None:
        """The service's profile; None when there is none (or no store yet), or when its row
        is not a profile this service reads."""
        rows = self._query(
            "SELECT payload, checksum FROM whyslow_baselines WHERE service = {}",
            PROFILE_KEY_PREFIX + service,
        )
        if not rows:
            return None
        payload, checksum = bytes(rows[0][0]), rows[0][1]
        if hashlib.sha256(payload).hexdigest() != checksum:
            return None
        try:
            return WeekProfile.model_validate_json(payload)
        except ValidationError as exc:
            if self._refused.get(service) != checksum:
                self._refused[service] = checksum
                first = exc.errors(include_url=False)[0]
                where = ".".join(str(part) for part in first["loc"])
                log.warning(
                    "profile of %r ignored until the consumer rewrites it: %d problems, "
                    "first at %s: %s",
                    service,
                    exc.error_count(),
                    where or "(row)",
                    first["msg"],
                )
            return None

    def services(self) -> list[str]:
        """The services that have a profile, by name."""
        rows = self._query(
            "SELECT service FROM whyslow_baselines WHERE service LIKE {} ORDER BY service",
            PROFILE_KEY_PREFIX + "%",
        )
        return [row[0].removeprefix(PROFILE_KEY_PREFIX) for row in rows]

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


def _usual(values: list[float | None], how: int) -> tuple[float, BaselineLevel] | None:
    """The bucket's value, else the same hour's on other days, else all hours' median."""
    if (value := values[how]) is not None:
        return value, "hour_of_week"
    same_hour = [v for d in range(7) if (v := values[d * 24 + how % 24]) is not None]
    if same_hour:
        return statistics.median(same_hour), "hour_of_day"
    known = [v for v in values if v is not None]
    return (statistics.median(known), "global") if known else None


def complete(report: AnomalyReport, profile: WeekProfile | None) -> AnomalyReport:
    """A report without a baseline gets the one its operation's profile has for the hour
    (of its window, else now), so a hand-posted p95 is judged against the usual one."""
    if report.baseline is not None or profile is None:
        return report
    operation = profile.operations.get(report.operation)
    if operation is None:
        return report
    moment = report.window.start if report.window else datetime.now(ZoneInfo("UTC"))
    local = moment.astimezone(ZoneInfo(profile.timezone))
    how = local.weekday() * 24 + local.hour
    p95, p50 = _usual(operation.p95, how), _usual(operation.p50, how)
    if p95 is None:
        return report
    baseline = BaselineRef(
        hour_of_week=how,
        p50=round(p50[0] if p50 else 0.0, 1),
        p95=round(p95[0], 1),
        samples=operation.samples[how],
        level=p95[1],
    )
    return report.model_copy(update={"id": report.anomaly_id, "baseline": baseline})
