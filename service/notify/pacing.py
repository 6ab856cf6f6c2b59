"""When to try a failed post again, and how many posts a target gets per minute.

Retries back off exponentially from one second up to a cap, each delay drawn between half
and all of its value (jitter: replicas that failed together do not retry together), and
never give up: a notification that cannot be delivered stays pending and visible in the
metrics. A receiver's own ``Retry-After`` (Slack's 429s) is honoured when it is longer."""

from __future__ import annotations

import random
from collections import deque

FIRST_DELAY_S = 1.0
MAX_RETRY_AFTER_S = 3600.0
"""A Retry-After longer than an hour is read as an hour."""


def retry_delay(attempts: int, cap_s: float, retry_after_s: float | None = None) -> float:
    """Seconds until the next try after the ``attempts``-th failure in a row."""
    delay = min(cap_s, FIRST_DELAY_S * 2 ** min(attempts - 1, 30))
    delay *= random.uniform(0.5, 1.0)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, MAX_RETRY_AFTER_S))
    return delay


def retry_after(value: str | None) -> float | None:
    """A Retry-After header in seconds (its date form is read as absent)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class RateLimit:
    """At most ``per_minute`` posts to each target in any 60 seconds; the rest wait in the
    outbox. Used by the one sender thread, so it holds no lock."""

    WINDOW_S = 60.0

    def __init__(self, per_minute: int) -> None:
        self._per_minute = per_minute
        self._posts: dict[str, deque[float]] = {}

    def take(self, target: str, now: float) -> bool:
        """Count a post to ``target`` now, if its minute allows one more."""
        posts = self._posts.setdefault(target, deque())
        while posts and posts[0] <= now - self.WINDOW_S:
            posts.popleft()
        if len(posts) >= self._per_minute:
            return False
        posts.append(now)
        return True
