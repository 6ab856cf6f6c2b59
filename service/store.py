"""Analyses kept by anomaly id: a repeated report gets the stored answer, and dashboards read
them back. SQLite by default; PostgreSQL (``postgresql://...``) to share one store with the
consumers.

Beside them, each incident's state (open, acknowledged, resolved) and which incident each
anomaly belongs to: reports of one incident share ``incident.id``, a report without one is
its own incident. The tables are created when missing, so a store written before they
existed gains them at start-up, and its anomalies are filed under their incidents then.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import psycopg
from pydantic import BaseModel

from service.contract import Analysis, AnomalyReport

SCHEMA = """CREATE TABLE IF NOT EXISTS whyslow_analyses (
    anomaly_id TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    operation TEXT NOT NULL,
    probable_cause TEXT NOT NULL,
    severity TEXT NOT NULL,
    created_at TEXT NOT NULL,
    report TEXT NOT NULL,
    analysis TEXT NOT NULL
)"""


FEEDBACK_SCHEMA = """CREATE TABLE IF NOT EXISTS whyslow_feedback (
    anomaly_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    verdict TEXT NOT NULL,
    right_cause TEXT,
    note TEXT
)"""


INCIDENTS_SCHEMA = """CREATE TABLE IF NOT EXISTS whyslow_incidents (
    incident_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    source TEXT NOT NULL,
    test INTEGER NOT NULL DEFAULT 0,
    opened_at TEXT NOT NULL,
    last_report_at TEXT NOT NULL,
    acknowledged_at TEXT,
    resolved_at TEXT,
    resolved_by TEXT,
    latest_analysis TEXT
)"""


MEMBERS_SCHEMA = """CREATE TABLE IF NOT EXISTS whyslow_incident_anomalies (
    anomaly_id TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL,
    test INTEGER NOT NULL DEFAULT 0,
    received_at TEXT NOT NULL
)"""


INDEXES = (
    "CREATE INDEX IF NOT EXISTS whyslow_incident_anomalies_incident "
    "ON whyslow_incident_anomalies (incident_id)",
    "CREATE INDEX IF NOT EXISTS whyslow_incidents_open ON whyslow_incidents (state, source)",
)


IncidentState = Literal["open", "acknowledged", "resolved"]
Source = Literal["consumer", "alert", "manual"]
"""Where an incident's reports come from: the consumers (they carry ``incident``), an
alert (Alertmanager or Grafana), or a person posting a report without one."""
ResolvedBy = Literal["person", "alert", "quiet"]
"""Who resolved it: a person (POST .../resolve), the alert that raised it, or no report of
it for WHYSLOW_INCIDENT_RESOLVE_AFTER_SECONDS."""


class IncidentStatus(BaseModel):
    """An anomaly's incident and where it stands."""

    incident_id: str
    state: IncidentState
    source: Source
    test: bool = False
    opened_at: datetime
    last_report_at: datetime
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    resolved_by: ResolvedBy | None = None


def incident_id(report: AnomalyReport) -> str:
    """The incident a report belongs to: its ``incident.id``, else its own anomaly id."""
    return report.incident.id if report.incident is not None else report.anomaly_id


INCIDENT_COLUMNS = (
    "i.incident_id, i.state, i.source, i.test, i.opened_at, i.last_report_at, "
    "i.acknowledged_at, i.resolved_at, i.resolved_by"
)


def _status(row: tuple[Any, ...]) -> IncidentStatus:
    """An IncidentStatus from the INCIDENT_COLUMNS of a row."""
    names = [column.strip().removeprefix("i.") for column in INCIDENT_COLUMNS.split(",")]
    return IncidentStatus.model_validate(dict(zip(names, row, strict=True)))


def _now() -> str:
    """Every timestamp of the store in one format, so that text order is time order."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class AnalysisStore:
    """One connection, used under a lock (requests run in a thread pool)."""

    def __init__(self, url: str) -> None:
        self._lock = threading.Lock()
        self._conn: Any
        if url.startswith(("postgresql://", "postgres://")):
            self._conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
            self._mark = "%s"
        else:
            path = Path(url.removeprefix("sqlite:///"))
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA busy_timeout=30000")
            self._mark = "?"
        with self._lock:
            for statement in (SCHEMA, FEEDBACK_SCHEMA, INCIDENTS_SCHEMA, MEMBERS_SCHEMA):
                self._conn.execute(statement)
            for statement in INDEXES:
                self._conn.execute(statement)
            self._file_unfiled()

    def get(self, anomaly_id: str) -> Analysis | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT analysis FROM whyslow_analyses WHERE anomaly_id = {self._mark}",
                (anomaly_id,),
            ).fetchone()
        return None if row is None else Analysis.model_validate_json(row[0])

    def upgrade(self, analysis: Analysis) -> bool:
        """Replace a stored rule-engine answer by a model's; False if the stored answer is
        not the rule engine's (or there is none)."""
        m = self._mark
        with self._lock:
            cursor = self._conn.execute(
                f"UPDATE whyslow_analyses SET probable_cause = {m}, severity = {m}, "
                f"analysis = {m} WHERE anomaly_id = {m} AND analysis LIKE {m}",
                (
                    analysis.probable_cause.value,
                    analysis.severity.value,
                    analysis.model_dump_json(),
                    analysis.anomaly_id,
                    '%"grounding":"rules"%',
                ),
            )
            return cursor.rowcount == 1

    def put(self, report: AnomalyReport, analysis: Analysis) -> bool:
        """Store an analysis; False (and nothing written) if its id is already there."""
        m = self._mark
        with self._lock:
            cursor = self._conn.execute(
                "INSERT INTO whyslow_analyses (anomaly_id, service, operation, probable_cause, "
                f"severity, created_at, report, analysis) VALUES ({m}, {m}, {m}, {m}, {m}, {m}, "
                f"{m}, {m}) ON CONFLICT (anomaly_id) DO NOTHING",
                (
                    analysis.anomaly_id,
                    analysis.service,
                    analysis.operation,
                    analysis.probable_cause.value,
                    analysis.severity.value,
                    datetime.now(UTC).isoformat(),
                    report.model_dump_json(),
                    analysis.model_dump_json(),
                ),
            )
            stored = cursor.rowcount == 1
            if stored:  # filed under its incident, unless its route filed it first
                source: Source = "consumer" if report.incident is not None else "manual"
                self._file(report.anomaly_id, incident_id(report), source, False, _now())
                self._note(incident_id(report), analysis)
        return stored

    def record(self, anomaly_id: str) -> tuple[AnomalyReport, Analysis] | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT report, analysis FROM whyslow_analyses WHERE anomaly_id = {self._mark}",
                (anomaly_id,),
            ).fetchone()
        if row is None:
            return None
        return AnomalyReport.model_validate_json(row[0]), Analysis.model_validate_json(row[1])

    def search(
        self,
        service: str | None = None,
        cause: str | None = None,
        severity: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
        state: IncidentState | None = None,
        include_tests: bool = False,
    ) -> tuple[list[tuple[AnomalyReport, Analysis]], int]:
        """(report, analysis) of the anomalies matching every given filter, newest first,
        and how many match in all. ``state`` is their incident's; test anomalies are left
        out unless ``include_tests``."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("a.service", service),
            ("a.probable_cause", cause),
            ("a.severity", severity),
            ("COALESCE(i.state, 'open')", state),
        ):
            if value is not None:
                clauses.append(f"{column} = {self._mark}")
                params.append(value)
        if since is not None:
            clauses.append(f"a.created_at >= {self._mark}")
            params.append(since.astimezone(UTC).isoformat())
        if until is not None:
            clauses.append(f"a.created_at < {self._mark}")
            params.append(until.astimezone(UTC).isoformat())
        if not include_tests:
            clauses.append("COALESCE(m.test, 0) = 0")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        joined = (
            "whyslow_analyses a LEFT JOIN whyslow_incident_anomalies m "
            "ON m.anomaly_id = a.anomaly_id "
            "LEFT JOIN whyslow_incidents i ON i.incident_id = m.incident_id"
        )
        with self._lock:
            total = self._conn.execute(f"SELECT count(*) FROM {joined} {where}", params).fetchone()[
                0
            ]
            rows = self._conn.execute(
                f"SELECT a.report, a.analysis FROM {joined} {where} ORDER BY a.created_at DESC, "
                f"a.anomaly_id LIMIT {self._mark} OFFSET {self._mark}",
                [*params, limit, offset],
            ).fetchall()
        records = [
            (AnomalyReport.model_validate_json(r), Analysis.model_validate_json(a)) for r, a in rows
        ]
        return records, int(total)

    def add_feedback(
        self, anomaly_id: str, verdict: str, right_cause: str | None, note: str | None
    ) -> None:
        m = self._mark
        with self._lock:
            self._conn.execute(
                "INSERT INTO whyslow_feedback (anomaly_id, created_at, verdict, right_cause, "
                f"note) VALUES ({m}, {m}, {m}, {m}, {m})",
                (anomaly_id, datetime.now(UTC).isoformat(), verdict, right_cause, note),
            )

    def feedback(self) -> list[tuple[AnomalyReport, Analysis, str, str | None]]:
        """(report, analysis, verdict, right cause) of every feedback, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT a.report, a.analysis, f.verdict, f.right_cause FROM whyslow_feedback f "
                "JOIN whyslow_analyses a ON a.anomaly_id = f.anomaly_id ORDER BY f.created_at"
            ).fetchall()
        return [
            (AnomalyReport.model_validate_json(r), Analysis.model_validate_json(a), v, c)
            for r, a, v, c in rows
        ]

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM whyslow_analyses").fetchone()[0])

    # ------------------------------------------------------------------ incident state

    def track(self, report: AnomalyReport, source: Source, test: bool = False) -> bool:
        """File a report under its incident as it arrives, before it is analysed (so a test
        anomaly is never listed as a real one): True if its anomaly is new. A new anomaly
        is a new report of its incident: it reopens a resolved incident; a repeated id (a
        retried POST, a re-sent alert) changes nothing."""
        with self._lock:
            return self._file(report.anomaly_id, incident_id(report), source, test, _now())

    def note_analysis(self, report: AnomalyReport, analysis: Analysis) -> None:
        """Keep the incident's latest analysis, the model's or the rule engine's: what a
        notification of its resolution says."""
        with self._lock:
            self._note(incident_id(report), analysis)

    def status(self, anomaly_id: str) -> IncidentStatus | None:
        """The incident of an anomaly and its state; None for an id never received."""
        return self.statuses([anomaly_id]).get(anomaly_id)

    def statuses(self, anomaly_ids: list[str]) -> dict[str, IncidentStatus]:
        """By anomaly id, the incident of each anomaly received."""
        if not anomaly_ids:
            return {}
        marks = ", ".join([self._mark] * len(anomaly_ids))
        with self._lock:
            rows = self._conn.execute(
                f"SELECT m.anomaly_id, m.test, {INCIDENT_COLUMNS} FROM whyslow_incident_anomalies"
                " m JOIN whyslow_incidents i ON i.incident_id = m.incident_id "
                f"WHERE m.anomaly_id IN ({marks})",
                anomaly_ids,
            ).fetchall()
        return {row[0]: _status(row[2:]).model_copy(update={"test": bool(row[1])}) for row in rows}

    def is_test(self, report: AnomalyReport) -> bool:
        """Whether the report was posted as a test (``?test=true``): analysed, never
        notified."""
        status = self.status(report.anomaly_id)
        return status is not None and status.test

    def incident(self, incident_id: str) -> tuple[IncidentStatus, Analysis | None] | None:
        """An incident's state and its latest analysis (None before its first answer)."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {INCIDENT_COLUMNS}, i.latest_analysis FROM whyslow_incidents i "
                f"WHERE i.incident_id = {self._mark}",
                (incident_id,),
            ).fetchone()
        if row is None:
            return None
        latest = None if row[-1] is None else Analysis.model_validate_json(row[-1])
        return _status(row[:-1]), latest

    def acknowledge(self, incident_id: str) -> bool:
        """Open -> acknowledged; False when it was not open (already acknowledged, or
        resolved: there is nothing to acknowledge then)."""
        m = self._mark
        with self._lock:
            cursor = self._conn.execute(
                f"UPDATE whyslow_incidents SET state = 'acknowledged', acknowledged_at = {m} "
                f"WHERE incident_id = {m} AND state = 'open'",
                (_now(), incident_id),
            )
        return cursor.rowcount == 1

    def resolve(
        self, incident_id: str, by: ResolvedBy, quiet_since: datetime | None = None
    ) -> bool:
        """Resolve an incident; True if this call did (False: unknown, already resolved,
        or, with ``quiet_since``, reported on since then). Each resolution is counted once
        however many processes share the store, so it is announced once."""
        m = self._mark
        quiet = "" if quiet_since is None else f" AND last_report_at < {m}"
        params = [_now(), by, incident_id]
        if quiet_since is not None:
            params.append(_stamp(quiet_since))
        with self._lock:
            cursor = self._conn.execute(
                f"UPDATE whyslow_incidents SET state = 'resolved', resolved_at = {m}, "
                f"resolved_by = {m} WHERE incident_id = {m} AND state != 'resolved'{quiet}",
                params,
            )
        return cursor.rowcount == 1

    def quiet_incidents(self, since: datetime) -> list[tuple[str, datetime]]:
        """The consumers' unresolved incidents with no report since ``since``, each with its
        last report's time, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT incident_id, last_report_at FROM whyslow_incidents WHERE state != "
                f"'resolved' AND source = 'consumer' AND last_report_at < {self._mark} "
                "ORDER BY last_report_at",
                (_stamp(since),),
            ).fetchall()
        return [(row[0], datetime.fromisoformat(row[1])) for row in rows]

    def _file(self, anomaly_id: str, incident: str, source: Source, test: bool, at: str) -> bool:
        """Called under the lock: the anomaly's row, and its incident's (created, or told
        of a new report: the latest time kept, a resolved one opened again, and no longer
        a test once a real report joins it)."""
        m = self._mark
        cursor = self._conn.execute(
            "INSERT INTO whyslow_incident_anomalies (anomaly_id, incident_id, test, "
            f"received_at) VALUES ({m}, {m}, {m}, {m}) ON CONFLICT (anomaly_id) DO NOTHING",
            (anomaly_id, incident, int(test), at),
        )
        if cursor.rowcount != 1:
            return False
        i = "whyslow_incidents"
        reopen = f"{i}.state = 'resolved' AND {i}.resolved_at < excluded.last_report_at"
        self._conn.execute(
            f"INSERT INTO {i} (incident_id, state, source, test, opened_at, last_report_at) "
            f"VALUES ({m}, 'open', {m}, {m}, {m}, {m}) ON CONFLICT (incident_id) DO UPDATE SET "
            f"last_report_at = CASE WHEN excluded.last_report_at > {i}.last_report_at "
            f"THEN excluded.last_report_at ELSE {i}.last_report_at END, "
            f"test = CASE WHEN excluded.test = 0 THEN 0 ELSE {i}.test END, "
            f"state = CASE WHEN {reopen} THEN 'open' ELSE {i}.state END, "
            f"acknowledged_at = CASE WHEN {reopen} THEN NULL ELSE {i}.acknowledged_at END, "
            f"resolved_by = CASE WHEN {reopen} THEN NULL ELSE {i}.resolved_by END, "
            f"resolved_at = CASE WHEN {reopen} THEN NULL ELSE {i}.resolved_at END",
            (incident, source, int(test), at, at),
        )
        return True

    def _note(self, incident: str, analysis: Analysis) -> None:
        self._conn.execute(
            f"UPDATE whyslow_incidents SET latest_analysis = {self._mark} "
            f"WHERE incident_id = {self._mark}",
            (analysis.model_dump_json(), incident),
        )

    def _file_unfiled(self) -> None:
        """Called under the lock at start-up: anomalies stored before incident states
        existed are filed under their incidents, at the time they were analysed (so the
        consumers' old incidents are quiet, and resolve)."""
        while True:
            rows = self._conn.execute(
                "SELECT a.anomaly_id, a.created_at, a.report FROM whyslow_analyses a WHERE NOT "
                "EXISTS (SELECT 1 FROM whyslow_incident_anomalies m WHERE m.anomaly_id = "
                "a.anomaly_id) ORDER BY a.created_at LIMIT 500"
            ).fetchall()
            for anomaly_id, created_at, report in rows:
                incident = json.loads(report).get("incident") or {}
                source: Source = "consumer" if incident.get("id") else "manual"
                self._file(anomaly_id, incident.get("id") or anomaly_id, source, False, created_at)
            if len(rows) < 500:
                return

    def close(self) -> None:
        with self._lock:
            self._conn.close()
