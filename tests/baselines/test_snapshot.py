"""Baselines survive a restart: through the real store, and through a real consumer."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from baselines.consumer import TelemetryConsumer
from baselines.detect import Detector, DetectorConfig
from baselines.forward import Forwarder
from baselines.snapshot import SnapshotFormatError, checkpoint, decode, encode, restore
from baselines.store import SnapshotCorrupt, open_store
from baselines.synthetic import demo_incidents, last_full_week_start, telemetry
from service.contract import TELEMETRY_EVENT
from tests.baselines.conftest import Backend
from tests.helpers import declare, publish, running_consumer, wait_for

WEEK_START = last_full_week_start(datetime(2026, 11, 23, tzinfo=UTC))


def feed(detector: Detector, minutes: range) -> list:
    batches = list(telemetry(WEEK_START, demo_incidents(WEEK_START), minutes=minutes.stop))
    reports = []
    for events in batches[minutes.start :]:
        reports += detector.observe([TELEMETRY_EVENT.validate_python(e) for e in events])
    return reports + detector.flush()


def test_a_restored_detector_continues_exactly_like_one_that_never_stopped(
    backend: Backend,
) -> None:
    first_days, rest = range(0, 3 * 1440), range(3 * 1440, 7 * 1440)
    steady = Detector(DetectorConfig())
    feed(steady, first_days)
    expected = feed(steady, rest)

    before = Detector(DetectorConfig())
    feed(before, first_days)
    store = open_store(backend.url)
    store.save(checkpoint(before, before.take_changed()))
    store.close()
    after = Detector(DetectorConfig())
    store = open_store(backend.url)
    restore(after, store.load())
    store.close()
    resumed = feed(after, rest)

    assert [r.model_dump() for r in resumed] == [r.model_dump() for r in expected]
    assert len(expected) == 2
    for service in ("checkout", "exchange-api", "search"):
        a, b = steady.export(service), after.export(service)
        assert a[0].keys() == b[0].keys() and a[1].keys() == b[1].keys()
        for key in a[0]:
            for part, array in a[0][key].p95.state().items():
                np.testing.assert_array_equal(array, b[0][key].p95.state()[part], err_msg=part)


def test_bad_payloads_are_refused_with_the_reason() -> None:
    detector = Detector(DetectorConfig())
    feed(detector, range(0, 120))
    good = encode(*detector.export("checkout"))
    assert decode(good)[0].keys() == detector.export("checkout")[0].keys()
    with pytest.raises(SnapshotFormatError, match="not a baseline snapshot"):
        decode(b"definitely not an npz archive")
    with pytest.raises(SnapshotFormatError, match="service 'checkout'"):
        restore(Detector(DetectorConfig()), {"checkout": good[: len(good) // 2]})


@pytest.mark.slow
def test_a_restarted_consumer_resumes_from_its_checkpoint_and_refuses_a_corrupt_one(
    amqp_settings, backend: Backend
) -> None:
    settings = amqp_settings.model_copy(update={"baselines_url": backend.url})
    events = [e for batch in telemetry(WEEK_START, [], minutes=180) for e in batch]

    store = open_store(backend.url)
    forwarder = Forwarder(settings.service_url, 5).start()
    with running_consumer(settings, DetectorConfig(), forwarder, store) as consumer:
        publish(settings, [events])
        wait_for(
            lambda: consumer.detector.stats.spans + consumer.detector.stats.metrics == len(events),
            60,
            "the events to be applied",
        )
    store.close()
    learnt = consumer.detector.profile_p95("checkout", "POST /checkout").history
    # three night hours: windows of fewer than 10 spans are pooled, one value per pool
    assert learnt >= 30

    store = open_store(backend.url)
    with running_consumer(settings, DetectorConfig(), forwarder, store) as second:
        pass
    store.close()
    forwarder.close()
    assert second.detector.profile_p95("checkout", "POST /checkout").history == learnt
    assert second.detector.stats.spans + second.detector.stats.metrics == len(events)

    backend.sql(
        "UPDATE whyslow_baselines SET payload = %s WHERE service = %s", b"garbage", "checkout"
    )
    store = open_store(backend.url)
    consumer = TelemetryConsumer(
        settings, lambda: Detector(DetectorConfig()), Forwarder(settings.service_url, 5), store
    )
    with pytest.raises(SnapshotCorrupt, match="checkout"):
        consumer.run()
    store.close()
    rows = backend.sql("SELECT payload FROM whyslow_baselines WHERE service = %s", "checkout")
    assert rows[0][0] == b"garbage"  # refused, not reset


@pytest.mark.slow
def test_a_standby_consumer_takes_over_from_the_shared_store(
    amqp_settings, backend: Backend
) -> None:
    """Two consumers on one queue (single active consumer): the standby receives nothing
    while the first is active, never checkpoints, and when the first stops takes over
    from its checkpoint; every event is applied once across both."""
    settings = amqp_settings.model_copy(update={"baselines_url": backend.url})
    events = [e for batch in telemetry(WEEK_START, [], minutes=240) for e in batch]
    half = len(events) // 2
    declare(settings)
    forwarder = Forwarder(settings.service_url, 5).start()
    stores = [open_store(backend.url), open_store(backend.url)]
    first_half, second_half = events[:half], events[half:]
    with (
        running_consumer(settings, DetectorConfig(), forwarder, stores[0]) as first,
        running_consumer(settings, DetectorConfig(), forwarder, stores[1]) as standby,
    ):
        publish(settings, [first_half[i : i + 500] for i in range(0, len(first_half), 500)])
        wait_for(
            lambda: first.detector.stats.spans + first.detector.stats.metrics == half,
            60,
            "the first half",
        )
        assert standby.stats.messages == 0 and standby.stats.checkpoints == 0
        first.stop()
        wait_for(lambda: not first.ready.is_set(), 30, "the first consumer to stop")
        publish(settings, [second_half[i : i + 500] for i in range(0, len(second_half), 500)])
        wait_for(
            lambda: standby.detector.stats.spans + standby.detector.stats.metrics == len(events),
            60,
            "the standby to apply the rest on top of the first half",
        )
    forwarder.close()
    for store in stores:
        store.close()
    assert first.detector.profile_p95("checkout", "POST /checkout").history < (
        standby.detector.profile_p95("checkout", "POST /checkout").history
    )
