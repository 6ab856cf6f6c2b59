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

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM whyslow_analyses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
