"""Scale-out through the real broker: the router splits by service, two shard consumers."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pika

from baselines.detect import DetectorConfig
from baselines.forward import Forwarder
from baselines.router import Router, shard_of
from baselines.store import open_store
from baselines.synthetic import last_full_week_start, telemetry
from tests.helpers import declare, publish, running_consumer, wait_for

SERVICES = ("checkout", "exchange-api", "search")


def test_each_service_lives_in_one_shard_and_every_event_is_applied_once(
    amqp_settings, tmp_path
) -> None:
    start = last_full_week_start(datetime.now(UTC))
    events = [e for minute in telemetry(start, [], minutes=180) for e in minute]
    settings = amqp_settings.model_copy(update={"store_url": f"sqlite:///{tmp_path / 's.db'}"})
    declare(settings)
    router = Router(settings, shards=2)
    thread = threading.Thread(target=router.run, daemon=True)
    thread.start()
    wait_for(router.ready.is_set, 30, "the router")
    forwarder = Forwarder(settings.service_url, 5).start()
    shard_settings = [settings.model_copy(update={"shard": k}) for k in (0, 1)]
    stores = [open_store(s.resolved_store_url()) for s in shard_settings]
    try:
        with (
            running_consumer(shard_settings[0], DetectorConfig(), forwarder, stores[0]) as zero,
            running_consumer(shard_settings[1], DetectorConfig(), forwarder, stores[1]) as one,
        ):
            publish(settings, [events[i : i + 300] for i in range(0, len(events), 300)])

            def applied(consumer) -> int:
                return consumer.detector.stats.spans + consumer.detector.stats.metrics

            wait_for(lambda: applied(zero) + applied(one) == len(events), 60, "all events")

            # the router dies after publishing, before acknowledging: it sends a copy again
            connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
            channel = connection.channel()
            channel.confirm_delivery()
            copy_of = f"{'0' * 32}:0"
            for _ in range(2):
                channel.basic_publish(
                    settings.shard_exchange,
                    "0",
                    b'[{"service": "checkout", '
                    b'"operation": "POST /checkout", "duration_ms": 1, "timestamp": 0}]',
                    pika.BasicProperties(content_type="application/json", message_id=copy_of),
                )
            connection.close()
            wait_for(lambda: zero.stats.redelivered_skipped == 1, 30, "the copy to be dropped")
            total = applied(zero) + applied(one) + zero.detector.stats.late
            assert total == len(events) + 1  # the first of the two counted (late), not both
    finally:
        router.stop()
        thread.join(timeout=10)
        forwarder.close()
        for store in stores:
            store.close()
    owners = {
        service: [k for k, c in enumerate((zero, one)) if c.detector.export(service)[0]]
        for service in SERVICES
    }
    assert owners == {service: [shard_of(service, 2)] for service in SERVICES}
    assert router.stats.events == len(events) and router.stats.dead_lettered == 0
