"""Durable, versioned checkpoints of the consumer's baseline state, so baselines survive restarts.

The detector serialises its own state; this module only keeps one opaque byte payload per
service and guarantees that what comes back is exactly what was saved, in the format the
caller expects. A week-seasonal baseline takes a week of traffic to learn, so losing or
silently corrupting it is expensive: every row carries a sha256 checksum and the format
version it was written with, a save replaces all given services in one transaction (a crash
mid-save leaves the previous snapshot whole), and a row that does not verify is refused
with an error rather than dropped, reset or returned.

Two backends share one table layout and all verification logic: SQLite for a single
consumer on one machine (the default, next to the service's data) and PostgreSQL for
consumers that run elsewhere (containers, Kubernetes) and need a shared, managed store.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

import psycopg
import psycopg.conninfo

FORMAT_VERSION = 1
"""Version of the payload format this build writes and reads; a row with another version
is refused on load, so an upgrade or a rollback never feeds a detector state it misreads."""

TABLE = "whyslow_baselines"

_SQLITE_PREFIX = "sqlite:///"
_ACCEPTED_FORMS = (
    "sqlite:///path/to/baselines.db (relative; four slashes for an absolute path), "
    "a plain filesystem path, or postgresql://user@host:5432/dbname (also postgres://)"
)


class StoreError(RuntimeError):
    """Anything that went wrong with the baseline store; the one type a caller must catch."""


class StoreUnavailable(StoreError):
    """The store did not answer or could not write (server down, connection lost, disk
    full): transient, so the consumer keeps its messages unacknowledged and tries again."""


class SnapshotCorrupt(StoreError):
    """A stored row does not verify (checksum mismatch, unreadable payload).

    The row is left as it is, so a person can inspect it; the caller decides whether to
    start that service from scratch.
    """

    def __init__(self, service: str, reason: str) -> None:
        self.service = service
        self.reason = reason
        super().__init__(
            f"baseline snapshot of service {service!r} is corrupt: {reason}; refusing to "
            f"load it (the row was left as it is in {TABLE})"
        )


class SnapshotVersionError(StoreError):
    """A stored row was written with another payload format version.

    Refused rather than reset: the row may well be valid for another build (after a
    rollback, or before a migration), and overwriting it would throw away a learned week.
    """

    def __init__(self, service: str, found: object, expected: int) -> None:
        self.service = service
        self.found = found
        self.expected = expected
        super().__init__(
            f"baseline snapshot of service {service!r} was written with format version "
            f"{found!r}, but this build reads format version {expected}; refusing to load "
            f"it. The snapshot was NOT reset: run a build that reads version {found!r}, or "
            f"delete the row from {TABLE} to start this service's baseline from scratch"
        )


class BaselineStore(Protocol):
    """Where the consumer checkpoints its baseline state: one opaque payload per service."""

    def save(self, payloads: Mapping[str, bytes], format_version: int = FORMAT_VERSION) -> None:
        """Upsert the payloads of all given services in one transaction: all or nothing."""
        ...

    def load(
        self, services: Iterable[str] | None = None, format_version: int = FORMAT_VERSION
    ) -> dict[str, bytes]:
        """Verified payloads of all stored services (or the given ones that are stored)."""
        ...

    def services(self) -> list[str]:
        """Names of the stored services, sorted."""
        ...

    def close(self) -> None:
        """Release the connection; idempotent."""
        ...


def default_store_url(data_dir: Path) -> str:
    """The SQLite file in the data directory: one consumer on one machine needs no server."""
    return f"{_SQLITE_PREFIX}{data_dir / 'baselines.db'}"


def open_store(url: str) -> BaselineStore:
    """The store a URL names: ``sqlite:///path``, a plain path, or ``postgresql://...``.

    SQLite URLs follow the SQLAlchemy convention: what follows ``sqlite:///`` is the path,
    so ``sqlite:///data/b.db`` is relative and ``sqlite:////var/lib/b.db`` absolute.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        # "sqlite:x.db" or "postgresql:..." are mistyped URLs, not file names; a single
        # letter before the colon is a Windows drive, which is a path.
        if not url or re.match(r"[A-Za-z][A-Za-z0-9+.-]+:", url):
            raise ValueError(
                f"baseline store URL {url!r} is neither a URL with '://' nor a filesystem "
                f"path; use {_ACCEPTED_FORMS}"
            )
        return SQLiteStore(Path(url))
    scheme = scheme.lower()
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise ValueError(
                f"SQLite store URL must be sqlite:///<path> with no host, got a URL with "
                f"{'a host' if rest != '/' else 'no path'}; use {_ACCEPTED_FORMS}"
            )
        return SQLiteStore(Path(url[len(_SQLITE_PREFIX) :]))
    if scheme in ("postgresql", "postgres"):
        return PostgresStore(url)
    raise ValueError(f"unsupported baseline store URL scheme {scheme!r}; use {_ACCEPTED_FORMS}")


def _checksum(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _check_version(format_version: int) -> None:
    if isinstance(format_version, bool) or not isinstance(format_version, int):
        raise TypeError(f"format_version must be an int, got {type(format_version).__name__}")
    if format_version < 1:
        raise ValueError(f"format_version must be >= 1, got {format_version}")


def _rows(
    payloads: Mapping[str, bytes], format_version: int, updated_at: object
) -> Iterator[tuple[str, int, str, object, bytes]]:
    """Rows to upsert, produced lazily inside the transaction: if the mapping or a value
    turns out bad halfway, the rows already written are rolled back with the rest."""
    for service, payload in payloads.items():
        if not isinstance(service, str) or not service:
            raise TypeError(f"service names must be non-empty str, got {service!r}")
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise TypeError(
                f"payload of service {service!r} must be bytes, got {type(payload).__name__}"
            )
        data = bytes(payload)
        yield service, format_version, _checksum(data), updated_at, data


def _verify(
    service: str, found_version: object, checksum: object, payload: object, expected: int
) -> bytes:
    """The payload of one row if it verifies. The version is checked first: it says how
    the rest of the row is to be read, so a row from another build is a version error even
    if its checksum also differs."""
    if found_version != expected:
        raise SnapshotVersionError(service, found_version, expected)
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise SnapshotCorrupt(service, f"payload is {type(payload).__name__}, not bytes")
    data = bytes(payload)
    actual = _checksum(data)
    if actual != checksum:
        raise SnapshotCorrupt(
            service,
            f"sha256 of the stored payload ({len(data)} bytes) is {actual}, the row records "
            f"{checksum!r}",
        )
    return data


class _Cursor(Protocol):
    def execute(self, query: Any, params: Any = ..., /) -> Any: ...

    def executemany(self, query: Any, params_seq: Any, /) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class _SQLStore(ABC):
    """Everything both backends share: the SQL (up to the placeholder), the upsert, the
    verification, the lock and the translation of driver errors into StoreError.

    One lock per store: the consumer may checkpoint from another thread than the one that
    loaded, and neither driver's connection may run two statements at once.
    """

    _placeholder: ClassVar[str]
    _driver_error: ClassVar[type[Exception]]

    def __init__(self, where: str) -> None:
        self._where = where
        self._lock = threading.Lock()
        self._closed = False

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[_Cursor]:
        """A cursor inside one transaction, committed on exit, rolled back on error."""

    @abstractmethod
    def _cursor(self) -> AbstractContextManager[_Cursor]:
        """A cursor for one autocommitted read statement."""

    @abstractmethod
    def _now(self) -> object:
        """The ``updated_at`` value of this backend's column type."""

    @abstractmethod
    def _close_connection(self) -> None: ...

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        with self._lock:
            if self._closed:
                raise StoreError(f"cannot {action}: the baseline store {self._where} is closed")
            try:
                yield
            except self._driver_error as exc:
                raise StoreUnavailable(f"could not {action} in {self._where}: {exc}") from exc

    def save(self, payloads: Mapping[str, bytes], format_version: int = FORMAT_VERSION) -> None:
        _check_version(format_version)
        p = self._placeholder
        sql = (
            f"INSERT INTO {TABLE} (service, format_version, checksum, updated_at, payload) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}) ON CONFLICT (service) DO UPDATE SET "
            "format_version = excluded.format_version, checksum = excluded.checksum, "
            "updated_at = excluded.updated_at, payload = excluded.payload"
        )
        with self._guard("save baselines"), self._transaction() as cursor:
            cursor.executemany(sql, _rows(payloads, format_version, self._now()))

    def load(
        self, services: Iterable[str] | None = None, format_version: int = FORMAT_VERSION
    ) -> dict[str, bytes]:
        _check_version(format_version)
        sql = f"SELECT service, format_version, checksum, payload FROM {TABLE}"
        params: Sequence[str] = ()
        if services is not None:
            if isinstance(services, str):
                raise TypeError(f"services must be an iterable of names, not the str {services!r}")
            params = sorted(set(services))
            if not params:
                return {}
            sql += f" WHERE service IN ({', '.join([self._placeholder] * len(params))})"
        with self._guard("load baselines"), self._cursor() as cursor:
            cursor.execute(sql + " ORDER BY service", params)
            rows = cursor.fetchall()
        return {
            service: _verify(service, version, checksum, payload, format_version)
            for service, version, checksum, payload in rows
        }

    def services(self) -> list[str]:
        with self._guard("list services"), self._cursor() as cursor:
            cursor.execute(f"SELECT service FROM {TABLE} ORDER BY service")
            return [row[0] for row in cursor.fetchall()]

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._close_connection()


class SQLiteStore(_SQLStore):
    """One file, WAL mode (a reader never blocks the checkpointing writer), and a busy
    timeout so that two processes on the same file wait for each other instead of failing."""

    _placeholder = "?"
    _driver_error = sqlite3.Error

    def __init__(self, path: Path, busy_timeout_s: float = 30.0) -> None:
        super().__init__(f"SQLite file {path}")
        memory = str(path) == ":memory:"
        if not memory:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Autocommit mode: transactions are begun explicitly, and IMMEDIATE, so a save
            # takes the write lock up front instead of failing to upgrade a read lock.
            self._conn = sqlite3.connect(
                path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"could not open the baseline store {self._where}: {exc}") from exc
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            if not memory:
                self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (service TEXT PRIMARY KEY, "
                "format_version INTEGER NOT NULL, checksum TEXT NOT NULL, "
                "updated_at REAL NOT NULL, payload BLOB NOT NULL)"
            )
        except sqlite3.Error as exc:
            self._conn.close()
            raise StoreError(f"could not open the baseline store {self._where}: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[_Cursor]:
        cursor = self._conn.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            yield cursor
            cursor.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        finally:
            cursor.close()

    @contextmanager
    def _cursor(self) -> Iterator[_Cursor]:
        cursor = self._conn.cursor()
        try:
            yield cursor
        finally:
            cursor.close()

    def _now(self) -> float:
        return time.time()

    def _close_connection(self) -> None:
        self._conn.close()


class PostgresStore(_SQLStore):
    """A PostgreSQL table (in the connection's search_path) for consumers that need a
    shared, managed store. A connection that broke (server restart, failover) is replaced
    on the next call, so one failed checkpoint does not fail all later ones."""

    _placeholder = "%s"
    _driver_error = psycopg.Error

    def __init__(self, url: str, connect_timeout_s: int = 10) -> None:
        params = psycopg.conninfo.conninfo_to_dict(url)
        params.setdefault("connect_timeout", connect_timeout_s)
        # Name the server without the password that the URL may carry.
        super().__init__(
            f"PostgreSQL database {params.get('dbname', '?')!s} on "
            f"{params.get('host', 'localhost')!s}:{params.get('port', 5432)!s}"
        )
        self._conninfo = psycopg.conninfo.make_conninfo("", **params)
        try:
            self._conn = self._connect()
        except psycopg.Error as exc:
            raise StoreError(f"could not open the baseline store {self._where}: {exc}") from exc
        try:
            with self._conn.transaction(), self._conn.cursor() as cursor:
                # Two consumers starting at once would otherwise race on CREATE TABLE IF NOT
                # EXISTS, which PostgreSQL does not make atomic.
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (TABLE,))
                cursor.execute(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} (service TEXT PRIMARY KEY, "
                    "format_version INTEGER NOT NULL, checksum TEXT NOT NULL, "
                    "updated_at TIMESTAMPTZ NOT NULL, payload BYTEA NOT NULL)"
                )
        except psycopg.Error as exc:
            self._conn.close()
            raise StoreError(f"could not open the baseline store {self._where}: {exc}") from exc

    def _connect(self) -> psycopg.Connection[Any]:
        # Autocommit: reads are single statements, and writes open an explicit transaction,
        # so no transaction is ever left idle between checkpoints.
        return psycopg.connect(self._conninfo, autocommit=True)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn.broken:
            self._conn = self._connect()
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[_Cursor]:
        connection = self._connection()
        with connection.transaction(), connection.cursor() as cursor:
            yield cursor

    @contextmanager
    def _cursor(self) -> Iterator[_Cursor]:
        with self._connection().cursor() as cursor:
            yield cursor

    def _now(self) -> datetime:
        return datetime.now(UTC)

    def _close_connection(self) -> None:
        self._conn.close()
