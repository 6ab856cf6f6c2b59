"""Delivering AnomalyReports to the service, off the consumer's thread, until delivered.

The analysis takes seconds of model time; doing it inside the AMQP callback would stall
consumption and starve the connection's heartbeats, so reports wait in an outbox served by
a worker thread. While the service is down or overloaded the worker retries with capped,
jittered backoff, forever: the outbox is part of the consumer's checkpoint, so a report
survives restarts too. Report ids are stable and the service treats a repeated id as the
same request, so a report delivered twice (a crash between delivery and checkpoint) is
analysed once. A report the service refuses (4xx) is logged and counted, not retried,
except a 401 or 403: that refuses the consumer's key (WHYSLOW_SERVICE_API_KEY), not the
report, so delivery stops and is retried with the same backoff until the key is accepted;
the reports wait in the outbox. The W3C trace context of the message that produced a report
travels with it.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from service.contract import Analysis, AnomalyReport

log = logging.getLogger(__name__)
tracer = trace.get_tracer("whyslow.forward")

API_KEY_HEADER = "X-API-Key"
"""How the key travels: the service's middleware reads it, and so does Kong's key-auth."""
KEY_REFUSED = frozenset({401, 403})


@dataclass
class ForwardStats:
    submitted: int = 0
    forwarded: int = 0
    retried: int = 0
    refused: int = 0
    """Reports the service refused for good (4xx but 401/403): dropped."""
    key_refused: int = 0
    """Delivery attempts refused for the key (401/403): retried, nothing dropped."""


@dataclass(frozen=True)
class Pending:
    report: AnomalyReport
    carrier: dict[str, str]
    """W3C trace context (traceparent, tracestate) of the message that produced it."""


class Forwarder:
    def __init__(
        self,
        service_url: str,
        timeout_s: float,
        on_analysis: Callable[[AnomalyReport, Analysis], None] | None = None,
        backoff_s: float = 0.5,
        max_backoff_s: float = 15.0,
        api_key: str | None = None,
    ) -> None:
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        self._client = httpx.Client(base_url=service_url, timeout=timeout_s, headers=headers)
        self._has_key = bool(api_key)
        self._on_analysis = on_analysis
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._outbox: dict[str, Pending] = {}
        self._order: list[str] = []
        self._wake = threading.Condition()
        self._closing = False
        self.changes = 0
        """Counts submissions and deliveries: a consumer checkpoints when it moves."""
        self._thread = threading.Thread(target=self._run, name="whyslow-forwarder", daemon=True)
        self.stats = ForwardStats()
        self.key_refused = False
        """The service's last answer refused the key; delivery waits until it accepts it."""

    def start(self) -> Forwarder:
        self._thread.start()
        return self

    def submit(self, report: AnomalyReport, carrier: dict[str, str] | None = None) -> None:
        """Queue a report; the current trace context is kept with it unless one is given."""
        if carrier is None:
            carrier = {}
            propagate.inject(carrier)
        key = report.anomaly_id
        with self._wake:
            if key not in self._outbox:
                self._order.append(key)
                self.stats.submitted += 1
            self._outbox[key] = Pending(report, carrier)
            self.changes += 1
            self._wake.notify()

    def pending(self) -> list[Pending]:
        """What is not delivered yet, oldest first (for a checkpoint)."""
        with self._wake:
            return [self._outbox[key] for key in self._order]

    def idle(self) -> bool:
        with self._wake:
            return not self._outbox

    def close(self, drain_timeout_s: float = 0.0) -> None:
        """Stop the worker, after up to ``drain_timeout_s`` of delivering what is queued.
        What stays undelivered is in ``pending()``, which the consumer checkpoints."""
        with self._wake:
            self._wake.wait_for(lambda: not self._outbox, timeout=drain_timeout_s)
            self._closing = True
            self._wake.notify_all()
        self._thread.join(timeout=150)
        self._client.close()

    def _run(self) -> None:
        attempt = 0
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._outbox or self._closing)
                if self._closing:
                    return
                pending = self._outbox[self._order[0]]
            done = self._deliver(pending)
            with self._wake:
                if done:
                    key = pending.report.anomaly_id
                    if self._outbox.get(key) is pending:
                        del self._outbox[key]
                        self._order.remove(key)
                        self.changes += 1
                    self._wake.notify_all()
                    attempt = 0
                    continue
                attempt += 1
                self.stats.retried += 1
                delay = min(self._max_backoff_s, self._backoff_s * 2 ** min(attempt, 10))
                self._wake.wait_for(lambda: self._closing, timeout=delay * random.uniform(0.5, 1))

    def _deliver(self, pending: Pending) -> bool:
        """True when the report is done with (analysed, or refused for good)."""
        report = pending.report
        token = otel_context.attach(propagate.extract(pending.carrier))
        try:
            with tracer.start_as_current_span("POST /v1/analyze", kind=trace.SpanKind.CLIENT):
                headers = {"content-type": "application/json"}
                propagate.inject(headers)
                response = self._client.post(
                    "/v1/analyze",
                    content=report.model_dump_json(exclude_none=True),
                    headers=headers,
                )
        except httpx.TransportError as exc:
            log.warning("report %s: service unreachable (%r); will retry", report.id, exc)
            return False
        finally:
            otel_context.detach(token)
        if response.status_code in KEY_REFUSED:
            self.stats.key_refused += 1
            self._key_refused(response.status_code)
            return False
        if response.status_code < 500:  # past the key check (a 5xx may be a proxy's)
            self._key_accepted()
        if response.status_code >= 500 or response.status_code == 429:
            log.warning("report %s: HTTP %d; will retry", report.id, response.status_code)
            return False
        if response.status_code >= 400:
            self.stats.refused += 1
            log.error("report %s refused by the service: %s", report.id, response.text[:500])
            return True
        self.stats.forwarded += 1
        if self._on_analysis is not None:
            self._on_analysis(report, Analysis.model_validate_json(response.content))
        return True

    def _key_refused(self, status: int) -> None:
        """Logged once per change of state, not per retry: every report would say it."""
        if self.key_refused:
            return
        self.key_refused = True
        with self._wake:
            waiting = len(self._outbox)
        log.error(
            "the service refused the key (%d): set WHYSLOW_SERVICE_API_KEY (%s) to one of the "
            "service's WHYSLOW_API_KEYS; delivery is retried, %d reports wait in the outbox",
            status,
            "its value is not accepted" if self._has_key else "unset here",
            waiting,
        )

    def _key_accepted(self) -> None:
        if self.key_refused:
            self.key_refused = False
            log.warning("the service accepts the key again: delivering the outbox")
