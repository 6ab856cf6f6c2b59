"""The notifications table: one row per (incident, event, target), in the analyses' store.

Exactly once across restarts and replicas comes from the key, not from memory: a row is
inserted if absent, so the second report of an incident, the same report after a restart,
or another replica's insert of it adds nothing. Delivery is claimed the same way: a sender
moves a due row's next attempt past a lease with a compare-and-set on the value it read,
and only the sender whose update matched posts it; a sender that dies mid-post leaves the
row due again once the lease ends. Times are epoch seconds (one comparable type in SQLite
and PostgreSQL). A target whose receiver names what a post made (Grafana's annotation id)
keeps that name in the row's ``reference``, written with its delivery."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from service.store import AnalysisStore

EventKind = Literal["opened", "resolved"]

SCHEMA = """CREATE TABLE IF NOT EXISTS whyslow_notifications (
    incident_id TEXT NOT NULL,
    event TEXT NOT NULL,
    target TEXT NOT NULL,
    anomaly_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    delivered_at DOUBLE PRECISION,
    resend_seconds DOUBLE PRECISION,
    resend_until DOUBLE PRECISION,
    last_error TEXT,
    reference TEXT,
    PRIMARY KEY (incident_id, event, target)
)"""
DUE_INDEX = (
    "CREATE INDEX IF NOT EXISTS whyslow_notifications_due "
    "ON whyslow_notifications (next_attempt_at)"
)
REFERENCE_COLUMN = "ALTER TABLE whyslow_notifications ADD COLUMN reference TEXT"
"""For a table made before the column was."""
COLUMNS = "incident_id, event, target, anomaly_id, payload, attempts, next_attempt_at, delivered_at"


@dataclass(frozen=True)
class Row:
    incident_id: str
    event: EventKind
    target: str
    anomaly_id: str
    payload: str
    attempts: int
    next_attempt_at: float
    delivered_at: float | None
    """Set on a row due for a re-send."""


class Outbox(AnalysisStore):
    """The analyses store's database, over a connection of its own opened as that store
    opens its (same URL, same SQLite pragmas, autocommit): the sender thread's queries
    never wait on the lock of the request path's connection. It reads the analyses table
    too (``record``), for the report behind a resolved incident."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        with self._lock:
            self._conn.execute(SCHEMA)
            self._conn.execute(DUE_INDEX)
            self._add_reference_column()

    def _add_reference_column(self) -> None:
        """A table made before ``reference`` was gains it (a replica starting at the same
        moment may add it first: then its presence is the outcome)."""
        if self._has_reference_column():
            return
        try:
            self._conn.execute(REFERENCE_COLUMN)
        except Exception:
            if not self._has_reference_column():
                raise

    def _has_reference_column(self) -> bool:
        cursor = self._conn.execute("SELECT * FROM whyslow_notifications LIMIT 0")
        return "reference" in {column[0] for column in cursor.description}

    def add(
        self,
        incident_id: str,
        event: EventKind,
        target: str,
        anomaly_id: str,
        payload: str,
        now: float,
        resend_seconds: float | None = None,
        resend_until: float | None = None,
    ) -> bool:
        """Insert the row if absent; True only for the insert that created it."""
        m = self._mark
        with self._lock:
            cursor = self._conn.execute(
                "INSERT INTO whyslow_notifications (incident_id, event, target, anomaly_id, "
                "payload, created_at, next_attempt_at, resend_seconds, resend_until) VALUES "
                f"({m}, {m}, {m}, {m}, {m}, {m}, {m}, {m}, {m}) "
                "ON CONFLICT (incident_id, event, target) DO NOTHING",
                (
                    incident_id,
                    event,
                    target,
                    anomaly_id,
                    payload,
                    now,
                    now,
                    resend_seconds,
                    resend_until,
                ),
            )
        return cursor.rowcount == 1

    def opened(self, incident_id: str) -> dict[str, str]:
        """The payload of the incident's 'opened' row, by target."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT target, payload FROM whyslow_notifications WHERE incident_id = "
                f"{self._mark} AND event = 'opened'",
                (incident_id,),
            ).fetchall()
        return {target: payload for target, payload in rows}

    def keep_resending(self, incident_id: str, until: float) -> None:
        """Re-sends of the incident's 'opened' rows go on at least until ``until`` (a row
        whose re-sends were stopped stays stopped)."""
        m = self._mark
        with self._lock:
            self._conn.execute(
                f"UPDATE whyslow_notifications SET resend_until = {m} WHERE incident_id = {m} "
                f"AND event = 'opened' AND resend_until < {m}",
                (until, incident_id, until),
            )

    def stop_resending(self, incident_id: str) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE whyslow_notifications SET resend_until = NULL WHERE incident_id = "
                f"{self._mark} AND event = 'opened'",
                (incident_id,),
            )

    def due(self, now: float, targets: Iterable[str], limit: int) -> list[Row]:
        """Rows to post now, oldest due first: undelivered, or delivered and due for a
        re-send. A 'resolved' row waits for its incident's 'opened' row to the same target,
        so a receiver never hears of the end before the start."""
        names = list(targets)
        if not names:
            return []
        m = self._mark
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {COLUMNS} FROM whyslow_notifications n WHERE next_attempt_at <= {m} "
                f"AND (delivered_at IS NULL OR resend_until > {m}) "
                f"AND target IN ({', '.join([m] * len(names))}) "
                "AND NOT (event = 'resolved' AND EXISTS (SELECT 1 FROM whyslow_notifications o "
                "WHERE o.incident_id = n.incident_id AND o.target = n.target "
                "AND o.event = 'opened' AND o.delivered_at IS NULL)) "
                f"ORDER BY next_attempt_at LIMIT {m}",
                (now, now, *names, limit),
            ).fetchall()
        return [Row(*row) for row in rows]

    def claim(self, row: Row, until: float) -> bool:
        """Take the row until ``until``; False if another sender changed it since it was
        read (it claimed it, or delivered it)."""
        m = self._mark
        with self._lock:
            cursor = self._conn.execute(
                f"UPDATE whyslow_notifications SET next_attempt_at = {m} WHERE incident_id = "
                f"{m} AND event = {m} AND target = {m} AND next_attempt_at = {m}",
                (until, row.incident_id, row.event, row.target, row.next_attempt_at),
            )
        return cursor.rowcount == 1

    def delivered(self, row: Row, now: float, reference: str | None = None) -> None:
        """Posted: done, or (a re-sent row) due again ``resend_seconds`` from now.
        ``reference``: what the receiver named the post's outcome, kept with the row."""
        m = self._mark
        with self._lock:
            self._conn.execute(
                f"UPDATE whyslow_notifications SET delivered_at = COALESCE(delivered_at, {m}), "
                f"attempts = 0, last_error = NULL, next_attempt_at = {m} + "
                f"COALESCE(resend_seconds, 0), reference = COALESCE({m}, reference) "
                f"WHERE incident_id = {m} AND event = {m} AND target = {m}",
                (now, now, reference, row.incident_id, row.event, row.target),
            )

    def reference(self, incident_id: str, target: str) -> str | None:
        """The reference kept with the incident's 'opened' row to ``target``, if any."""
        m = self._mark
        with self._lock:
            row = self._conn.execute(
                f"SELECT reference FROM whyslow_notifications WHERE incident_id = {m} "
                f"AND event = 'opened' AND target = {m}",
                (incident_id, target),
            ).fetchone()
        return str(row[0]) if row is not None and row[0] is not None else None

    def failed(self, row: Row, next_attempt_at: float, error: str) -> None:
        m = self._mark
        with self._lock:
            self._conn.execute(
                f"UPDATE whyslow_notifications SET attempts = attempts + 1, next_attempt_at = "
                f"{m}, last_error = {m} WHERE incident_id = {m} AND event = {m} AND target = {m}",
                (next_attempt_at, error[:1000], row.incident_id, row.event, row.target),
            )

    def pending(self, targets: Iterable[str]) -> int:
        """Rows never delivered yet, to these targets."""
        names = list(targets)
        if not names:
            return 0
        with self._lock:
            row = self._conn.execute(
                "SELECT count(*) FROM whyslow_notifications WHERE delivered_at IS NULL AND "
                f"target IN ({', '.join([self._mark] * len(names))})",
                names,
            ).fetchone()
        return int(row[0])
