"""Turning a report into an Analysis, once, in bounded time, grounded, never a 500.

- Alert storms: a report with the fingerprint of one analysed less than ``cache_ttl_s``
  ago (same service, operation, tagged signals, evidence: the same situation, whatever the
  exact numbers) gets that diagnosis's decision (cause, actions) under its own id, marked
  ``cached``, in milliseconds, told in its own numbers: its severity and summary from its
  facts, the earlier explanation only where it holds for it too. A decision its facts rule
  out (a deploy the earlier report had and this one has not) is not reused.
- Once per id: a repeated id (a retried POST, a consumer that restarted between delivery
  and checkpoint, an alert storm) gets the stored analysis, marked ``cached``; a request
  for an id being analysed right now waits for that analysis instead of starting another.
- Bounded: requests queue for the one model; past ``queue_limit`` waiting, Overloaded (the
  route answers 503 with Retry-After) instead of an unbounded pile-up.
- In time: each request has a deadline; waiting or generating past it, or a model that
  failed to load or to answer, gives the rule engine's answer (``grounding: rules``). It is
  stored, so the feed lists every anomaly, and the next request for that id tries the model
  again and replaces it.
- Grounded: prose citing numbers the report does not contain, or saying of a signal what its
  numbers do not (``grounding.unsupported``), is generated again once (with sampling), then
  degraded to the rule engine's text for the model's cause.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from typing import Literal

from opentelemetry import trace

from service import rules
from service.analyze import Analyzer, ModelOutputError
from service.contract import Analysis, AnomalyReport, Diagnosis
from service.grounding import unsupported
from service.model.runtime import ModelBusy
from service.notify import Notifier
from service.prompt import derived_signals, settled
from service.store import AnalysisStore

log = logging.getLogger(__name__)
tracer = trace.get_tracer("whyslow.service")

Grounding = Literal["grounded", "regenerated", "degraded", "rules"]


MAX_FINGERPRINTS = 10_000


def fingerprint(report: AnomalyReport, adapter: str | None = None) -> str:
    """The situation, not the numbers: what the prompt tags, with the free text (and who
    asks: another adapter may see it otherwise), and where the report's incident starts
    and how it reaches the service (its root, the root's kind and the path; not its id,
    revision or scores): the same window blamed on another root is another diagnosis."""
    facts = [adapter or "", report.service, report.operation]
    facts += [f"{s.name}={s.tag.split()[-1]}" for s in derived_signals(report)]  # no ratio
    facts += sorted(report.evidence) + sorted(r.operation for r in report.related)
    if (incident := report.incident) is not None:
        root = incident.root_cause
        facts += ["incident", root.service if root else "", root.kind if root else ""]
        facts += [str(len(incident.path)), *incident.path]
    return hashlib.sha256("\x00".join(facts).encode()).hexdigest()


class Overloaded(RuntimeError):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"the model queue is full; retry in {retry_after_s}s")
        self.retry_after_s = retry_after_s


class Analyses:
    def __init__(
        self,
        store: AnalysisStore,
        queue_limit: int,
        timeout_s: float,
        cache_ttl_s: float,
        notifier: Notifier | None = None,
    ) -> None:
        self._store = store
        self._notifier = notifier
        self._cache_ttl_s = cache_ttl_s
        self._recent: OrderedDict[str, tuple[float, Analysis]] = OrderedDict()
        self._queue_limit = queue_limit
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._in_flight: dict[str, threading.Event] = {}
        self._waiting = 0
        self._typical_s = 3.0  # moving average of a model answer, for Retry-After
        self.outcomes: dict[str, int] = dict.fromkeys(
            ("grounded", "regenerated", "degraded", "rules", "cached", "overloaded"), 0
        )
        """Answers by how they were produced, since start (for /metrics)."""

    def analyze(
        self, report: AnomalyReport, analyzer: Analyzer | None, adapter: str | None = None
    ) -> Analysis:
        key = report.anomaly_id
        while True:
            started = time.perf_counter()
            stored = self._store.get(key)
            if stored is not None and (stored.grounding != "rules" or analyzer is None):
                self.outcomes["cached"] += 1
                elapsed = round((time.perf_counter() - started) * 1000, 1)
                return stored.model_copy(update={"cached": True, "latency_ms": elapsed})
            with self._lock:
                seen = self._recent.get(fingerprint(report, adapter))
                if seen is not None and time.monotonic() - seen[0] < self._cache_ttl_s:
                    note = analyzer.note(report.service) if analyzer else None
                    reused = self._reuse(report, seen[1], started, note)
                    if reused is not None:
                        self.outcomes["cached"] += 1
                        return reused
                running = self._in_flight.get(key)
                if running is None:
                    self._admit()
                    self._in_flight[key] = threading.Event()
                    break
            running.wait()
        try:
            return self._analyze(report, analyzer, started, adapter)
        finally:
            with self._lock:
                self._waiting -= 1
                self._in_flight.pop(key).set()

    def _reuse(
        self, report: AnomalyReport, earlier: Analysis, started: float, note: str | None
    ) -> Analysis | None:
        """``earlier``'s decision for ``report`` in ``report``'s own numbers; None if its
        facts rule that cause out."""
        cause = earlier.probable_cause
        given = settled(report, note)
        if given.cause not in (None, cause) or not given.allows(cause):
            return None
        summary, explanation = rules.explain(report, cause, note=note)
        wrong = unsupported(earlier.explanation, report, note)
        analysis = earlier.model_copy(
            update={
                "anomaly_id": report.anomaly_id,
                "cached": True,
                "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                "severity": given.severity or earlier.severity,
                "confidence": given.confidence or earlier.confidence,
                "summary": given.summary(cause) or summary,
                "explanation": explanation if wrong else earlier.explanation,
                "grounding": "degraded" if wrong else earlier.grounding,
                "ungrounded_numbers": wrong,
            }
        )
        self._store.put(report, analysis)  # a repeat of this id is then a plain lookup
        self._notify(report, analysis)
        return analysis

    def _notify(self, report: AnomalyReport, analysis: Analysis) -> None:
        """A new answer, the model's or the rule engine's: its incident's 'opened'
        notifications, if not made yet."""
        if self._notifier is not None:
            self._notifier.opened(report, analysis)

    @property
    def waiting(self) -> int:
        return self._waiting

    def _admit(self) -> None:
        """Called under the lock: count the request in, or refuse it."""
        if self._waiting >= self._queue_limit:
            self.outcomes["overloaded"] += 1
            raise Overloaded(max(1, math.ceil(self._waiting * self._typical_s)))
        self._waiting += 1

    def _analyze(
        self,
        report: AnomalyReport,
        analyzer: Analyzer | None,
        started: float,
        adapter: str | None,
    ) -> Analysis:
        deadline = time.monotonic() + self._timeout_s
        with tracer.start_as_current_span("whyslow.analysis") as span:
            span.set_attribute("whyslow.anomaly_id", report.anomaly_id)
            span.set_attribute("whyslow.service", report.service)
            grounding: Grounding = "rules"
            bad: list[str] = []
            model = rules.RULES_MODEL
            if analyzer is not None:
                try:
                    diagnosis, grounding, bad = self._model(report, analyzer, deadline, adapter)
                    model = analyzer.runtime.info.model_copy(update={"adapter": adapter})
                except (ModelBusy, ModelOutputError) as exc:
                    log.warning("%s: the rule engine answers: %s", report.anomaly_id, exc)
                except Exception:  # a model error must not become a 500
                    log.exception("%s: model failed; the rule engine answers", report.anomaly_id)
            if grounding == "rules":
                note = analyzer.note(report.service) if analyzer else None
                diagnosis = rules.diagnose(report, note)
            span.set_attribute("whyslow.grounding", grounding)
            span.set_attribute("whyslow.probable_cause", diagnosis.probable_cause.value)
        elapsed = time.perf_counter() - started
        analysis = Analysis(
            **diagnosis.model_dump(),
            anomaly_id=report.anomaly_id,
            service=report.service,
            operation=report.operation,
            model=model,
            latency_ms=round(elapsed * 1000, 1),
            grounding=grounding,
            ungrounded_numbers=bad,
        )
        self.outcomes[grounding] += 1
        if not self._store.put(report, analysis) and grounding != "rules":
            self._store.upgrade(analysis)
        if grounding != "rules":
            self._typical_s = 0.8 * self._typical_s + 0.2 * elapsed
            key = fingerprint(report, adapter)
            with self._lock:
                self._recent[key] = (time.monotonic(), analysis)
                self._recent.move_to_end(key)
                while len(self._recent) > MAX_FINGERPRINTS:
                    self._recent.popitem(last=False)
        self._notify(report, analysis)
        log.info(
            "analysed %s (%s %s) in %.0f ms: %s, %s",
            report.anomaly_id,
            report.service,
            report.operation,
            analysis.latency_ms,
            analysis.probable_cause.value,
            grounding,
        )
        return analysis

    def _model(
        self, report: AnomalyReport, analyzer: Analyzer, deadline: float, adapter: str | None
    ) -> tuple[Diagnosis, Grounding, list[str]]:
        note = analyzer.note(report.service)
        first = analyzer.diagnose(report, deadline, adapter=adapter)
        bad = unsupported(f"{first.summary} {first.explanation}", report, note)
        if not bad:
            return first, "grounded", []
        try:
            second = analyzer.diagnose(report, deadline, 0.7, 1, adapter)
            if not unsupported(f"{second.summary} {second.explanation}", report, note):
                return second, "regenerated", bad
        except (ModelBusy, ModelOutputError):
            pass
        summary, explanation = rules.explain(report, first.probable_cause, note=note)
        return (
            first.model_copy(update={"summary": summary, "explanation": explanation}),
            ("degraded"),
            bad,
        )
