"""One notification per incident opened and one when it is resolved, to each target.

The analyses call ``opened`` after each answer; the incident's state keeper calls
``resolved``. Both only insert rows into the outbox (``service/notify/outbox.py``), whose
key makes them exactly once whichever replica, before or after whichever restart, inserts
first; the sender thread (``service/notify/sender.py``) posts them. Neither ever raises
into its caller: a notification must not fail an analysis."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

from service.contract import Analysis, AnomalyReport
from service.notify.alertmanager import Alertmanager
from service.notify.event import Event, Target
from service.notify.grafana import AnnotatingSender, Grafana
from service.notify.links import LinkBuilder
from service.notify.outbox import Outbox
from service.notify.sender import Sender
from service.notify.slack import Slack
from service.notify.webhook import Webhook
from service.settings import Settings
from service.store import AnalysisStore

log = logging.getLogger(__name__)

RECENT_INCIDENTS = 10_000
TOUCH_S = 30.0
"""An incident seen this recently is not written again: an alert storm's reports cost no
database write each (the rows exist; only the re-send horizon moves, this often)."""


def incident_of(report: AnomalyReport) -> str:
    """The report's incident id; a report posted without one is its own incident."""
    return report.incident.id if report.incident is not None else report.anomaly_id


def posted_as_test(store: AnalysisStore, report: AnomalyReport) -> bool:
    """Whether the report was posted as a test (``?test=true``, filed by the route before
    the analysis): analysed, never notified."""
    status = store.status(report.anomaly_id)
    return status is not None and status.test


def targets_of(settings: Settings) -> list[Target]:
    """The targets whose setting is set."""
    targets: list[Target] = []
    if settings.webhook_url:
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
        targets.append(Webhook(settings.webhook_url, secret))
    if settings.slack_webhook_url is not None and settings.slack_webhook_url.get_secret_value():
        targets.append(Slack(settings.slack_webhook_url.get_secret_value()))
    if settings.alertmanager_url:
        targets.append(
            Alertmanager(settings.alertmanager_url, settings.alertmanager_resend_seconds)
        )
    if settings.grafana_url:
        token = settings.grafana_token.get_secret_value() if settings.grafana_token else None
        targets.append(Grafana(settings.grafana_url, token, settings.grafana_dashboard_uid))
    return targets


class Notifier:
    def __init__(
        self,
        outbox: Outbox | None,
        targets: list[Target],
        links: LinkBuilder,
        retry_max_s: float,
        rate_per_minute: int,
        resend_for_s: float,
        is_test: Callable[[AnomalyReport], bool] | None = None,
    ) -> None:
        """``is_test``: whether a report was posted as a test, which is analysed but
        notifies no one (none is, without it)."""
        self._outbox = outbox
        self._is_test = is_test
        self.targets = targets if outbox is not None else []
        self._links = links
        self._resend_for_s = resend_for_s
        self._recent: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self.sender: Sender | None = None
        if outbox is not None and self.targets:
            named = {target.name: target for target in self.targets}
            # Grafana's rows are no single POST of a stored body: its sender knows them
            kind = AnnotatingSender if "grafana" in named else Sender
            self.sender = kind(outbox, named, retry_max_s, rate_per_minute)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        links: LinkBuilder,
        is_test: Callable[[AnomalyReport], bool] | None = None,
    ) -> Notifier:
        """No target set: no outbox either (no table, no connection, no thread)."""
        targets = targets_of(settings)
        outbox = Outbox(settings.resolved_analyses_url()) if targets else None
        return cls(
            outbox,
            targets,
            links,
            settings.notify_retry_max_seconds,
            settings.notify_rate_per_minute,
            settings.alertmanager_resend_for_seconds,
            is_test,
        )

    def start(self) -> None:
        if self.sender is not None:
            self.sender.start()

    def stop(self) -> None:
        if self.sender is not None:
            self.sender.stop()
        if self._outbox is not None:
            self._outbox.close()

    def opened(self, report: AnomalyReport, analysis: Analysis) -> None:
        """After an analysis: 'opened' to every target, if the report's incident has not
        been notified yet (by this process or any other)."""
        if self._outbox is None:
            return
        incident_id = incident_of(report)
        if self._seen_recently(incident_id):
            return
        try:
            if self._is_test is not None and self._is_test(report):
                self._forget(incident_id)  # a real report of it may follow: news then
                return
            self._open(self._outbox, incident_id, report, analysis)
        except Exception:
            log.exception("notifications of incident %s could not be queued", incident_id)
            self._forget(incident_id)  # the next report tries again

    def _open(
        self, outbox: Outbox, incident_id: str, report: AnomalyReport, analysis: Analysis
    ) -> None:
        now = time.time()
        links = self._links.links(report.anomaly_id, report.trace_ids)
        event = Event("opened", incident_id, analysis, report, links, datetime.now(UTC))
        until = now + self._resend_for_s
        added = [
            target.name
            for target in self.targets
            if outbox.add(
                incident_id,
                "opened",
                target.name,
                analysis.anomaly_id,
                target.render(event, None),
                now,
                target.resend_seconds,
                until if target.resend_seconds is not None else None,
            )
        ]
        if any(target.resend_seconds is not None for target in self.targets):
            outbox.keep_resending(incident_id, until)
        if added:
            log.info("incident %s opened: notifying %s", incident_id, ", ".join(added))
            self._wake()

    def resolved(self, incident_id: str, analysis: Analysis) -> None:
        """The incident is over: 'resolved' to every target it was opened to (an incident
        never notified, such as a test's, stays silent), and its re-sends stop."""
        if self._outbox is None:
            return
        try:
            self._resolve(self._outbox, incident_id, analysis)
        except Exception:
            log.exception("the resolution of incident %s could not be queued", incident_id)

    def _resolve(self, outbox: Outbox, incident_id: str, analysis: Analysis) -> None:
        opened = outbox.opened(incident_id)
        if not opened:
            return
        record = outbox.record(analysis.anomaly_id)
        report = record[0] if record is not None else None
        links = self._links.links(analysis.anomaly_id, report.trace_ids if report else [])
        event = Event("resolved", incident_id, analysis, report, links, datetime.now(UTC))
        outbox.stop_resending(incident_id)
        now = time.time()
        added = [
            target.name
            for target in self.targets
            if target.name in opened
            and outbox.add(
                incident_id,
                "resolved",
                target.name,
                analysis.anomaly_id,
                target.render(event, opened[target.name]),
                now,
            )
        ]
        if added:
            log.info("incident %s resolved: notifying %s", incident_id, ", ".join(added))
            self._wake()

    def pending(self) -> int:
        return self.sender.pending() if self.sender is not None else 0

    def _seen_recently(self, incident_id: str) -> bool:
        now = time.monotonic()
        with self._lock:
            seen = self._recent.get(incident_id)
            if seen is not None and now - seen < TOUCH_S:
                return True
            self._recent[incident_id] = now
            self._recent.move_to_end(incident_id)
            while len(self._recent) > RECENT_INCIDENTS:
                self._recent.popitem(last=False)
        return False

    def _forget(self, incident_id: str) -> None:
        with self._lock:
            self._recent.pop(incident_id, None)

    def _wake(self) -> None:
        if self.sender is not None:
            self.sender.wake()
