"""Scale-out: split the ingest stream by service so each service's baseline lives in exactly
one consumer.

One Collector batch mixes services, so the broker alone cannot route by service. ``whyslow
route --shards N`` reads the ingest queue and splits each message by service, in its own
format, to the ``whyslow.shards`` direct exchange, routing key = the shard (crc32 of the
service name modulo N, so a service always lands in the same shard): an OTLP request into
requests holding each shard's resources, a JSON batch into each shard's events. It never
reads a span (the shard's consumer does, once), so one router feeds many consumers. A copy
carries the original's headers, with the trace context of the router's span (which continues
the producer's trace), and the original's routing key, which names the OTLP signal, in its
``type``.

The copies and the acknowledgement of their original are committed in one transaction
(per batch of deliveries), and each copy carries a deterministic message id (the original's
digest and the shard): should a commit publish the copies and lose the acknowledgement (a
transaction spanning queues is not atomic), the copies sent again are dropped by the shard's
consumer, which remembers the ids it applied. A message that cannot be split (not JSON,
not an OTLP request of a known signal) goes to the dead-letter queue with the reason, as
the consumer would send it. ``whyslow consume --shard K`` reads shard K's queue (quorum,
single active consumer, standbys take over from the shared store).

Changing N moves services between shards; their baselines follow through the shared store
(a consumer loads a service's row from it when it starts owning it, at its next restart).
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
from opentelemetry import propagate, trace
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from baselines.consumer import (
    HEADERS,
    LAG_EVERY_S,
    content_type_of,
    delivered,
    message_digest,
    wire_format,
)
from baselines.ingest.json_events import MalformedMessage, split_json_events
from baselines.ingest.otlp import JSON_CONTENT_TYPE, split_otlp
from baselines.settings import Settings
from baselines.topology import dead_letter, declare_shard, declare_topology, run_reconnecting

log = logging.getLogger(__name__)
tracer = trace.get_tracer("whyslow.router")


def shard_of(service: str, shards: int) -> int:
    return zlib.crc32(service.encode()) % shards


def split_message(
    body: bytes, routing_key: str, content_type: str, shard: Callable[[str], int]
) -> dict[int, tuple[bytes, str]]:
    """shard -> (its part of the message, the part's content type)."""
    if wire_format(routing_key, content_type) == "otlp":
        return split_otlp(body, routing_key, content_type, shard)
    return {k: (part, JSON_CONTENT_TYPE) for k, part in split_json_events(body, shard).items()}


@dataclass
class RouterStats:
    messages: int = 0
    published: int = 0
    dead_lettered: int = 0


class Router:
    """Run with ``run()`` (blocks); ``stop()`` may be called from any thread or a signal."""

    def __init__(self, settings: Settings, shards: int) -> None:
        if shards < 1:
            raise ValueError("shards must be at least 1")
        self._settings = settings
        self._shards = shards
        self._stopping = threading.Event()
        self.stats = RouterStats()
        self.ready = threading.Event()
        self.lag = 0
        """Messages ready in the ingest queue, as last seen (for /metrics)."""
        self.active = False
        """Receiving messages: the ingest queue's single active consumer (a standby is not)."""
        self._uncommitted = 0
        """Messages routed in the open transaction: their copies are published and they are
        acknowledged, both only when it commits."""

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        run_reconnecting(self._route, self._stopping)

    def _route(self) -> None:
        """Copies and acknowledgements go in one transaction per batch of deliveries: a
        round trip (and the queues' fsync) per batch, not per copy as publisher confirms
        would cost. A router that dies before a commit has published and acknowledged
        nothing of the batch, which the broker delivers again."""
        self._uncommitted = 0
        self.active = False
        connection = pika.BlockingConnection(pika.URLParameters(self._settings.amqp_url))
        try:
            channel = connection.channel()
            declare_topology(channel, self._settings)
            for shard in range(self._shards):
                declare_shard(channel, self._settings, shard)
            channel.tx_select()
            channel.basic_qos(prefetch_count=self._settings.prefetch)
            channel.basic_consume(self._settings.queue, self._on_message)
            self.ready.set()
            log.info("routing %s to %d shards", self._settings.queue, self._shards)
            last_lag = -LAG_EVERY_S
            while not self._stopping.is_set() and connection.is_open:
                connection.process_data_events(time_limit=0.2)
                if self._uncommitted:
                    channel.tx_commit()
                    self._uncommitted = 0
                if time.monotonic() - last_lag >= LAG_EVERY_S:
                    last_lag = time.monotonic()
                    declared = channel.queue_declare(self._settings.queue, passive=True)
                    self.lag = declared.method.message_count
        finally:
            self.active = False
            self.ready.clear()
            if connection.is_open:
                connection.close()

    def _on_message(
        self,
        channel: BlockingChannel,
        method: Basic.Deliver,
        properties: BasicProperties,
        body: bytes,
    ) -> None:
        self.stats.messages += 1
        self._uncommitted += 1
        self.active = True
        headers = properties.headers or {}
        with tracer.start_as_current_span(
            f"{self._settings.queue} route",
            context=propagate.extract(headers, getter=HEADERS),
            kind=trace.SpanKind.CONSUMER,
        ) as span:
            span.set_attribute("messaging.system", "rabbitmq")
            span.set_attribute("messaging.destination.name", self._settings.queue)
            carrier = dict(headers)
            propagate.inject(carrier)  # the shard's consumer continues this span's trace
            self._split_and_publish(channel, method, properties, body, carrier)
        channel.basic_ack(delivered(method)[0])

    def _split_and_publish(
        self,
        channel: BlockingChannel,
        method: Basic.Deliver,
        properties: BasicProperties,
        body: bytes,
        headers: dict[str, Any],
    ) -> None:
        routing_key = delivered(method)[1]
        digest = message_digest(routing_key, body)
        try:
            parts = split_message(
                body,
                routing_key,
                content_type_of(properties),
                lambda service: shard_of(service, self._shards),
            )
        except MalformedMessage as exc:
            dead_letter(channel, self._settings, routing_key, properties, body, str(exc), digest)
            self.stats.dead_lettered += 1
            return
        for shard, (part, content_type) in sorted(parts.items()):
            channel.basic_publish(
                self._settings.shard_exchange,
                str(shard),
                part,
                BasicProperties(
                    content_type=content_type,
                    type=routing_key,
                    delivery_mode=pika.DeliveryMode.Persistent,
                    message_id=f"{digest}:{shard}",
                    headers=headers,
                ),
            )
            self.stats.published += 1
