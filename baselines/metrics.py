"""The consumer's and the router's numbers in Prometheus text on ``/metrics``: read from
their own counters at scrape time, so nothing is counted twice. Rates (events/s) are
``rate()`` of the counters. A consumer's counters come from the checkpoint after a restart,
so they continue; a rollback to the last checkpoint after a broker failure can step them
back, which Prometheus reads as a reset. The router's start from zero with its process."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from baselines.consumer import TelemetryConsumer
    from baselines.router import Router

log = logging.getLogger(__name__)


class ConsumerCollector(Collector):
    def __init__(self, consumer: TelemetryConsumer) -> None:
        self._consumer = consumer

    def collect(self) -> Iterator[Metric]:
        consumer = self._consumer
        c, d = consumer.stats, consumer.detector.stats
        f = consumer.forwarder.stats

        def counter(name: str, text: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"whyslow_{name}", text, value=value)

        yield counter("consumer_messages", "Messages received.", c.messages)
        applied = CounterMetricFamily(
            "whyslow_consumer_events_applied", "Events applied to baselines.", labels=["kind"]
        )
        applied.add_metric(["span"], d.spans)
        applied.add_metric(["metric"], d.metrics)
        applied.add_metric(["log"], d.logs)
        applied.add_metric(["span_histogram"], d.histograms)
        yield applied
        dropped = CounterMetricFamily(
            "whyslow_consumer_events_not_applied",
            "Events counted and not applied.",
            labels=["reason"],
        )
        for reason, value in (
            ("late", d.late),
            ("future", d.future),
            ("overflow", d.overflow),
            ("unlinked", d.unlinked),
        ):
            dropped.add_metric([reason], value)
        yield dropped
        yield counter(
            "consumer_incidents_dropped",
            "Signals that would have opened an incident past the cap of open incidents.",
            d.incidents_dropped,
        )
        yield counter("consumer_dead_lettered", "Messages sent to the DLQ.", c.dead_lettered)
        yield counter(
            "consumer_redelivered_skipped",
            "Redelivered messages already applied.",
            c.redelivered_skipped,
        )
        yield counter("consumer_checkpoints", "Checkpoints committed.", c.checkpoints)
        yield counter("consumer_store_errors", "Checkpoints that failed (retried).", c.store_errors)
        yield counter("consumer_windows_closed", "Windows judged.", d.windows_closed)
        yield counter(
            "consumer_windows_learning",
            "Windows judged in the learning period (WHYSLOW_LEARN_MINUTES): none alerts.",
            d.windows_learning,
        )
        yield counter("consumer_flagged", "Anomalies flagged.", d.flagged)
        yield counter("forwarder_forwarded", "Reports analysed by the service.", f.forwarded)
        yield counter("forwarder_retries", "Delivery attempts that will be retried.", f.retried)
        yield counter(
            "forwarder_refused",
            "Reports the service refused (4xx but 401/403): dropped.",
            f.refused,
        )
        yield counter(
            "forwarder_key_refused",
            "Deliveries the service refused for the API key (401/403): retried, not dropped.",
            f.key_refused,
        )
        series, size = consumer.detector.memory()
        for name, text, value in (
            (
                "forwarder_outbox",
                "Reports waiting for delivery.",
                len(consumer.forwarder.pending()),
            ),
            (
                "forwarder_blocked_by_key",
                "1 while the service refuses the consumer's key (set WHYSLOW_SERVICE_API_KEY).",
                int(consumer.forwarder.key_refused),
            ),
            ("consumer_lag_messages", "Messages ready in the queue.", consumer.lag),
            (
                "consumer_active",
                "1 while this consumer is the queue's active one.",
                int(consumer.active),
            ),
            ("consumer_series", "Series with a baseline.", series),
            ("consumer_baseline_bytes", "Memory held by the baselines.", size),
        ):
            yield GaugeMetricFamily(f"whyslow_{name}", text, value=value)


class RouterCollector(Collector):
    def __init__(self, router: Router) -> None:
        self._router = router

    def collect(self) -> Iterator[Metric]:
        router, s = self._router, self._router.stats
        for name, text, value in (
            ("router_messages", "Messages taken from the ingest queue.", s.messages),
            ("router_copies", "Parts published to the shard queues.", s.published),
            (
                "router_dead_lettered",
                "Messages it could not split, sent to the DLQ.",
                s.dead_lettered,
            ),
        ):
            yield CounterMetricFamily(f"whyslow_{name}", text, value=value)
        for name, text, value in (
            ("router_lag_messages", "Messages ready in the ingest queue.", router.lag),
            (
                "router_active",
                "1 while this router is the ingest queue's active one.",
                int(router.active),
            ),
        ):
            yield GaugeMetricFamily(f"whyslow_{name}", text, value=value)


def serve_metrics(collector: Collector, port: int, host: str = "0.0.0.0") -> bool:
    """Serve ``/metrics`` from a daemon thread for the life of the process; a port in use
    is a warning (a second consumer on the host), not a reason to stop consuming."""
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        start_http_server(port, host, registry=registry)
    except OSError as exc:
        log.warning(
            "no /metrics: cannot listen on %s:%d (%s); set WHYSLOW_METRICS_PORT", host, port, exc
        )
        return False
    return True
