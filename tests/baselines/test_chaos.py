"""Nothing lost, nothing twice: 100,000 events through the real broker, consumer and service
while the consumer is killed with SIGKILL, the broker restarts and the service is down for
a minute; with API keys on, as a production service runs. The call graph the consumer
checkpoints with the baselines counts each call once as well."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pika
import pytest

from baselines.demo import free_port
from baselines.detect import Detector, DetectorConfig
from baselines.snapshot import CONSUMER_KEY_PREFIX, ConsumerRecord, restore
from baselines.store import open_store
from baselines.synthetic import Incident, last_full_week_start, telemetry
from service.store import AnalysisStore
from tests.helpers import declare, publish, wait_for

EVENTS_PER_MESSAGE = 200
OUTAGE_S = 60


def two_days_two_incidents() -> tuple[datetime, list[Incident], list[dict[str, object]]]:
    """(the week's start, the incidents, the events): two days of the synthetic week's
    telemetry, an incident on each of two services late on the second day (checkout's
    CPU, exchange-api's dependency)."""
    week = last_full_week_start(datetime.now(UTC))
    day2 = week + timedelta(days=1)
    incidents = [
        Incident(
            "checkout",
            "local_cpu_saturation",
            day2 + timedelta(hours=14),
            day2 + timedelta(hours=14, minutes=20),
        ),
        Incident(
            "exchange-api",
            "downstream_dependency",
            day2 + timedelta(hours=16),
            day2 + timedelta(hours=16, minutes=20),
        ),
    ]
    events = [e for minute in telemetry(week, incidents, minutes=2 * 1440) for e in minute]
    return week, incidents, events


def consumer_record(store_url: str, queue: str) -> ConsumerRecord | None:
    store = open_store(store_url)
    try:
        payload = store.load([CONSUMER_KEY_PREFIX + queue]).get(CONSUMER_KEY_PREFIX + queue)
    finally:
        store.close()
    return ConsumerRecord.decode(payload) if payload else None


def applied(record: ConsumerRecord | None) -> int:
    return (
        0 if record is None else record.stream["stats"]["spans"] + record.stream["stats"]["metrics"]
    )


def dead_letter_ids(settings) -> set[str]:
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    ids = set()
    while True:
        method, properties, _ = channel.basic_get(settings.dead_letter_queue, auto_ack=True)
        if method is None:
            break
        ids.add(properties.message_id)
    connection.close()
    return ids


def restart_broker() -> None:
    subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=120)
    subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=120)
    wait_for(broker_up, 120, "the broker to come back")


def broker_up() -> bool:
    try:
        pika.BlockingConnection(pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/%2F")).close()
        return True
    except pika.exceptions.AMQPError:
        return False


@pytest.mark.slow
def test_chaos_every_event_applied_once_and_every_anomaly_analysed_once(
    amqp_settings, tmp_path: Path
) -> None:
    if subprocess.run(["which", "rabbitmqctl"], capture_output=True).returncode != 0:
        pytest.fail("rabbitmqctl is needed to restart the broker (install rabbitmq-server)")
    port = free_port()
    baselines_url = f"sqlite:///{tmp_path / 'baselines.db'}"
    analyses_url = f"sqlite:///{tmp_path / 'analyses.db'}"
    analyses_env = {"WHYSLOW_ANALYSES_URL": analyses_url}
    baselines_env = {"WHYSLOW_BASELINES_URL": baselines_url}
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHYSLOW_")}
    env |= {
        "WHYSLOW_DATA_DIR": str(tmp_path / "data"),
        "WHYSLOW_EXCHANGE": amqp_settings.exchange,
        "WHYSLOW_QUEUE": amqp_settings.queue,
        "WHYSLOW_DEAD_LETTER_EXCHANGE": amqp_settings.dead_letter_exchange,
        "WHYSLOW_DEAD_LETTER_QUEUE": amqp_settings.dead_letter_queue,
        "WHYSLOW_SERVICE_URL": f"http://127.0.0.1:{port}",
        "WHYSLOW_CHECKPOINT_SECONDS": "0.5",
        "WHYSLOW_PREFETCH": "50",
        "WHYSLOW_METRICS_PORT": "0",
        # keys on: the service refuses reports without one, the consumer sends it
        "WHYSLOW_API_KEYS": "chaos-key",
        "WHYSLOW_SERVICE_API_KEY": "chaos-key",
    }
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(name: str, *args: str, store: dict[str, str]) -> subprocess.Popen[bytes]:
        out = (logs / f"{name}-{time.monotonic_ns()}.log").open("wb")
        return subprocess.Popen(
            [sys.executable, "-m", *args],
            env=env | store,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def start_service() -> subprocess.Popen[bytes]:
        process = start("service", "service", "serve", "--port", str(port), store=analyses_env)
        wait_for(lambda: _ready(port), 120, "the service")
        return process

    _, incidents, events = two_days_two_incidents()
    assert len(events) >= 100_000
    messages = [
        events[i : i + EVENTS_PER_MESSAGE] for i in range(0, len(events), EVENTS_PER_MESSAGE)
    ]
    malformed = [b"{not json %d" % i for i in range(20)]
    mixed = [[events[0] | {"duration_ms": -i - 1}] for i in range(10)]  # all items invalid
    split = [int(len(messages) * f) for f in (0.4, 0.7)]

    declare(amqp_settings)
    service = start_service()
    consumer = start("consumer", "baselines", "consume", store=baselines_env)
    try:
        publish(amqp_settings, [*messages[: split[0]], *malformed[:10], *mixed[:5]])
        wait_for(
            lambda: applied(consumer_record(baselines_url, amqp_settings.queue)) > 20_000,
            120,
            "a first checkpoint",
        )
        consumer.send_signal(signal.SIGKILL)  # fault 1: the consumer dies mid-stream
        consumer.wait()
        consumer = start("consumer", "baselines", "consume", store=baselines_env)

        publish(amqp_settings, [*messages[split[0] : split[1]], *malformed[10:], *mixed[5:]])
        time.sleep(1.0)
        restart_broker()  # fault 2: the broker restarts under the consumer

        service.send_signal(signal.SIGKILL)  # fault 3: the service is down for a minute
        service.wait()
        outage_started = time.monotonic()
        publish(amqp_settings, messages[split[1] :])
        wait_for(
            lambda: applied(consumer_record(baselines_url, amqp_settings.queue)) >= len(events),
            300,
            "every event to be applied",
        )
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_started)))
        service = start_service()
        wait_for(
            lambda: not consumer_record(baselines_url, amqp_settings.queue).outbox,
            300,
            "the outbox to drain",
        )
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(timeout=60) == 0
    finally:
        for process in (consumer, service):
            if process.poll() is None:
                process.kill()
                process.wait()

    record = consumer_record(baselines_url, amqp_settings.queue)
    stats = record.stream["stats"]
    analyses = AnalysisStore(analyses_url)
    analysed = analyses.count()
    analyses.close()
    dlq = dead_letter_ids(amqp_settings)
    counts = {
        "events published": len(events),
        "events applied": stats["spans"] + stats["metrics"],
        "late / future / over cap": (stats["late"], stats["future"], stats["overflow"]),
        "malformed messages published": len(malformed) + len(mixed),
        "distinct messages in the DLQ": len(dlq),
        "anomalies flagged": stats["flagged"],
        "analyses stored": analysed,
        "reports still in the outbox": len(record.outbox),
    }
    print("\nchaos counts: " + json.dumps(counts, default=str))
    assert stats["spans"] + stats["metrics"] == len(events)  # each applied once: no more, no less
    assert (stats["late"], stats["future"], stats["overflow"]) == (0, 0, 0)
    assert len(dlq) == len(malformed) + len(mixed)
    assert stats["flagged"] >= len(incidents)
    assert analysed == stats["flagged"] and not record.outbox
    # the call graph in the checkpoint counted each call once too: those of every window
    # closed, all but the last
    width = DetectorConfig().window_seconds
    last_window = max(float(e["timestamp"]) for e in events) // width * width
    published = Counter(
        (e["service"], e["peer_service"])
        for e in events
        if e.get("kind") == "client" and float(e["timestamp"]) < last_window
    )
    assert graph_in_checkpoint(baselines_url) == published


def graph_in_checkpoint(store_url: str) -> dict[tuple[str, str], float]:
    """The calls of each edge of the call graph a consumer checkpointed."""
    store = open_store(store_url)
    try:
        detector = Detector(DetectorConfig())
        services = [s for s in store.services() if not s.startswith(CONSUMER_KEY_PREFIX)]
        restore(detector, store.load(services))
    finally:
        store.close()
    return {edge: calls.calls for edge, calls in detector.graph.edges.items()}


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
