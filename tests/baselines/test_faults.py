"""Faults the chaos test does not cover: the store going away (PostgreSQL unreachable, then
the broker connection dropped while it is), the SQLite disk filling up, and the service
killed in the middle of an analysis. After each, the counts add up: every event applied
exactly once, nothing dead-lettered that was valid, every report analysed once.

Each test prints its figures (``-s`` shows them; the README's Reliability section quotes
them)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pika
import pytest

from baselines.demo import free_port
from baselines.detect import DetectorConfig
from baselines.forward import Forwarder
from baselines.settings import Settings
from baselines.snapshot import ConsumerRecord
from baselines.store import open_store
from baselines.synthetic import last_full_week_start, telemetry
from service.contract import AnomalyReport
from service.model.loader import ModelLoader
from service.settings import Settings as ServiceSettings
from service.store import AnalysisStore
from tests.baselines.test_chaos import _ready, applied, consumer_record
from tests.helpers import declare, publish, running_consumer, sample_value, wait_for

WEEK = last_full_week_start(datetime(2026, 11, 23, tzinfo=UTC))


def minutes(first: int, last: int) -> list[list[dict]]:
    """One message per minute of the synthetic week (no incident: nothing to forward)."""
    return list(telemetry(WEEK, [], minutes=last))[first:last]


def count(messages: list[list[dict]]) -> int:
    return sum(len(m) for m in messages)


def queue_empty(settings: Settings) -> bool:
    """Nothing ready and nothing unacknowledged in the consumer's queue."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    try:
        q = connection.channel().queue_declare(settings.queue, passive=True).method
        return q.message_count == 0
    finally:
        connection.close()


def dead_letters(settings: Settings) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    try:
        return (
            connection.channel()
            .queue_declare(settings.dead_letter_queue, passive=True)
            .method.message_count
        )
    finally:
        connection.close()


class CuttableProxy:
    """A TCP proxy in front of a real server that can be cut (open connections reset, new
    ones closed at once), as when the database host drops off the network."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._cut = threading.Event()
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self._target)
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for sock in self._open:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._open.clear()

    def restore(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self.cut()
        self._listener.close()


def fault_settings(amqp_settings: Settings) -> Settings:
    return amqp_settings.model_copy(update={"checkpoint_seconds": 0.5, "prefetch": 20})


def nowhere() -> Forwarder:
    """The data holds no incident, so nothing is forwarded; a service is not needed."""
    return Forwarder("http://127.0.0.1:9", 1.0).start()


@dataclass
class Outage:
    """What a store outage did: events applied while it lasted (none may be acknowledged
    then), failed checkpoints, events published, the consumer's record afterwards and the
    messages in the dead-letter queue."""

    applied_during: int
    failed_checkpoints: int
    total: int
    record: ConsumerRecord
    dead_lettered: int

    @property
    def applied(self) -> int:
        return applied(self.record)

    @property
    def lost(self) -> int:
        """Published events the consumer's counts do not show applied."""
        return max(0, self.total - self.applied)

    @property
    def duplicated(self) -> int:
        """Events applied beyond those published: a redelivery applied twice."""
        return max(0, self.applied - self.total)

    def figures(self) -> str:
        return (
            f"applied {self.applied}, lost {self.lost}, duplicated {self.duplicated}, "
            f"dead-lettered {self.dead_lettered}"
        )


def through_an_outage(
    settings: Settings,
    store_url: str,
    record_url: str,
    break_store: Callable[[], object],
    heal_store: Callable[[], object],
    meanwhile: Callable[[], object] = lambda: None,
) -> Outage:
    """Two hours of telemetry checkpointed, then three more published while the store is
    broken (the consumer must fail its checkpoints and hold on), ``meanwhile`` done, the
    store healed: everything must then be checkpointed and acknowledged."""
    before, during = minutes(0, 120), minutes(120, 300)
    total = count(before) + count(during)
    declare(settings)
    store = open_store(store_url)
    forwarder = nowhere()
    try:
        with running_consumer(settings, DetectorConfig(), forwarder, store) as consumer:
            publish(settings, before)
            wait_for(
                lambda: applied(consumer_record(record_url, settings.queue)) == count(before),
                60,
                "the first part to be checkpointed",
            )
            break_store()
            publish(settings, during)
            wait_for(lambda: consumer.stats.store_errors >= 2, 60, "failed checkpoints")
            meanwhile()
            applied_during = applied(consumer_record(record_url, settings.queue))
            heal_store()
            wait_for(
                lambda: applied(consumer_record(record_url, settings.queue)) == total,
                120,
                f"all {total} events to be checkpointed after the outage",
            )
            wait_for(lambda: queue_empty(settings), 30, "every message to be acknowledged")
    finally:
        forwarder.close()
        store.close()
    record = consumer_record(record_url, settings.queue)
    assert record is not None
    assert applied_during == count(before)  # nothing acknowledged while the store was away
    assert record.stream["stats"]["late"] == 0  # redeliveries were not applied out of order
    return Outage(
        applied_during, consumer.stats.store_errors, total, record, dead_letters(settings)
    )


@pytest.mark.slow
def test_a_store_outage_loses_nothing_even_across_a_reconnect(amqp_settings, postgres) -> None:
    proxy = CuttableProxy(("127.0.0.1", 5432))
    via_proxy = postgres.url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}", 1)

    def drop_the_broker_connection() -> None:
        """On reconnecting, the consumer must restore from the store, which is away."""
        subprocess.run(
            ["rabbitmqctl", "close_all_connections", "fault test"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        time.sleep(3)

    try:
        outage = through_an_outage(
            fault_settings(amqp_settings),
            via_proxy,
            postgres.url,
            proxy.cut,
            proxy.restore,
            drop_the_broker_connection,
        )
    finally:
        proxy.close()
    print(
        f"\nstore outage: {outage.total} events in 300 messages, {outage.failed_checkpoints} "
        f"failed checkpoints, broker connection dropped during the outage; {outage.figures()}"
    )
    assert (outage.lost, outage.duplicated, outage.dead_lettered) == (0, 0, 0)
    assert outage.applied == outage.total


@contextmanager
def small_disk(where: Path, size: str = "8m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` (needs root, as in CI)."""
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        message = f"needs to mount a tmpfs (root): {mounted.stderr.decode().strip()}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def fill(filler: Path) -> None:
    """Write ``filler`` until its disk is full. Unbuffered: a buffered file keeps the part
    of its last write that did not fit and fails again writing it out on close."""
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 65536)
        except OSError:
            pass


@pytest.mark.slow
def test_a_full_disk_under_the_sqlite_store_loses_nothing(amqp_settings, tmp_path) -> None:
    with small_disk(tmp_path / "disk") as disk:
        url = f"sqlite:///{disk / 'baselines.db'}"
        filler = disk / "filler"
        outage = through_an_outage(
            fault_settings(amqp_settings), url, url, lambda: fill(filler), filler.unlink
        )
    print(
        f"\ndisk full: {outage.total} events, {outage.failed_checkpoints} failed checkpoints "
        f"while the disk was full; {outage.figures()}"
    )
    assert (outage.lost, outage.duplicated, outage.dead_lettered) == (0, 0, 0)
    assert outage.applied == outage.total


REPORT = AnomalyReport.model_validate(
    {
        "id": "fault-restart-1",
        "service": "exchange-api",
        "operation": "GET /rates",
        "latency_ms": {"p50": 300, "p95": 520, "p99": 700},
        "baseline": {"hour_of_week": 10, "p50": 50, "p95": 90, "samples": 48, "level": "global"},
        "context": {"cpu_pct": 14, "cpu_baseline_pct": 36},
    }
)


def _model_busy(port: int) -> bool:
    """The service is analysing: its ``whyslow_model_queue`` gauge counts a request."""
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    return (sample_value(metrics, "whyslow_model_queue") or 0) >= 1


@pytest.mark.slow
def test_the_service_killed_mid_analysis_analyses_the_report_once(
    service_settings: ServiceSettings, tmp_path: Path
) -> None:
    """The forwarder keeps the report, the restarted service analyses it, once."""
    model = ModelLoader(service_settings).model_path()  # prepared once for the session
    port = free_port()
    store_url = f"sqlite:///{tmp_path / 'analyses.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHYSLOW_")}
    env |= {
        "WHYSLOW_DATA_DIR": str(tmp_path / "data"),
        "WHYSLOW_MODEL_PATH": str(model),
        "WHYSLOW_ANALYSES_URL": store_url,
        "WHYSLOW_N_THREADS": "2",
    }

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: _ready(port), 120, "the service")
        return process

    analysed: list[str] = []
    service = start()
    forwarder = Forwarder(
        f"http://127.0.0.1:{port}", 60.0, lambda r, a: analysed.append(a.anomaly_id), 0.2, 1.0
    ).start()
    try:
        forwarder.submit(REPORT)
        wait_for(lambda: bool(analysed) or _model_busy(port), 30, "the analysis to start")
        assert analysed == [], "answered too fast to be killed mid-analysis"
        service.send_signal(signal.SIGKILL)
        service.wait(timeout=10)
        service = start()
        wait_for(forwarder.idle, 120, "the report to be delivered after the restart")
    finally:
        forwarder.close()
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=30)
    store = AnalysisStore(store_url)
    stored = store.count()
    store.close()
    lost = forwarder.stats.submitted - len(set(analysed))
    twice = len(analysed) - len(set(analysed))
    print(
        f"\nservice killed mid-analysis: {forwarder.stats.submitted} submitted, "
        f"{forwarder.stats.retried} retries, analysed {len(analysed)} (stored {stored}), "
        f"lost {lost}, analysed twice {twice}"
    )
    assert (lost, twice) == (0, 0)
    assert analysed == [REPORT.anomaly_id] and stored == 1
    assert forwarder.stats.retried >= 1 and forwarder.stats.forwarded == 1
