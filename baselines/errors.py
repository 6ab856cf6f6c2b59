"""Errors as a judged signal per service: error log lines and error spans.

A fault that throws, or returns a wrong value, often slows nothing: it shows as error
lines a service did not log before, or as more of them than usual. Each service learns,
per source (``logs``, ``spans``), how many errors a window usually holds and which error
log templates it already knows from windows it was healthy in; a window is flagged when
its error count is improbable under that usual rate (Poisson tail below the surprise
threshold) or when it holds error lines of templates the service never logged while
healthy: never before, or only while failing (a template seen only in flagged windows is a
failure's, and its return is that failure again).

Some services log bursts of familiar errors now and then, healthy or not (a retried call, a
scheduled job): a count far above the usual rate, again and again. A burst no more than
``HABIT_MARGIN`` times those the service logged in ``HABIT_SLOTS`` different 20-minute slots
of the last week is a habit, not news: its count alone no longer flags (new templates still
do). Slots, not windows: a fault that repeats within the slot, or lasts several windows, is
still flagged each time; and the margin keeps a slightly larger routine burst from flagging
as a record while a fault half again as large as the usual bursts still does. Such a burst
is still reported (``ErrorVerdict.habitual``): a fault can log what the service logs in its
bursts, so beside an incident of a service it is connected to, it is a candidate.

Such bursts often come with their own template, logged only in them: never in a healthy
window, it would be "new" at every burst, forever. A template the service logged in
``ROUTINE_SLOTS`` different slots of the last eight hours is routine and no longer new,
whatever the windows it came in (its count is still judged); a fault's template, logged in
a few slots around it, stays new. Six slots are two hours at least: about as long as a
sustained error rate takes to become the usual (``ADOPT_WINDOWS`` one-minute windows).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from baselines.trace_sample import MAX_TRACES, TraceSample

MAX_TEMPLATES = 2000
"""Error templates remembered per service; the least recently seen are forgotten first."""
T = TypeVar("T")
MAX_WINDOW_TEMPLATES = 50
MAX_SAMPLES = 8
MIN_WINDOWS = 3
"""Windows of history before a service's errors are judged: what is usual must be known.
These first windows are all learnt from; after them, a window the service's usual rate makes
improbable is not (a fault early in a service's life must not become its usual)."""
RATE_FLOOR = 0.5
"""Errors a window is assumed to usually hold at least: a service that never logged an error
does not alert on its first one or two."""
MIN_ERRORS = 3
"""Fewest error lines that flag a window, by their count or by their new templates:
the same evidence for both (two lines of a new template are a rare error that recurred
once, not yet a failure)."""
MEMORY = 0.05
"""Weight of each new window in the usual error count (about the last 20 windows)."""
SUSPICIOUS = 0.01
"""A window whose error count is this improbable at the usual rate is not learnt from..."""
ADOPT_WINDOWS = 120
"""...unless this many such windows came in a row: then the count is the new usual."""
HABIT_SLOT_SECONDS = 1200
"""Bursts are remembered per slot of this many seconds (the largest of each)..."""
HABIT_SLOTS = 3
"""...and bursts in this many different slots of the last week make a habit of their size..."""
HABIT_MARGIN = 1.5
"""...and of bursts up to this many times it."""
HABIT_MEMORY_SLOTS = 7 * 24 * 3600 // HABIT_SLOT_SECONDS
"""A week: the largest bursts of a busy day are remembered on the quiet ones."""
ROUTINE_SLOTS = 6
"""Different slots among the last ``ROUTINE_MEMORY_SLOTS`` an error template must have been
logged in to be routine..."""
ROUTINE_MEMORY_SLOTS = 24
"""...(eight hours): one the service logs about every hour, healthy or not."""
_TOKEN = re.compile(r"[\w.-]+")


@dataclass
class ErrorWindow:
    """One service's errors in one window, from one source."""

    total: int = 0
    errors: int = 0
    templates: dict[str, int] = field(default_factory=dict)
    samples: dict[str, str] = field(default_factory=dict)
    """One line of each error template, as evidence."""
    traces: set[str] = field(default_factory=set)
    """Trace ids of the error lines, the smallest (see ``TraceSample``)."""
    trace_cutoff: str | None = None
    first: float | None = None
    """When the earliest error line was logged (epoch seconds), where lines carry a time."""

    def add(
        self,
        error: bool,
        template: str = "",
        body: str = "",
        trace_id: str | None = None,
        at: float | None = None,
    ) -> None:
        self.total += 1
        if not error:
            return
        self.errors += 1
        if at is not None and (self.first is None or at < self.first):
            self.first = at
        if trace_id and (self.trace_cutoff is None or trace_id <= self.trace_cutoff):
            self.traces.add(trace_id)
            if len(self.traces) > 2 * MAX_TRACES:
                sample = TraceSample.of(self.traces, self.trace_cutoff)
                self.traces, self.trace_cutoff = set(sample.ids), sample.cutoff
        if template and (template in self.templates or len(self.templates) < MAX_WINDOW_TEMPLATES):
            self.templates[template] = self.templates.get(template, 0) + 1
            if len(self.samples) < MAX_SAMPLES:
                self.samples.setdefault(template, body[:300])

    def trace_sample(self) -> TraceSample | None:
        """The error lines' trace sample; None when none of them carried a trace id."""
        return TraceSample.of(self.traces, self.trace_cutoff) if self.traces else None


@dataclass(frozen=True)
class ErrorVerdict:
    errors: int
    usual: float
    novel: int
    """Lines of error templates the service never logged while healthy."""
    surprise: float
    """Poisson tail probability of at least ``errors`` at the usual rate."""
    samples: list[str]
    named: dict[str, int] = field(default_factory=dict)
    """Other services the error lines name ("No instances available for ts-basic-service",
    "connection refused: payments:8080"), with how many lines name each."""
    traces: TraceSample | None = None
    """The requests the error lines were logged in, where they carried trace ids."""
    first: float | None = None
    """When the earliest of them was logged (epoch seconds), where lines carry a time."""
    habitual: bool = False
    """Far above the usual rate, in a burst no larger than the service's habit (see
    ``ErrorHabits``): no news alone, so it flags nothing, but a service with such a burst is
    a candidate, after those with trouble of their own, of an incident it is connected to."""

    @property
    def strength(self) -> float:
        """How strongly the window says "this service fails": more errors against the usual,
        and a larger share of templates it never logged while healthy, say it more (from 0.5
        up to 1.5)."""
        rise = 0.5 * math.log10(1.0 + self.errors / max(self.usual, RATE_FLOOR))
        return min(1.5, 0.5 + rise + 0.5 * self.novel / self.errors)

    def blames(self) -> str | None:
        """The other service at least half of the error lines name, if one does."""
        if not self.named:
            return None
        service, lines = max(self.named.items(), key=lambda kv: kv[1])
        return service if 2 * lines >= self.errors else None

    def reason(self, source: str) -> str:
        what = "error log lines" if source == "logs" else "error spans"
        text = f"{what}: {self.errors} in the window (usual {self.usual:.1f})"
        if self.novel:
            text += f", {self.novel} of templates not seen while it was healthy"
        return text


def flags(verdict: ErrorVerdict | None) -> bool:
    """Whether a window's verdict flags it: judged as trouble, never learnt as usual (no
    verdict is a usual window; a habitual burst is only a weak signal)."""
    return verdict is not None and not verdict.habitual


def _drop_oldest(templates: dict[str, T], last_seen: Callable[[T], int]) -> None:
    """Past ``MAX_TEMPLATES`` templates, forget those ``last_seen`` longest ago."""
    excess = len(templates) - MAX_TEMPLATES
    if excess > 0:
        for template, _ in sorted(templates.items(), key=lambda kv: last_seen(kv[1]))[:excess]:
            del templates[template]


@dataclass
class ErrorHabits:
    windows: int = 0
    usual: float = 0.0
    known: dict[str, int] = field(default_factory=dict)
    """Error templates seen in windows the service was healthy in, by the window count when
    last seen."""
    suspicious: int = 0
    """Windows in a row too improbable to learn from."""
    bursts: dict[int, int] = field(default_factory=dict)
    """The largest count of ``MIN_ERRORS`` or more in a window of each slot (slots of
    ``HABIT_SLOT_SECONDS`` since the epoch) of the last ``HABIT_MEMORY_SLOTS``, flagged or
    not."""
    recurring: dict[str, list[int]] = field(default_factory=dict)
    """Error templates by the last different slots they were logged in, flagged or not."""

    def judge(
        self,
        window: ErrorWindow,
        surprise_threshold: float,
        services: frozenset[str] = frozenset(),
        own: str = "",
        at: float = 0.0,
    ) -> ErrorVerdict | None:
        """The verdict when the window's errors are improbable for this service (``own``),
        else None; ``services``: the names its lines may name; ``at``: the window's start
        (epoch seconds), whose slot remembers the burst."""
        slot = int(at // HABIT_SLOT_SECONDS)
        self._remember(window.errors, slot)
        fresh = {t for t in window.templates if t not in self.known and not self._recurs(t, slot)}
        self._recur(window.templates, slot)
        if self.windows < MIN_WINDOWS or window.errors == 0:
            return None
        novel = sum(n for t, n in window.templates.items() if t in fresh)
        usual = max(self.usual, RATE_FLOOR)
        tail = poisson_tail(window.errors, usual)
        many = window.errors >= MIN_ERRORS and tail < surprise_threshold
        if novel >= MIN_ERRORS or many:
            habitual = novel < MIN_ERRORS and window.errors <= HABIT_MARGIN * self._habitual(slot)
            novel_first = sorted(
                window.templates, key=lambda t: (t not in fresh, -window.templates[t])
            )
            samples = [window.samples[t] for t in novel_first if t in window.samples]
            named = named_services(window.templates, services, own)
            traces = window.trace_sample()
            return ErrorVerdict(
                window.errors,
                self.usual,
                novel,
                tail,
                samples,
                named,
                traces,
                window.first,
                habitual,
            )
        return None

    def _habitual(self, slot: int) -> int:
        """The largest count the service logged at least as many errors as in
        ``HABIT_SLOTS`` different earlier slots of the last week (0 when fewer slots had a
        burst): a burst up to ``HABIT_MARGIN`` times it is a habit."""
        sizes = sorted(
            (n for s, n in self.bursts.items() if slot - HABIT_MEMORY_SLOTS < s < slot),
            reverse=True,
        )
        return sizes[HABIT_SLOTS - 1] if len(sizes) >= HABIT_SLOTS else 0

    def _recurs(self, template: str, slot: int) -> bool:
        """Whether the template is routine: logged in ``ROUTINE_SLOTS`` different earlier
        slots of the last ``ROUTINE_MEMORY_SLOTS``, healthy or not (its windows flagged on
        their count, or while it was new)."""
        seen = self.recurring.get(template, [])
        earlier = sum(1 for s in seen if slot - ROUTINE_MEMORY_SLOTS < s < slot)
        return earlier >= ROUTINE_SLOTS

    def _recur(self, templates: dict[str, int], slot: int) -> None:
        """Remember the slot each template was logged in: its last ``ROUTINE_SLOTS`` + 1
        different ones, and past ``MAX_TEMPLATES`` templates, those seen longest ago go."""
        for template in templates:
            seen = self.recurring.setdefault(template, [])
            if not seen or seen[-1] != slot:
                seen.append(slot)
                del seen[: -ROUTINE_SLOTS - 1]
        _drop_oldest(self.recurring, lambda slots: slots[-1])

    def _remember(self, errors: int, slot: int) -> None:
        if errors < MIN_ERRORS:
            return
        self.bursts[slot] = max(errors, self.bursts.get(slot, 0))
        for old in [s for s in self.bursts if s <= slot - HABIT_MEMORY_SLOTS]:
            del self.bursts[old]

    def learn(self, window: ErrorWindow | None) -> None:
        """A window (None: the service was seen in the window but had no such source)."""
        errors = 0 if window is None else window.errors
        self.windows += 1
        usual = max(self.usual, RATE_FLOOR)
        improbable = self.windows > MIN_WINDOWS and poisson_tail(errors, usual) < SUSPICIOUS
        if improbable and self.suspicious < ADOPT_WINDOWS:
            # the tail of a fault that was not flagged must not teach the service that
            # faults are usual
            self.suspicious += 1
        elif improbable:  # a new level that lasted: it is the usual now
            self.usual, self.suspicious = float(errors), 0
        else:
            self.suspicious = 0
            weight = max(MEMORY, 1.0 / self.windows)
            self.usual += weight * (errors - self.usual)
        if window is not None:
            for template in window.templates:
                self.known[template] = self.windows
            _drop_oldest(self.known, lambda window: window)

    def state(self) -> dict[str, object]:
        """A copy, JSON-ready: a checkpoint taken now is not changed by what comes next."""
        return {
            "windows": self.windows,
            "usual": self.usual,
            "known": dict(self.known),
            "suspicious": self.suspicious,
            "bursts": {str(h): n for h, n in self.bursts.items()},
            "recurring": {t: list(slots) for t, slots in self.recurring.items()},
        }

    @classmethod
    def from_state(cls, saved: dict[str, object]) -> ErrorHabits:
        known, bursts = saved.get("known"), saved.get("bursts")
        recurring = saved.get("recurring")
        return cls(
            int(saved.get("windows", 0)),  # type: ignore[call-overload]
            float(saved.get("usual", 0.0)),  # type: ignore[arg-type]
            dict(known) if isinstance(known, dict) else {},
            int(saved.get("suspicious", 0)),  # type: ignore[call-overload]
            {int(h): int(n) for h, n in bursts.items()} if isinstance(bursts, dict) else {},
            {t: [int(s) for s in slots] for t, slots in recurring.items()}
            if isinstance(recurring, dict)
            else {},
        )


def named_services(
    templates: dict[str, int], services: frozenset[str], own: str = ""
) -> dict[str, int]:
    """Lines per service other than ``own`` named in the templates (a whole token:
    ``ts-basic-service`` in ``for ts-basic-service]``, ``payments`` in ``payments:8080``)."""
    named: dict[str, int] = {}
    if not services:
        return named
    for template, lines in templates.items():
        for token in set(_TOKEN.findall(template)):
            name = token.strip(".-")
            if name in services and name != own:
                named[name] = named.get(name, 0) + lines
    return named


def poisson_tail(k: int, rate: float) -> float:
    """P(X >= k) for X ~ Poisson(rate), summed term by term in log space: the upper tail
    directly when ``k`` is above the rate (where alerts are decided, exact to float
    precision), one minus the lower sum below it. Above a rate of 1000 and at or below it,
    the tail is about a half or more, so the normal approximation serves."""
    if k <= 0:
        return 1.0
    if k > rate:
        term = -rate + k * math.log(rate) - math.lgamma(k + 1)
        total = 0.0
        i = k
        while True:
            if term < -745.0:  # every later term is smaller still: nothing a float can hold
                return total
            value = math.exp(term)
            total += value
            i += 1
            term += math.log(rate) - math.log(i)
            if value < total * 1e-17 or i - k > 100_000:
                return min(1.0, total)
    if rate > 1000.0:
        return 0.5 * math.erfc((k - 0.5 - rate) / math.sqrt(2.0 * rate))
    term = -rate
    below = 0.0
    for i in range(k):
        if i:
            term += math.log(rate) - math.log(i)
        below += math.exp(term)
    return max(0.0, 1.0 - below)
