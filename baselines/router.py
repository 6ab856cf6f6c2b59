"""Scale-out: split the ingest stream by service so each service's baseline lives in exactly
one consumer.

One Collector batch mixes services, so the broker alone cannot route by service. ``whyslow
route --shards N`` reads the ingest queue, parses each message once, and republishes each
shard's events as one JSON batch to the ``whyslow.shards`` direct exchange, routing key =
the shard (crc32 of the service name modulo N, so a service always lands in the same
shard). Each copy is confirmed before the original is acknowledged, and carries a
deterministic message id (the original's digest and the shard): if the router dies between
publishing and acknowledging, the copies it sends again are dropped by the shard's consumer,
which remembers the ids it applied. ``whyslow consume --shard K`` reads shard K's queue
(quorum, single active consumer, standbys take over from the shared store).

Changing N moves services between shards; their baselines follow through the shared store
(a consumer loads a service's row from it when it starts owning it, at its next restart).
"""

from __future__ import annotations

import json
import logging
import threading
import zlib
from dataclasses import dataclass

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from baselines.consumer import message_digest, parse_or_dead_letter
from baselines.settings import Settings
from baselines.topology import (
    declare_shard,
    declare_topology,
    run_reconnecting,
)

log = logging.getLogger(__name__)


def shard_of(service: str, shards: int) -> int:
    return zlib.crc32(service.encode()) % shards


@dataclass
class RouterStats:
    messages: int = 0
    events: int = 0
    published: int = 0
    dead_lettered: int = 0


class Router:
    def __init__(self, settings: Settings, shards: int) -> None:
        if shards < 1:
            raise ValueError("shards must be at least 1")
        self._settings = settings
        self._shards = shards
        self._stopping = threading.Event()
        self.stats = RouterStats()
        self.ready = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        run_reconnecting(self._route, self._stopping)

    def _route(self) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(self._settings.amqp_url))
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            declare_topology(channel, self._settings)
            for shard in range(self._shards):
                declare_shard(channel, self._settings, shard)
            channel.basic_qos(prefetch_count=self._settings.prefetch)
            channel.basic_consume(self._settings.queue, self._on_message)
            self.ready.set()
            log.info("routing %s to %d shards", self._settings.queue, self._shards)
            while not self._stopping.is_set() and connection.is_open:
                connection.process_data_events(time_limit=0.2)
        finally:
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
        digest = message_digest(method.routing_key, body)
        batch, dead = parse_or_dead_letter(
            channel, self._settings, method, properties, body, digest
        )
        self.stats.dead_lettered += dead
        if batch is None:
            channel.basic_ack(method.delivery_tag)
            return
        by_shard: dict[int, list[dict[str, object]]] = {}
        for event in batch.events:
            by_shard.setdefault(shard_of(event.service, self._shards), []).append(
                event.model_dump(mode="json", exclude_none=True)
            )
        for shard, events in sorted(by_shard.items()):
            channel.basic_publish(
                self._settings.shard_exchange,
                str(shard),
                json.dumps(events).encode(),
                BasicProperties(
                    content_type="application/json",
                    delivery_mode=pika.DeliveryMode.Persistent,
                    message_id=f"{digest}:{shard}",
                    headers=properties.headers,  # the producer's trace context goes along
                ),
            )
            self.stats.published += 1
        self.stats.events += len(batch.events)
        channel.basic_ack(method.delivery_tag)
