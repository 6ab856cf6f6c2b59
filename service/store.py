"""Analyses kept by anomaly id: a repeated report gets the stored answer, and dashboards read
them back. SQLite by default; PostgreSQL (``postgresql://...``) to share one store with the
consumers."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

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
            self._conn.execute(SCHEMA)
            self._conn.execute(FEEDBACK_SCHEMA)

    def get(self, anomaly_id: str) -> Analysis | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT analysis FROM whyslow_analyses WHERE anomaly_id = {self._mark}",
                (anomaly_id,),
            ).fetchone()
        return None if row is None else Analysis.model_validate_json(row[0])

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
        return cursor.rowcount == 1

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
    ) -> tuple[list[tuple[AnomalyReport, Analysis]], int]:
        """(report, analysis) of the anomalies matching every given filter, newest first,
        and how many match in all."""
        clauses, params = [], []
        for column, value in (
            ("service", service),
            ("probable_cause", cause),
            ("severity", severity),
        ):
            if value is not None:
                clauses.append(f"{column} = {self._mark}")
                params.append(value)
        if since is not None:
            clauses.append(f"created_at >= {self._mark}")
            params.append(since.astimezone(UTC).isoformat())
        if until is not None:
            clauses.append(f"created_at < {self._mark}")
            params.append(until.astimezone(UTC).isoformat())
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            total = self._conn.execute(
                f"SELECT count(*) FROM whyslow_analyses {where}", params
            ).fetchone()[0]
            rows = self._conn.execute(
                f"SELECT report, analysis FROM whyslow_analyses {where} "
                f"ORDER BY created_at DESC, anomaly_id LIMIT {self._mark} OFFSET {self._mark}",
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

    def close(self) -> None:
        with self._lock:
            self._conn.close()
