"""Small helpers shared by tests that drive the real broker."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pika
import pytest
from opentelemetry.instrumentation.pika import PikaInstrumentor
from prometheus_client.parser import text_string_to_metric_families

from baselines.consumer import TelemetryConsumer
from baselines.demo import free_port
from baselines.detect import Detector, DetectorConfig
from baselines.forward import Forwarder
from baselines.settings import Settings
from baselines.store import BaselineStore
from baselines.topology import declare_topology


def own_topology(prefix: str, **settings: Any) -> Settings:
    """Consumer settings whose exchanges and queues belong to this run only (``prefix`` and
    a random suffix), so that it disturbs no other consumer; ``settings``: other fields."""
    run = f"{prefix}.{uuid.uuid4().hex[:8]}"
    return Settings(
        exchange=f"{run}.telemetry",
        queue=f"{run}.telemetry",
        dead_letter_exchange=f"{run}.dlx",
        dead_letter_queue=f"{run}.dlq",
        shard_exchange=f"{run}.shards",
        **settings,
    )


def wait_for(condition: Callable[[], bool], timeout: float = 60.0, what: str = "it") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def sample_value(exposition: str, name: str, **labels: str) -> float | None:
    """The value of sample ``name`` with exactly ``labels`` in a /metrics page, read with
    prometheus_client's parser, as a scraper reads it; None when the page has no such
    sample."""
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def publish(
    settings: Settings,
    bodies: list[bytes | object],
    content_type: str = "application/json",
    routing_key: str = "test",
    traced: bool = False,
) -> None:
    """Publish each body (objects are JSON-encoded) with confirms, as a producer would; with
    ``traced``, through the OpenTelemetry pika instrumentation (a producer span per message,
    its context in the headers)."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    channel.confirm_delivery()
    if traced:
        PikaInstrumentor.instrument_channel(channel)
    for body in bodies:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        properties = pika.BasicProperties(content_type=content_type, delivery_mode=2)
        channel.basic_publish(settings.exchange, routing_key, data, properties)
    connection.close()


def dead_letters(settings: Settings) -> list[tuple[dict, bytes]]:
    """Empty the dead-letter queue: (headers, body) of each letter."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    found = []
    while True:
        method, properties, body = channel.basic_get(settings.dead_letter_queue, auto_ack=True)
        if method is None:
            break
        found.append((properties.headers, body))
    connection.close()
    return found


def declare(settings: Settings) -> None:
    """The exchanges and queues, as a consumer declares them, before anything is published."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    declare_topology(connection.channel(), settings)
    connection.close()


@contextmanager
def running_consumer(
    settings: Settings,
    config: DetectorConfig,
    forwarder: Forwarder,
    store: BaselineStore | None = None,
) -> Iterator[TelemetryConsumer]:
    """A consumer in a thread, connected; stopped (checkpoint, acks) on leaving."""
    consumer = TelemetryConsumer(settings, lambda: Detector(config), forwarder, store)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    wait_for(consumer.ready.is_set, 30, "the consumer to connect")
    try:
        yield consumer
    finally:
        consumer.stop()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the consumer did not stop"


class Loopback:
    """An HTTP stand-in on 127.0.0.1 for what whyslow posts to. Its port is chosen before
    it starts, so a setting can point at it while it is still down; ``handler`` answers."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def start(self) -> Loopback:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler())
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing (the tests' output stays the tests')."""

    def log_message(self, format: str, *args: object) -> None:
        pass
