"""The thread that posts due notifications, off the request path.

Analyses only insert rows (service/notify/notifier.py); this thread, started and stopped
with the app's lifespan, reads the due ones, claims each (so that one replica posts it),
posts it, and records the outcome: delivered, or failed with the next try backed off.
Every failure is counted and logged; none is dropped."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

import httpx

from service.notify.event import Target
from service.notify.outbox import Outbox, Row
from service.notify.pacing import RateLimit, retry_after, retry_delay

log = logging.getLogger(__name__)

POLL_S = 1.0
"""How often the outbox is read when nothing wakes the thread (another replica's rows,
retries coming due)."""
BATCH = 100
POST_TIMEOUT_S = 10.0
LEASE_S = 60.0
"""A claimed row is another sender's again this long after the claim: longer than a post."""


class Sender:
    def __init__(
        self,
        outbox: Outbox,
        targets: Mapping[str, Target],
        retry_max_s: float,
        rate_per_minute: int,
    ) -> None:
        self._outbox = outbox
        self._targets = dict(targets)
        self._retry_max_s = retry_max_s
        self._limit = RateLimit(rate_per_minute)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent: dict[str, int] = dict.fromkeys(self._targets, 0)
        """Successful posts by target, since start (for /metrics)."""
        self.failures: dict[str, int] = dict.fromkeys(self._targets, 0)

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="whyslow-notify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(POST_TIMEOUT_S + 5)

    def wake(self) -> None:
        """New rows: read the outbox now rather than at the next poll."""
        self._wake.set()

    def pending(self) -> int:
        return self._outbox.pending(self._targets)

    def _run(self) -> None:
        with httpx.Client(timeout=POST_TIMEOUT_S) as client:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    self.deliver_due(client)
                except Exception:  # the store unreachable: try again at the next poll
                    log.exception("notifications: reading the outbox failed")
                self._wake.wait(POLL_S)

    def deliver_due(self, client: httpx.Client) -> None:
        for row in self._outbox.due(time.time(), self._targets, BATCH):
            if self._stop.is_set():
                return
            if not self._limit.take(row.target, time.monotonic()):
                continue  # this target's minute is full: the row waits
            if self._outbox.claim(row, time.time() + LEASE_S):
                self._post(client, row)

    def _post(self, client: httpx.Client, row: Row) -> None:
        target = self._targets[row.target]
        body = row.payload.encode()
        try:
            response = client.post(
                target.url, content=body, headers=target.headers(body, time.time())
            )
            if response.is_success:
                self._outbox.delivered(row, time.time())
                self.sent[row.target] += 1
                again = row.delivered_at is not None  # a re-send: not news
                log.log(
                    logging.DEBUG if again else logging.INFO,
                    "notified %s: incident %s %s",
                    row.target,
                    row.incident_id,
                    row.event,
                )
                return
            error = f"HTTP {response.status_code}: {response.text[:200]}"
            wait = retry_after(response.headers.get("retry-after"))
        except Exception as exc:  # the URL stays out of the log: Slack's is a secret
            error, wait = f"{type(exc).__name__}: {exc}"[:300], None
        self._retry_later(row, error, wait)

    def _retry_later(self, row: Row, error: str, wait: float | None) -> None:
        """A failed attempt: counted, logged, and the row due again after its backoff."""
        attempts = row.attempts + 1
        delay = retry_delay(attempts, self._retry_max_s, wait)
        self._outbox.failed(row, time.time() + delay, error)
        self.failures[row.target] += 1
        log.warning(
            "notifying %s of incident %s %s failed (attempt %d): %s; next try in %.1f s",
            row.target,
            row.incident_id,
            row.event,
            attempts,
            error,
            delay,
        )
