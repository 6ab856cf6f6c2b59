"""``/metrics`` in Prometheus text: requests and their latency per route, what the model
did (answers by grounding, cache hits, 503s, queue depth, tokens and generation time, from
which tokens/s is ``rate(tokens) / rate(generation seconds)``), and notifications (posts
and failures per target, and how many wait)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.analyses import Analyses
from service.model.loader import ModelLoader
from service.notify import Notifier


class ModelCollector(Collector):
    def __init__(self, analyses: Analyses, loader: ModelLoader) -> None:
        self._analyses = analyses
        self._loader = loader

    def collect(self) -> Iterator[Metric]:
        answers = CounterMetricFamily(
            "whyslow_analyses", "Answers by how they were produced.", labels=["outcome"]
        )
        for outcome, count in self._analyses.outcomes.items():
            answers.add_metric([outcome], count)
        yield answers
        yield GaugeMetricFamily(
            "whyslow_model_queue",
            "Requests waiting for or using the model.",
            value=self._analyses.waiting,
        )
        runtime = self._loader.runtime
        yield GaugeMetricFamily(
            "whyslow_model_ready", "1 once the model is loaded.", value=int(runtime is not None)
        )
        if runtime is not None:
            tokens = CounterMetricFamily("whyslow_model_tokens", "Tokens.", labels=["kind"])
            for kind, count in runtime.tokens.items():
                tokens.add_metric([kind], count)
            yield tokens
            yield CounterMetricFamily(
                "whyslow_model_generation_seconds",
                "Time spent generating.",
                value=runtime.generating_s,
            )


class NotifyCollector(Collector):
    """Notifications by target: a failing target shows as failures rising while sent
    stays flat, and pending as what has not reached anyone yet (read at scrape time from
    the outbox, so it counts every replica's rows)."""

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier

    def collect(self) -> Iterator[Metric]:
        sender = self._notifier.sender
        if sender is None:  # no target set
            return
        sent = CounterMetricFamily(
            "whyslow_notifications_sent",
            "Notifications posted, re-sends included.",
            labels=["target"],
        )
        failures = CounterMetricFamily(
            "whyslow_notification_failures",
            "Posts that failed; each is tried again later.",
            labels=["target"],
        )
        for target, count in sender.sent.items():
            sent.add_metric([target], count)
        for target, count in sender.failures.items():
            failures.add_metric([target], count)
        yield sent
        yield failures
        try:
            pending = sender.pending()
        except Exception:  # the store unreachable: no sample rather than a failed scrape
            return
        yield GaugeMetricFamily(
            "whyslow_notifications_pending", "Notifications not delivered yet.", value=pending
        )


class RequestMetrics:
    """Counts each request by route template, method and status, and times it: a plain
    ASGI middleware (Starlette's ``BaseHTTPMiddleware`` runs every request through a task
    group and a memory stream, a millisecond of a cache hit here)."""

    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")  # bounded label values
            self.requests.labels(path, scope["method"], str(status)).inc()
            self.latency.labels(path).observe(time.perf_counter() - started)


def install_metrics(
    app: FastAPI, analyses: Analyses, loader: ModelLoader, notifier: Notifier
) -> None:
    registry = CollectorRegistry()
    registry.register(ModelCollector(analyses, loader))
    registry.register(NotifyCollector(notifier))
    requests = Counter(
        "whyslow_http_requests", "HTTP requests.", ["route", "method", "status"], registry=registry
    )
    latency = Histogram(
        "whyslow_http_request_seconds",
        "HTTP request latency.",
        ["route"],
        registry=registry,
        buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    )

    app.add_middleware(RequestMetrics, requests=requests, latency=latency)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
