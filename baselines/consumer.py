"""The RabbitMQ consumer: parse -> detector -> forwarder, acking only after the event is
applied, and dead-lettering (with the reason in a header) what cannot be parsed."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from baselines.detect import Detector
from baselines.forward import Forwarder
from baselines.ingest.json_events import MalformedMessage, parse_json_events
from baselines.settings import Settings
from baselines.snapshot import checkpoint, restore
from baselines.store import BaselineStore
from baselines.topology import ERROR_HEADER, ROUTING_KEY_HEADER, declare_topology

log = logging.getLogger(__name__)

JSON_TYPES = {"", "application/json", "text/json"}
STATUS_EVERY_S = 30.0


@dataclass
class ConsumerStats:
    messages: int = 0
    dead_lettered: int = 0
    items_rejected: int = 0


class TelemetryConsumer:
    """Run with ``run()`` (blocks); ``stop()`` may be called from any thread or a signal."""

    def __init__(
        self,
        settings: Settings,
        detector: Detector,
        forwarder: Forwarder,
        store: BaselineStore | None = None,
    ) -> None:
        self._settings = settings
        self._detector = detector
        self._forwarder = forwarder
        self._store = store
        self._stopping = threading.Event()
        self.stats = ConsumerStats()
        self.ready = threading.Event()

    def run(self) -> None:
        """Restore the checkpointed baselines, consume until stopped (reconnecting with
        backoff when the broker goes away), then checkpoint.

        A corrupt or foreign snapshot raises (StoreError, SnapshotFormatError): starting
        from empty baselines would silently throw weeks of learning away."""
        if self._store is not None:
            restore(self._detector, self._store.load())
        try:
            self._run()
        finally:
            self.checkpoint()

    def checkpoint(self) -> int:
        """Save the baselines that changed since the last checkpoint; returns how many."""
        if self._store is None:
            return 0
        changed = self._detector.take_changed()
        if changed:
            self._store.save(checkpoint(self._detector, changed))
        return len(changed)

    def _run(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                self._consume()
                delay = 0.5
            except pika.exceptions.AMQPConnectionError as exc:
                if self._stopping.is_set():
                    break
                wait = min(delay, 30.0) * random.uniform(0.5, 1.5)
                log.warning("broker connection lost (%r); reconnecting in %.1fs", exc, wait)
                self._stopping.wait(wait)
                delay *= 2

    def stop(self) -> None:
        """Ask the loop to finish the message in hand and close; safe from any thread."""
        self._stopping.set()

    def _consume(self) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(self._settings.amqp_url))
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            declare_topology(channel, self._settings)
            channel.basic_qos(prefetch_count=self._settings.prefetch)
            channel.basic_consume(self._settings.queue, self._on_message)
            self.ready.set()
            log.info("consuming %s", self._settings.queue)
            last_report = last_checkpoint = time.monotonic()
            while not self._stopping.is_set() and connection.is_open:
                connection.process_data_events(time_limit=0.5)
                if time.monotonic() - last_report >= STATUS_EVERY_S:
                    last_report = time.monotonic()
                    self._log_status()
                if time.monotonic() - last_checkpoint >= self._settings.checkpoint_seconds:
                    last_checkpoint = time.monotonic()
                    self.checkpoint()
        finally:
            self.ready.clear()
            if connection.is_open:
                connection.close()

    def _log_status(self) -> None:
        d, f = self._detector.stats, self._forwarder.stats
        series, size = self._detector.memory()
        log.info(
            f"{self.stats.messages} messages: {d.spans} spans and {d.metrics} metrics applied, "
            f"{d.late} late, {d.future} future, {d.overflow} over the series cap, "
            f"{self.stats.dead_lettered} dead-lettered; {d.windows_closed} windows, "
            f"{d.flagged} flagged, {f.forwarded} forwarded, {f.failed} failed; "
            f"{series} series in {size / 1e6:.1f} MB ({size / max(series, 1) / 1024:.1f} KB each)"
        )

    def _on_message(
        self,
        channel: BlockingChannel,
        method: Basic.Deliver,
        properties: BasicProperties,
        body: bytes,
    ) -> None:
        self.stats.messages += 1
        content_type = (properties.content_type or "").split(";")[0].strip().lower()
        try:
            if content_type not in JSON_TYPES:
                raise MalformedMessage(f"unsupported content type {content_type!r}")
            batch = parse_json_events(body)
        except MalformedMessage as exc:
            self._dead_letter(channel, method, properties, body, str(exc))
            channel.basic_ack(method.delivery_tag)
            return
        if batch.rejected:
            self.stats.items_rejected += len(batch.rejected)
            rejected_body = json.dumps([item for item, _ in batch.rejected]).encode()
            reason = "; ".join(reason for _, reason in batch.rejected)
            self._dead_letter(channel, method, properties, rejected_body, reason)
        for report in self._detector.observe(batch.events):
            self._forwarder.submit(report)
        channel.basic_ack(method.delivery_tag)

    def _dead_letter(
        self,
        channel: BlockingChannel,
        method: Basic.Deliver,
        properties: BasicProperties,
        body: bytes,
        reason: str,
    ) -> None:
        """Publish to the DLX with the reason; confirmed before the original is acked."""
        log.warning("dead-lettering a message from %r: %s", method.routing_key, reason)
        headers = dict(properties.headers or {})
        headers[ERROR_HEADER] = reason[:1000]
        headers[ROUTING_KEY_HEADER] = method.routing_key
        channel.basic_publish(
            self._settings.dead_letter_exchange,
            self._settings.queue,
            body,
            BasicProperties(
                content_type=properties.content_type,
                headers=headers,
                delivery_mode=pika.DeliveryMode.Persistent,
                timestamp=int(time.time()),
            ),
        )
        self.stats.dead_lettered += 1
