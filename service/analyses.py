"""Each anomaly is analysed once: a repeated id (a retried POST, a consumer that restarted
between delivery and checkpoint, an alert storm) gets the stored analysis, marked
``cached``; a request for an id being analysed right now waits for that analysis instead
of starting a second one."""

from __future__ import annotations

import logging
import threading
import time

from opentelemetry import trace

from service.analyze import Analyzer
from service.contract import Analysis, AnomalyReport
from service.store import AnalysisStore

log = logging.getLogger(__name__)
tracer = trace.get_tracer("whyslow.service")


class Analyses:
    def __init__(self, store: AnalysisStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._in_flight: dict[str, threading.Event] = {}

    def analyze(self, report: AnomalyReport, analyzer: Analyzer) -> Analysis:
        key = report.anomaly_id
        while True:
            started = time.perf_counter()
            stored = self._store.get(key)
            if stored is not None:
                elapsed = round((time.perf_counter() - started) * 1000, 1)
                return stored.model_copy(update={"cached": True, "latency_ms": elapsed})
            with self._lock:
                running = self._in_flight.get(key)
                if running is None:
                    self._in_flight[key] = threading.Event()
                    break
            running.wait()
        try:
            with tracer.start_as_current_span("whyslow.analysis") as span:
                span.set_attribute("whyslow.anomaly_id", key)
                span.set_attribute("whyslow.service", report.service)
                analysis = analyzer.analyze(report)
                span.set_attribute("whyslow.probable_cause", analysis.probable_cause.value)
            self._store.put(report, analysis)
            log.info(
                "analysed %s (%s %s) in %.0f ms: %s",
                key,
                report.service,
                report.operation,
                analysis.latency_ms,
                analysis.probable_cause.value,
            )
            return analysis
        finally:
            with self._lock:
                self._in_flight.pop(key).set()
