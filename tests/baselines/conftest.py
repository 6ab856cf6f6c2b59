"""Databases for the store tests: a SQLite file, or a schema of the real PostgreSQL server
on 127.0.0.1:5432 (``WHYSLOW_TEST_POSTGRES_URL`` overrides it), each test its own."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

POSTGRES_URL = os.environ.get(
    "WHYSLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@dataclass
class Backend:
    """A fresh, empty database for one test, and a raw connection to tamper with it."""

    name: str
    url: str
    sql: Callable[..., list[Any]]  # (query with %s placeholders, *params) -> rows


def sqlite_sql(path: Path) -> Callable[..., list[Any]]:
    def run(query: str, *params: object) -> list[Any]:
        with sqlite3.connect(path) as conn:
            return conn.execute(query.replace("%s", "?"), params).fetchall()

    return run


def postgres_sql(url: str) -> Callable[..., list[Any]]:
    def run(query: str, *params: object) -> list[Any]:
        with psycopg.connect(url, autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else []

    return run


@contextmanager
def postgres_schema() -> Iterator[Backend]:
    """A schema of this test only, as the search_path of the URL; dropped afterwards."""
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL must run at {POSTGRES_URL} (trust auth, database 'test'; CI starts "
            f"it; set WHYSLOW_TEST_POSTGRES_URL to use another): {exc}",
            pytrace=False,
        )
    schema = f"whyslow_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in POSTGRES_URL else "?"
    url = f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    try:
        yield Backend("postgresql", url, postgres_sql(url))
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "not-yet" / "baselines.db"  # the store creates the directory
        yield Backend("sqlite", f"sqlite:///{path}", sqlite_sql(path))
    else:
        with postgres_schema() as postgres:
            yield postgres


@pytest.fixture
def postgres() -> Iterator[Backend]:
    with postgres_schema() as backend:
        yield backend
