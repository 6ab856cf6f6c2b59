"""The RabbitMQ objects whyslow relies on, declared idempotently by every party."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from baselines.settings import Settings, shard_queue

log = logging.getLogger(__name__)

ERROR_HEADER = "x-whyslow-error"
ROUTING_KEY_HEADER = "x-whyslow-routing-key"


def declare_topology(channel: BlockingChannel, settings: Settings) -> None:
    """Topic exchange -> durable telemetry queue (quorum, single active consumer by
    default); unparseable messages -> DLX -> DLQ. Re-declaring an existing queue with other
    arguments is refused by the broker (PRECONDITION_FAILED): delete it or set
    WHYSLOW_QUEUE_TYPE to what it is."""
    channel.exchange_declare(settings.exchange, exchange_type="topic", durable=True)
    channel.exchange_declare(settings.dead_letter_exchange, exchange_type="fanout", durable=True)
    channel.queue_declare(settings.dead_letter_queue, durable=True)
    channel.queue_bind(settings.dead_letter_queue, settings.dead_letter_exchange)
    channel.queue_declare(settings.queue, durable=True, arguments=_queue_arguments(settings))
    channel.queue_bind(settings.queue, settings.exchange, routing_key="#")
    if settings.shard is not None:
        declare_shard(channel, settings, settings.shard)


def declare_shard(channel: BlockingChannel, settings: Settings, shard: int) -> str:
    """A shard's queue, bound to the shard exchange by the shard's number; returns it."""
    channel.exchange_declare(settings.shard_exchange, exchange_type="direct", durable=True)
    queue = shard_queue(settings.queue, shard)
    channel.queue_declare(queue, durable=True, arguments=_queue_arguments(settings))
    channel.queue_bind(queue, settings.shard_exchange, routing_key=str(shard))
    return queue


def delete_topology(channel: BlockingChannel, settings: Settings, shards: int) -> None:
    """Remove what ``declare_topology`` and ``declare_shard`` (for shards ``0..shards-1``)
    declared, messages included: for tests and benches that declared their own."""
    shard_queues = [shard_queue(settings.queue, k) for k in range(shards)]
    for queue in (settings.queue, settings.dead_letter_queue, *shard_queues):
        channel.queue_delete(queue)
    for exchange in (settings.exchange, settings.dead_letter_exchange, settings.shard_exchange):
        channel.exchange_delete(exchange)


def _queue_arguments(settings: Settings) -> dict[str, object]:
    arguments: dict[str, object] = {"x-dead-letter-exchange": settings.dead_letter_exchange}
    if settings.queue_type == "quorum":
        # replicated; a message redelivered this often (it crashes every consumer) is
        # dead-lettered by the broker instead of looping forever
        arguments |= {"x-queue-type": "quorum", "x-delivery-limit": settings.delivery_limit}
    # one consumer at a time per queue: others wait as hot standbys and take over, from the
    # shared store, when it goes away
    arguments["x-single-active-consumer"] = True
    return arguments


def broker_problem(amqp_url: str) -> str | None:
    """None when RabbitMQ answers, else a message saying what to do about it."""
    try:
        pika.BlockingConnection(pika.URLParameters(amqp_url)).close()
        return None
    except pika.exceptions.AMQPError as exc:
        return (
            f"RabbitMQ is not reachable at {amqp_url} ({exc!r}). Start it with "
            "`rabbitmq-server -detached` (Debian: `apt-get install rabbitmq-server`), or point "
            "WHYSLOW_AMQP_URL at a running broker."
        )


def dead_letter(
    channel: BlockingChannel,
    settings: Settings,
    routing_key: str,
    properties: pika.BasicProperties,
    body: bytes,
    reason: str,
    message_id: str,
    content_type: str | None = None,
) -> None:
    """Publish to the DLX with the reason in a header (confirmed on a confirm channel,
    committed with the rest on a transactional one); the message id lets a DLQ reader drop
    the duplicate a crash can cause."""
    log.warning("dead-lettering a message from %r: %s", routing_key, reason[:300])
    headers = dict(properties.headers or {})
    headers[ERROR_HEADER] = reason[:1000]
    headers[ROUTING_KEY_HEADER] = routing_key
    channel.basic_publish(
        settings.dead_letter_exchange,
        settings.queue,
        body,
        pika.BasicProperties(
            content_type=content_type or properties.content_type,
            headers=headers,
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=message_id,
            timestamp=int(time.time()),
        ),
    )


def run_reconnecting(
    step: Callable[[], None],
    stopping: threading.Event,
    transient: tuple[type[Exception], ...] = (),
) -> None:
    """Call ``step`` (one connection's life) until ``stopping`` is set, reconnecting after a
    lost broker, or one of the ``transient`` errors, with exponential backoff (0.5 s
    doubling to 30 s) and jitter."""
    retried: tuple[type[Exception], ...] = (pika.exceptions.AMQPConnectionError, *transient)
    delay = 0.5
    while not stopping.is_set():
        try:
            step()
            delay = 0.5
        except retried as exc:
            if stopping.is_set():
                break
            wait = min(delay, 30.0) * random.uniform(0.5, 1.5)
            log.warning("connection lost (%s); reconnecting in %.1fs", exc, wait)
            stopping.wait(wait)
            delay *= 2
