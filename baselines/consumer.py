"""The RabbitMQ consumer: parse -> detector -> outbox, with every event applied exactly once.

With a store, a message is acknowledged only after a checkpoint that contains its effects
has committed: the services' baselines, the stream state (open windows, watermark,
counters), the outbox of undelivered reports and the digests of the messages applied since
the last acknowledgement, in one transaction. On every (re)connection the consumer rolls
back to the last checkpoint, so a message the broker redelivers after a crash or a broker
restart is applied once: either it was not in the checkpoint, or its digest is and it is
skipped. Without a store (the demo), each message is acknowledged once applied.

A message that cannot be parsed is published to the dead-letter exchange with the reason in
a header (confirmed; its message id is the original's digest, so a DLQ reader can drop a
duplicate after a crash), never dropped and never fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pika
import pika.exceptions
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from baselines.detect import Detector
from baselines.forward import Forwarder
from baselines.ingest.json_events import MalformedMessage, ParsedBatch, parse_json_events
from baselines.ingest.otlp import parse_otlp
from baselines.settings import Settings
from baselines.snapshot import (
    CONSUMER_KEY_PREFIX,
    RESERVED_PREFIX,
    ConsumerRecord,
    checkpoint,
    restore,
)
from baselines.store import BaselineStore, StoreUnavailable
from baselines.topology import dead_letter, declare_topology, run_reconnecting
from service.contract import AnomalyReport

log = logging.getLogger(__name__)
tracer = trace.get_tracer("whyslow.consumer")

JSON_TYPES = {"", "application/json", "text/json"}
STATUS_EVERY_S = 30.0
RECENT_IDS = 2000
"""Ids of the last messages applied, kept in the checkpoint to drop a duplicate: well over a
prefetch window, which bounds how far back a redelivery or a router's resend can be."""
LAG_EVERY_S = 5.0
STORE_RETRY_MAX_S = 30.0


@dataclass
class ConsumerStats:
    messages: int = 0
    dead_lettered: int = 0
    items_rejected: int = 0
    redelivered_skipped: int = 0
    checkpoints: int = 0
    store_errors: int = 0


class _HeaderGetter(Getter[Mapping[str, Any]]):
    """W3C context from AMQP headers, whose values pika may hand over as bytes."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            return None
        return [value.decode() if isinstance(value, bytes) else str(value)]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier)


HEADERS = _HeaderGetter()


def wire_format(routing_key: str, content_type: str) -> Literal["otlp", "json"]:
    """OTLP by routing key or protobuf content type, else JSON events (of a JSON type)."""
    if routing_key.startswith("otlp_") or content_type.endswith("protobuf"):
        return "otlp"
    if content_type not in JSON_TYPES:
        raise MalformedMessage(f"unsupported content type {content_type!r}")
    return "json"


def parse_message(body: bytes, routing_key: str, content_type: str) -> ParsedBatch:
    if wire_format(routing_key, content_type) == "otlp":
        return parse_otlp(body, routing_key, content_type)
    return parse_json_events(body)


def content_type_of(properties: BasicProperties) -> str:
    return (properties.content_type or "").split(";")[0].strip().lower()


def sent_routing_key(settings: Settings, method: Basic.Deliver, properties: BasicProperties) -> str:
    """The routing key the producer published with, which names an OTLP signal: a shard's
    copy, routed by its shard number, carries the original in its ``type``."""
    if settings.shard is not None and properties.type:
        return properties.type
    return delivered(method)[1]


def delivered(method: Basic.Deliver) -> tuple[int, str]:
    """A delivery's tag and routing key. The broker sets both on every delivery; pika types
    them optional because a method frame may be built without them."""
    if method.delivery_tag is None or method.routing_key is None:
        raise ValueError(f"a delivery without its tag or routing key: {method}")
    return method.delivery_tag, method.routing_key


def message_digest(routing_key: str, body: bytes) -> str:
    """A message's identity when its producer gave none (the dead letters' message id)."""
    return hashlib.sha256(routing_key.encode() + b"\0" + body).hexdigest()[:32]


def parse_or_dead_letter(
    channel: BlockingChannel,
    settings: Settings,
    method: Basic.Deliver,
    properties: BasicProperties,
    body: bytes,
    digest: str,
) -> tuple[ParsedBatch | None, int]:
    """(the message's usable events, dead letters sent). A message that cannot be parsed
    goes whole to the DLQ as it came (None); in a batch, the rejected items go there as a
    JSON list and the rest is returned."""
    routing_key = sent_routing_key(settings, method, properties)
    try:
        batch = parse_message(body, routing_key, content_type_of(properties))
    except MalformedMessage as exc:
        dead_letter(channel, settings, routing_key, properties, body, str(exc), digest)
        return None, 1
    if not batch.rejected:
        return batch, 0
    rejected = json.dumps([item for item, _ in batch.rejected], default=str).encode()
    reason = "; ".join(reason for _, reason in batch.rejected)
    dead_letter(
        channel,
        settings,
        routing_key,
        properties,
        rejected,
        reason,
        digest,
        "application/json",
    )
    return batch, 1


class TelemetryConsumer:
    """Run with ``run()`` (blocks); ``stop()`` may be called from any thread or a signal."""

    def __init__(
        self,
        settings: Settings,
        new_detector: Callable[[], Detector],
        forwarder: Forwarder,
        store: BaselineStore | None = None,
    ) -> None:
        self._settings = settings
        self._new_detector = new_detector
        self.detector = new_detector()
        self.forwarder = forwarder
        self._store = store
        self._queue = settings.consumed_queue()
        self._record_key = CONSUMER_KEY_PREFIX + self._queue
        self._stopping = threading.Event()
        self._unacked: int | None = None  # delivery tag of the newest unacknowledged message
        self._unacked_count = 0
        self._recent: deque[str] = deque(maxlen=RECENT_IDS)  # ids of applied messages
        self._recent_set: set[str] = set()
        self._services: set[str] = set()
        self._active = False  # restored and receiving; a standby never checkpoints
        self.lag = 0
        """Messages ready in the queue, as last seen (for /metrics)."""
        self.stats = ConsumerStats()
        self.ready = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> None:
        """Consume until stopped, reconnecting with backoff when the broker goes away.

        A corrupt or foreign snapshot raises (StoreError, SnapshotFormatError): starting
        from empty baselines would silently throw weeks of learning away. It is read once
        here, so a consumer refuses to start (even as a standby) rather than later."""
        self._restore()
        run_reconnecting(self._consume, self._stopping, transient=(StoreUnavailable,))

    @property
    def active(self) -> bool:
        """Receiving messages (the queue's single active consumer), restored."""
        return self._active

    def stop(self) -> None:
        """Finish the message in hand, checkpoint, acknowledge, close; safe from any thread."""
        self._stopping.set()

    def _consume(self) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(self._settings.amqp_url))
        self._active = False  # restore when the first message shows this consumer is active
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            declare_topology(channel, self._settings)
            channel.basic_qos(prefetch_count=self._settings.prefetch)
            if self._store is not None:
                # Fail here, before any delivery, while the store is away: the first
                # delivery restores from it, and a message returned after a failed restore
                # may come back behind later ones, whose windows would make it late.
                self._store.services()
            channel.basic_consume(self._queue, self._on_message)
            self.ready.set()
            log.info("consuming %s", self._queue)
            last_status = last_commit = last_lag = time.monotonic()
            outbox_seen = self.forwarder.changes
            retry_at, retry_wait = 0.0, 1.0  # after a failed checkpoint: when to try again
            while not self._stopping.is_set() and connection.is_open:
                connection.process_data_events(time_limit=0.2)
                now = time.monotonic()
                due = now - last_commit >= self._settings.checkpoint_seconds
                if now >= retry_at and (
                    (
                        self._unacked is not None
                        and (due or self._unacked_count >= self._settings.prefetch // 2)
                    )
                    or (due and self.forwarder.changes != outbox_seen)
                ):
                    outbox_seen = self.forwarder.changes
                    if not self._commit_or_hold(channel):
                        # at the prefetch limit the broker stops sending: the consumer
                        # waits for the store without losing a thing
                        retry_at = now + retry_wait
                        retry_wait = min(retry_wait * 2, STORE_RETRY_MAX_S)
                        continue
                    retry_wait = 1.0
                    last_commit = now
                if now - last_status >= STATUS_EVERY_S:
                    last_status = now
                    self._log_status()
                if now - last_lag >= LAG_EVERY_S:
                    last_lag = now
                    declared = channel.queue_declare(self._queue, passive=True)
                    self.lag = declared.method.message_count
            # a report delivered since the last commit must leave the checkpointed outbox,
            # or a restart sends it again
            if connection.is_open and (
                self._unacked is not None or self.forwarder.changes != outbox_seen
            ):
                self._commit_or_hold(channel)
        finally:
            self.ready.clear()
            if connection.is_open:
                connection.close()

    # ------------------------------------------------------------------ checkpoints

    def _restore(self) -> None:
        """Back to the last checkpoint: what was applied since is not acknowledged and
        comes again. Runs on the first delivery after every (re)connection."""
        self._unacked, self._unacked_count = None, 0
        if self._store is None:
            return  # no checkpoint to go back to: what was applied was acknowledged
        self.detector = self._new_detector()
        record_payload = self._store.load([self._record_key]).get(self._record_key)
        record = ConsumerRecord.decode(record_payload) if record_payload else None
        services = (
            record.services
            if record
            else [s for s in self._store.services() if not s.startswith(RESERVED_PREFIX)]
        )
        restore(self.detector, self._store.load(services))
        self._services = set(services)
        self._recent = deque(record.applied if record else [], maxlen=RECENT_IDS)
        self._recent_set = set(self._recent)
        if record is not None:
            self.detector.load_stream_state(record.stream)
            for report_json, carrier in record.outbox:
                self.forwarder.submit(AnomalyReport.model_validate_json(report_json), carrier)

    def checkpoint(self) -> None:
        """Save the changed baselines and this consumer's record, in one transaction."""
        if self._store is None or not self._active:
            return
        changed = self.detector.take_changed()
        self._services |= changed
        record = ConsumerRecord(
            stream=self.detector.stream_state(),
            outbox=[
                (p.report.model_dump_json(exclude_none=True), p.carrier)
                for p in self.forwarder.pending()
            ],
            applied=list(self._recent),
            services=sorted(self._services),
        )
        payloads = checkpoint(self.detector, changed)
        payloads[self._record_key] = record.encode()
        try:
            self._store.save(payloads)
        except StoreUnavailable:
            self.detector.mark_changed(changed)
            raise
        self.stats.checkpoints += 1

    def _commit_or_hold(self, channel: BlockingChannel) -> bool:
        """Commit; False when the store is away: nothing is acknowledged, so the messages
        stay with the broker (redelivered if this consumer stops before a commit works)."""
        try:
            self._commit(channel)
        except StoreUnavailable as exc:
            self.stats.store_errors += 1
            log.error(
                "checkpoint failed (%s): %d messages stay unacknowledged",
                exc,
                self._unacked_count,
            )
            return False
        return True

    def _commit(self, channel: BlockingChannel) -> None:
        self.checkpoint()
        if self._unacked is not None:
            channel.basic_ack(self._unacked, multiple=True)
        self._unacked, self._unacked_count = None, 0

    # ------------------------------------------------------------------ messages

    def _on_message(
        self,
        channel: BlockingChannel,
        method: Basic.Deliver,
        properties: BasicProperties,
        body: bytes,
    ) -> None:
        if not self._active:
            # With a single active consumer per queue, the first delivery is the moment
            # this consumer takes over: only now is the last checkpoint the right one.
            self._restore()
            self._active = True
        self.stats.messages += 1
        tag, routing_key = delivered(method)
        digest = message_digest(routing_key, body)
        headers = properties.headers or {}
        parent = propagate.extract(headers, getter=HEADERS)
        with tracer.start_as_current_span(
            f"{self._queue} process", context=parent, kind=trace.SpanKind.CONSUMER
        ) as span:
            span.set_attribute("messaging.system", "rabbitmq")
            span.set_attribute("messaging.destination.name", self._queue)
            key = properties.message_id or digest
            # A redelivery after a crash, or a copy the router sent twice (same id): applied
            # already if its id is among the recent ones the checkpoint restored.
            if key in self._recent_set and (method.redelivered or properties.message_id):
                self.stats.redelivered_skipped += 1
            else:
                self._apply(channel, method, properties, body, digest)
                if len(self._recent) == RECENT_IDS:
                    self._recent_set.discard(self._recent[0])
                self._recent.append(key)
                self._recent_set.add(key)
        if self._store is None:
            channel.basic_ack(tag)
        else:
            self._unacked = tag
            self._unacked_count += 1

    def _apply(
        self,
        channel: BlockingChannel,
        method: Basic.Deliver,
        properties: BasicProperties,
        body: bytes,
        digest: str,
    ) -> None:
        batch, dead = parse_or_dead_letter(
            channel, self._settings, method, properties, body, digest
        )
        self.stats.dead_lettered += dead
        if batch is None:
            return
        self.stats.items_rejected += len(batch.rejected)
        for report in self.detector.observe(batch.events):
            self.forwarder.submit(report)

    def _log_status(self) -> None:
        d, f = self.detector.stats, self.forwarder.stats
        series, size = self.detector.memory()
        log.info(
            f"{self.stats.messages} messages: {d.spans} spans, {d.metrics} metrics and "
            f"{d.logs} log records applied, "
            f"{d.late} late, {d.future} future, {d.overflow} over the series cap, "
            f"{self.stats.dead_lettered} dead-lettered, {self.stats.redelivered_skipped} "
            f"redelivered and skipped, {self.stats.checkpoints} checkpoints; "
            f"{d.windows_closed} windows ({d.windows_learning} learning), "
            f"{d.flagged} flagged, {f.forwarded} forwarded, {f.refused} refused, "
            f"{f.key_refused} refused for the key (retried); "
            f"{series} series in {size / 1e6:.1f} MB ({size / max(series, 1) / 1024:.1f} KB each)"
        )
