"""The RabbitMQ objects whyslow relies on, declared idempotently by every party."""

from __future__ import annotations

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from baselines.settings import Settings

ERROR_HEADER = "x-whyslow-error"
ROUTING_KEY_HEADER = "x-whyslow-routing-key"


def declare_topology(channel: BlockingChannel, settings: Settings) -> None:
    """Topic exchange -> durable telemetry queue; rejected messages -> DLX -> DLQ."""
    channel.exchange_declare(settings.exchange, exchange_type="topic", durable=True)
    channel.exchange_declare(settings.dead_letter_exchange, exchange_type="fanout", durable=True)
    channel.queue_declare(settings.dead_letter_queue, durable=True)
    channel.queue_bind(settings.dead_letter_queue, settings.dead_letter_exchange)
    channel.queue_declare(
        settings.queue,
        durable=True,
        arguments={"x-dead-letter-exchange": settings.dead_letter_exchange},
    )
    channel.queue_bind(settings.queue, settings.exchange, routing_key="#")


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
