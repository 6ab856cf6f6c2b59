"""Delivering AnomalyReports to the service, off the consumer's thread.

The analysis takes seconds of model time; doing it inside the AMQP callback would stall
consumption and starve the connection's heartbeats, so reports go through a queue to a
worker thread that POSTs them with retries.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from service.contract import Analysis, AnomalyReport

log = logging.getLogger(__name__)


@dataclass
class ForwardStats:
    submitted: int = 0
    forwarded: int = 0
    retried: int = 0
    failed: int = 0


class Forwarder:
    def __init__(
        self,
        service_url: str,
        timeout_s: float,
        on_analysis: Callable[[AnomalyReport, Analysis], None] | None = None,
        attempts: int = 5,
        backoff_s: float = 0.5,
    ) -> None:
        self._client = httpx.Client(base_url=service_url, timeout=timeout_s)
        self._on_analysis = on_analysis
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._pending: queue.Queue[AnomalyReport | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="whyslow-forwarder", daemon=True)
        self.stats = ForwardStats()

    def start(self) -> Forwarder:
        self._thread.start()
        return self

    def submit(self, report: AnomalyReport) -> None:
        self.stats.submitted += 1
        self._pending.put(report)

    def idle(self) -> bool:
        """True when every submitted report has been delivered or given up on."""
        return self.stats.submitted == self.stats.forwarded + self.stats.failed

    def close(self) -> None:
        """Deliver what is queued, then stop."""
        self._pending.put(None)
        self._thread.join()
        self._client.close()

    def _run(self) -> None:
        while (report := self._pending.get()) is not None:
            analysis = self._deliver(report)
            if analysis is not None and self._on_analysis is not None:
                self._on_analysis(report, analysis)

    def _deliver(self, report: AnomalyReport) -> Analysis | None:
        body = report.model_dump_json(exclude_none=True)
        headers = {"content-type": "application/json"}
        for attempt in range(1, self._attempts + 1):
            try:
                response = self._client.post("/v1/analyze", content=body, headers=headers)
                if response.status_code < 500 and response.status_code != 429:
                    response.raise_for_status()
                    self.stats.forwarded += 1
                    return Analysis.model_validate_json(response.content)
                reason = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                reason = repr(exc)
            except (httpx.HTTPStatusError, ValueError) as exc:
                log.error("report %s refused by the service: %s", report.id, exc)
                break
            if attempt < self._attempts:
                self.stats.retried += 1
                log.warning("report %s: %s; retry %d", report.id, reason, attempt)
                time.sleep(self._backoff_s * 2 ** (attempt - 1))
        else:
            log.error("report %s undelivered after %d attempts", report.id, self._attempts)
        self.stats.failed += 1
        return None
