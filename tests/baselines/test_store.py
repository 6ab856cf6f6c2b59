"""The baseline store against real databases: a SQLite file and the PostgreSQL server on
127.0.0.1:5432 (``WHYSLOW_TEST_POSTGRES_URL`` overrides it), each test in its own schema."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from baselines.store import (
    FORMAT_VERSION,
    SnapshotCorrupt,
    SnapshotVersionError,
    SQLiteStore,
    StoreError,
    default_store_url,
    open_store,
)
from tests.baselines.conftest import Backend, sqlite_sql

PAYLOADS = {
    "checkout": b"checkout-state" * 100,
    "exchange-api": bytes(range(256)) * 40,  # every byte value, NULs included
    "fx-provider": b"",
}


def test_round_trip_of_several_services(backend: Backend) -> None:
    store = open_store(backend.url)
    assert store.load() == {}
    assert store.services() == []
    store.save(PAYLOADS)
    assert store.load() == PAYLOADS
    assert store.services() == sorted(PAYLOADS)
    rows = backend.sql("SELECT service, format_version, checksum FROM whyslow_baselines")
    assert {row[1] for row in rows} == {FORMAT_VERSION}
    assert all(len(row[2]) == 64 for row in rows)  # sha256 hex
    store.close()
    store.close()  # idempotent


def test_a_save_upserts_only_the_services_it_is_given(backend: Backend) -> None:
    store = open_store(backend.url)
    store.save(PAYLOADS)
    store.save({"checkout": b"newer", "new-service": b"fresh"})
    assert store.load() == {**PAYLOADS, "checkout": b"newer", "new-service": b"fresh"}
    store.save({})  # nothing to write is not an error
    assert len(store.services()) == 4
    store.close()


def test_load_a_subset(backend: Backend) -> None:
    store = open_store(backend.url)
    store.save(PAYLOADS)
    subset = store.load(["fx-provider", "checkout", "never-seen", "checkout"])
    assert subset == {"checkout": PAYLOADS["checkout"], "fx-provider": b""}
    assert store.load([]) == {}
    assert store.load(iter(["exchange-api"])) == {"exchange-api": PAYLOADS["exchange-api"]}
    with pytest.raises(TypeError, match="not the str"):
        store.load("checkout")
    store.close()


def test_baselines_survive_close_and_reopen(backend: Backend) -> None:
    store = open_store(backend.url)
    store.save(PAYLOADS)
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.load()
    reopened = open_store(backend.url)
    assert reopened.load() == PAYLOADS
    reopened.close()


def test_two_stores_on_one_database_see_each_others_saves(backend: Backend) -> None:
    writer, reader = open_store(backend.url), open_store(backend.url)
    writer.save({"checkout": b"one"})
    assert reader.load() == {"checkout": b"one"}
    writer.save({"checkout": b"two"})
    assert reader.load() == {"checkout": b"two"}
    writer.close()
    reader.close()


def test_a_tampered_payload_is_refused_naming_the_service(backend: Backend) -> None:
    store = open_store(backend.url)
    store.save(PAYLOADS)
    tampered = b"X" + PAYLOADS["checkout"][1:]
    backend.sql(
        "UPDATE whyslow_baselines SET payload = %s WHERE service = %s", tampered, "checkout"
    )
    with pytest.raises(SnapshotCorrupt, match="'checkout' is corrupt: sha256") as caught:
        store.load()
    assert caught.value.service == "checkout"
    # The other services still load on their own, and the bad row was left for a person.
    assert store.load(["exchange-api"]) == {"exchange-api": PAYLOADS["exchange-api"]}
    rows = backend.sql("SELECT payload FROM whyslow_baselines WHERE service = %s", "checkout")
    assert bytes(rows[0][0]) == tampered
    store.close()


def test_a_row_of_another_format_version_is_refused_and_kept(backend: Backend) -> None:
    store = open_store(backend.url)
    store.save(PAYLOADS)
    backend.sql(
        "UPDATE whyslow_baselines SET format_version = 7 WHERE service = %s", "exchange-api"
    )
    with pytest.raises(SnapshotVersionError) as caught:
        store.load()
    error = caught.value
    assert (error.service, error.found, error.expected) == ("exchange-api", 7, FORMAT_VERSION)
    message = str(error)
    assert "'exchange-api'" in message
    assert "format version 7" in message
    assert f"reads format version {FORMAT_VERSION}" in message
    assert "NOT reset" in message
    assert store.services() == sorted(PAYLOADS)
    rows = backend.sql(
        "SELECT format_version FROM whyslow_baselines WHERE service = %s", "exchange-api"
    )
    assert rows == [(7,)]
    # A build that reads version 7 still gets it back intact.
    assert store.load(["exchange-api"], format_version=7) == {
        "exchange-api": PAYLOADS["exchange-api"]
    }
    store.close()


def test_a_save_in_another_format_version_is_refused_by_this_one(backend: Backend) -> None:
    store = open_store(backend.url)
    store.save({"checkout": b"v2 state"}, format_version=FORMAT_VERSION + 1)
    with pytest.raises(SnapshotVersionError, match="NOT reset"):
        store.load()
    assert store.load(format_version=FORMAT_VERSION + 1) == {"checkout": b"v2 state"}
    store.close()


class ExplodingMapping(Mapping[str, bytes]):
    """A mapping whose iteration fails after its first item, as a serialiser might."""

    def __init__(self, items: dict[str, bytes]) -> None:
        self._items = items

    def __getitem__(self, key: str) -> bytes:
        return self._items[key]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        keys = iter(self._items)
        yield next(keys)
        raise RuntimeError("serialiser failed halfway")


@pytest.mark.parametrize(
    ("bad_save", "error", "match"),
    [
        (
            ExplodingMapping({"checkout": b"new", "exchange-api": b"new"}),
            RuntimeError,
            "halfway",
        ),
        ({"checkout": b"new", "exchange-api": "not bytes"}, TypeError, "'exchange-api'"),
        ({"checkout": b"new", "": b"new"}, TypeError, "non-empty str"),
    ],
    ids=["mapping-raises", "value-not-bytes", "empty-service-name"],
)
def test_a_failed_save_leaves_every_previous_snapshot_unchanged(
    backend: Backend, bad_save: Mapping[str, Any], error: type[Exception], match: str
) -> None:
    store = open_store(backend.url)
    store.save(PAYLOADS)
    with pytest.raises(error, match=match):
        store.save(bad_save)
    assert store.load() == PAYLOADS  # "checkout" was written, then rolled back
    store.save({"checkout": b"after"})  # and the store is still usable
    assert store.load(["checkout"]) == {"checkout": b"after"}
    store.close()


def test_postgres_replaces_a_connection_the_server_dropped(postgres: Backend) -> None:
    name = f"whyslow-test-{uuid.uuid4().hex[:8]}"
    store = open_store(f"{postgres.url}&application_name={name}")
    store.save({"checkout": b"before"})
    postgres.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        name,
    )
    with pytest.raises(StoreError, match="could not load baselines"):
        store.load()  # this checkpoint is lost, as the server said
    assert store.load() == {"checkout": b"before"}  # the next one reconnects
    store.close()


def test_sqlite_is_in_wal_mode_and_accepts_a_plain_path(tmp_path: Path) -> None:
    path = tmp_path / "plain.db"
    store = open_store(str(path))
    assert isinstance(store, SQLiteStore)
    store.save({"checkout": b"x"})
    store.close()
    assert sqlite_sql(path)("PRAGMA journal_mode") == [("wal",)]


def test_the_default_url_is_a_sqlite_file_in_the_data_dir(tmp_path: Path) -> None:
    url = default_store_url(tmp_path / "data")
    assert url == f"sqlite:///{tmp_path}/data/baselines.db"
    store = open_store(url)
    store.save({"checkout": b"x"})
    store.close()
    assert (tmp_path / "data" / "baselines.db").is_file()


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("mysql://root@localhost/whyslow", r"scheme 'mysql'.*sqlite:///.*postgresql://"),
        ("redis://localhost:6379/0", r"scheme 'redis'"),
        ("sqlite://somehost/baselines.db", r"no host"),
        ("sqlite:baselines.db", r"neither a URL"),
        ("", r"neither a URL"),
    ],
)
def test_a_bad_url_is_a_value_error_naming_the_accepted_forms(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        open_store(url)


def test_an_unreachable_postgres_is_a_store_error_without_the_password() -> None:
    # Port 1 on loopback refuses at once: an open failure, reported as a StoreError.
    with pytest.raises(StoreError) as caught:
        open_store("postgresql://postgres:s3cret@127.0.0.1:1/test")
    assert "s3cret" not in str(caught.value)
    assert "127.0.0.1:1" in str(caught.value)
