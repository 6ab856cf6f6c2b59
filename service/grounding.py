"""The grounding guard: a number in a diagnosis's prose must be one the report gave (or one
derived from it, as the prompt shows it: ratios, rates).

Small models invent plausible measurements ("p95 432 ms vs usual 108 ms") that an on-call
engineer would act on. A number matches when it equals a report number at the precision it
is written with (``946`` matches 945.5, ``4.7`` matches 4.72); integers up to 10 pass,
since they count things ("3 steps") rather than measure them. Identifiers (the report's id,
its trace ids, its incident's id) hold digits but no facts, so they ground nothing; the
window's times and the incident's start count as a reader writes them (``14:05``,
``2026-11-12``). The incident's root cause and candidates ground their reasons' numbers
("own time 840ms vs usual 42ms") and scores: the rule engine and the prompt cite them.

Words are held to the facts the same way (``misstated``): a direction given to a signal
(``rose``, ``higher``, ``up``; ``fell``, ``lower``, ``down``; ``normal``) must be the way the
report's numbers for that signal went ("CPU rose" of a CPU at 14% vs usual 36% is as false
as an invented number), a name shaped like a service's must be one the report contains,
and "no signal stands out" is false of a report whose incident names a root. Prose that
loops or stops mid-sentence (``unfinished``) is no answer either. Any counts like an
ungrounded number: the answer is generated again, then degraded to the rule engine's text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from pydantic.main import IncEx

from service.contract import AnomalyReport
from service.prompt import SYSTEM_PROMPT, Signal, build_messages, derived_signals

NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?")
SMALL = 10


def _numbers(value: object) -> Iterator[float]:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield float(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, str):
        yield from (float(n) for n in NUMBER.findall(value))


READ_APART: dict[str, IncEx | bool] = {
    "id": True,
    "trace_ids": True,
    "window": True,
    "incident": {"id": True, "started": True},
}
"""Fields not read for numbers as text: identifiers hold digits but no facts, and an ISO time
hides its hour behind the ``T``; the window's and the incident's times are added as a reader
writes them."""


def _as_written(time: datetime) -> tuple[int, ...]:
    return (time.year, time.month, time.day, time.hour, time.minute)


def report_numbers(report: AnomalyReport) -> set[float]:
    """Every number of the report, and those the prompt derives from it."""
    numbers = set(_numbers(report.model_dump(mode="json", exclude=READ_APART)))
    if report.window:
        numbers.add(report.window.count)
        for time in (report.window.start, report.window.end):
            numbers.update(_as_written(time))
    if report.incident:
        numbers.update(_as_written(report.incident.started))
    for signal in derived_signals(report):
        numbers.add(signal.observed)
        if signal.usual:
            numbers.add(signal.observed / signal.usual)
            numbers.add(abs(signal.observed - signal.usual))
    for rate in (report.context.error_rate, report.context.error_rate_baseline):
        if rate is not None:
            numbers.add(rate * 100)
    return numbers


def ungrounded(text: str, allowed: set[float]) -> list[str]:
    """The numbers of ``text`` that the report does not support."""
    found = []
    for token in NUMBER.findall(text):
        value = float(token)
        if value.is_integer() and value <= SMALL:
            continue
        decimals = len(token.split(".")[1]) if "." in token else 0
        tolerance = 0.5 * 10**-decimals + 1e-9
        if not any(abs(value - number) <= tolerance for number in allowed):
            found.append(token)
    return found


# ---------------------------------------------------------------- directions and names


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


UP = _words(
    "rise rises rising rose risen higher increase increased increases increasing up "
    "above spike spiked spikes spiking jump jumped jumps climb climbed climbing grew "
    "grow growing slower slowed"
)
DOWN = _words(
    "drop drops dropped dropping fell fall falls falling fallen lower decrease decreased "
    "decreases decreasing down below faster"
)
NORMAL = _words("normal unchanged steady stable flat")
NEGATIONS = _words("not no never nor without neither")
PHRASAL = _words(
    "slow slowed slowing shut broke break narrow scale scaled back backed pick picked "
    "set look warm speed sped"
)
"""Verbs that take ``up`` or ``down`` as a particle (``slowed down``, ``backed up``): no
direction of their own."""
DETERMINERS = _words("the a an this that its")
NOUN_REACH = 12
"""A direction after a determiner is a noun ("the rise"): it is a signal's only when the
signal follows within this many characters ("the rise in CPU"), else it is the latency's
own rise the report is about."""
SUBJECTS = [
    (re.compile(r"\berror rates?\b|\berrors?\b"), "error rate"),
    (re.compile(r"\brequest rates?\b|\brequests\b|\btraffic\b|\brps\b"), "request rate"),
    (re.compile(r"\bqueue depth\b|\bqueues?\b|\bbacklog\b"), "queue depth"),
    (re.compile(r"\bcpu\b"), "cpu"),
    (re.compile(r"\bmemory\b|\bheap\b"), "memory"),
    (re.compile(r"\blatenc(?:y|ies)\b|\bp50\b|\bp95\b|\bp99\b|\bresponse times?\b"), "latency"),
    (re.compile(r"\bdependenc(?:y|ies)\b|\bdownstream\b"), "downstream"),
]
"""Words that name a signal of the report, as the prose may."""
CLAUSE = re.compile(
    r"[;,:!?]|\.(?=\s|$)|\s(?:while|but|whereas|although|though|because|since|as|so|and|yet"
    r"|then|after|with)\s"
)
FACT = re.compile(r"\d[\w.%/]* vs usual \d(?:[\w.%/]*[\w%/])?(?: \((?:[\w.]+ [A-Z]+|normal)\))?")
"""A fact as the prompt prints it and answers quote it: ``98% vs usual 39% (2.5x HIGHER)``."""
NOTHING = re.compile(
    r"\b(?:no (?:other )?(?:signals?|evidence)|nothing)\b[^.;]*\bstands? out\b", re.I
)
"""A claim that no signal (or evidence) stands out: false of a report whose incident names a
root."""
QUOTED = re.compile(r"(?<!\w)'[^']*'(?!\w)|\"[^\"]*\"")
"""Quoted text (evidence, a log line) says what it says: its words are not the answer's."""
OPEN_QUOTE = re.compile(r"(?<!\w)'[^']*$|\"[^\"]*$")
"""A quote still open where the text ends: as it is written, or cut by the length bound."""
WORD = re.compile(r"[a-z0-9']+")
NAME = re.compile(r"(?<![\w./@-])[a-z][a-z0-9]*(?:[-_][a-z0-9]+)+(?![\w/@-])")
"""A word shaped like a service name: lowercase parts joined by ``-`` or ``_``."""
ENGLISH_HEADS = _words(
    "re non pre co multi sub over under self well high low long short half in out up per "
    "cross on off end real time back read write round stop one two three single double "
    "anti semi post mid full hard soft hot cold open fail slow fast rate"
)
ENGLISH_TAILS = _words(
    "bound based related like wide level side term time aware free safe only heavy "
    "intensive driven specific facing grained world up down out in off on"
)
"""Parts that make a hyphenated word English (``in-heap``, ``CPU-bound``), not a name."""


def _directions(signal: Signal | None, moved: bool = False) -> frozenset[str] | None:
    """The directions a sentence may give ``signal``: its tag's (the prompt's word for it),
    and with ``moved``, for a value tagged normal, also the way it moved (latency: a report
    is about its rise, however small). None: the report cannot say (no such signal, no
    usual value)."""
    if signal is None or signal.usual is None:
        return None
    if "HIGHER" in signal.tag:
        return frozenset({"up"})
    if signal.tag == "LOWER":
        return frozenset({"down"})
    way = (
        {"up"}
        if signal.observed > signal.usual
        else {"down"}
        if signal.observed < signal.usual
        else set()
    )
    return frozenset({"normal", *way}) if moved else frozenset({"normal"})


def _union(found: list[frozenset[str] | None]) -> frozenset[str] | None:
    if not found or any(f is None for f in found):
        return None
    return frozenset().union(*[f for f in found if f is not None])


@dataclass(frozen=True)
class Facts:
    """What a sentence about the report may say: each signal's directions (by subject; a
    dependency by its lowercased name) and the names it may use."""

    directions: dict[str, frozenset[str] | None]
    dependencies: dict[str, frozenset[str] | None]
    service: str
    names: frozenset[str]
    text: str
    """The report's and the note's text, whitespace folded, lowercased: what a quote quotes."""
    root: bool = False
    """The report's incident names a root cause: something does stand out."""


def facts(report: AnomalyReport, note: str | None = None) -> Facts:
    """The directions of the report's signals and the names the report (and ``note``, the
    catalogue's note on its service) contains: its service, its dependencies, its incident's
    services, and names its evidence or operations quote."""
    signals = derived_signals(report)
    by_name = {s.name: s for s in signals[1:]}
    calls = (
        signals[len(signals) - len(report.context.downstream) :]
        if report.context.downstream
        else []
    )
    deps: dict[str, list[frozenset[str] | None]] = {}
    for dep, signal in zip(report.context.downstream, calls, strict=True):
        deps.setdefault(dep.service.lower(), []).append(_directions(signal))
    directions = {
        key: _directions(by_name.get(key))
        for key in ("cpu", "memory", "request rate", "error rate", "queue depth")
    }
    directions["latency"] = _directions(signals[0], moved=True)
    directions["downstream"] = _union([_directions(s) for s in calls])
    prompt = build_messages(report, note)[-1]["content"]
    text = " ".join([report.model_dump_json(), note or "", SYSTEM_PROMPT, prompt])
    names = {n.lower() for n in NAME.findall(text)} | {report.service.lower()}
    names |= set(deps)
    if report.incident is not None:
        incident = report.incident
        named = [*incident.path, *(c.service for c in incident.candidates)]
        named += [a.service for a in incident.affected]
        named += [incident.root_cause.service] if incident.root_cause else []
        names |= {n.lower() for n in named}
    return Facts(
        directions,
        {name: _union(found) for name, found in deps.items()},
        report.service.lower(),
        frozenset(names),
        _folded(" ".join([prompt, *report.evidence, note or ""])),
        report.incident is not None and report.incident.root_cause is not None,
    )


def _folded(text: str) -> str:
    """Text as quotes are compared: lowercased, whitespace folded, any quote mark one."""
    return " ".join(text.lower().translate(QUOTE_MARKS).split())


QUOTE_MARKS = str.maketrans({"\u2019": "'", '"': "'"})


def _mentions(clause: str, known: Facts) -> list[tuple[int, int, str]]:
    """(start, end, subject) of each signal the clause names; a dependency named in the
    clause owns its latency words (``fx-provider p95 rose``)."""
    found: list[tuple[int, int, str]] = []
    for name in known.dependencies:
        for match in re.finditer(rf"(?<![\w/.-]){re.escape(name)}(?![\w/-])", clause):
            found.append((match.start(), match.end(), f"dependency {name}"))
    named_dependency = bool(found)
    for pattern, subject in SUBJECTS:
        for match in pattern.finditer(clause):
            if subject == "latency" and named_dependency:
                continue
            named_dependency |= subject == "downstream"
            found.append((match.start(), match.end(), subject))
    if named_dependency:
        found = [f for f in found if f[2] != "latency"]
    return found


def _direction(words: list[re.Match[str]], at: int) -> str | None:
    word = words[at][0]
    before = [w[0] for w in words[max(0, at - 2) : at]]
    if any(w in NEGATIONS or w.endswith("n't") for w in before):
        return None
    if word in ("up", "down") and before and before[-1] in PHRASAL:
        return None
    return "up" if word in UP else "down" if word in DOWN else "normal" if word in NORMAL else None


def misstated(text: str, known: Facts) -> list[str]:
    """What ``text`` says that the report's facts do not: a fact quoted otherwise than the
    prompt prints it (``88MB vs usual 41MB`` of a memory at 88% vs usual 41%), a quote the
    report does not hold (closed, or open where the text ends: held as it is written), a
    signal given a direction its numbers do not have (``cpu rose`` with the CPU LOWER;
    quoted text aside), a name shaped like a service's that the report does not contain,
    "no signal stands out" of a report whose incident names a root."""
    found = [fact for fact in FACT.findall(text) if _folded(fact) not in known.text]
    plain = QUOTED.sub(" ", text)
    if known.root:
        found += [claim[0] for claim in NOTHING.finditer(plain)]
    quotes = [(quoted[0], quoted[0][1:-1]) for quoted in QUOTED.finditer(text)]
    opened = OPEN_QUOTE.search(plain)
    if opened is not None:
        quotes.append((opened[0], opened[0][1:]))
        plain = plain[: opened.start()]
    for written, inside in quotes:
        held = _folded(inside).rstrip(".\u2026").strip()
        if held and held not in known.text:
            found.append(written)
    for name in NAME.findall(plain):
        parts = re.split(r"[-_]", name)
        english = (
            parts[0] in ENGLISH_HEADS or parts[-1] in ENGLISH_TAILS or min(map(len, parts)) < 2
        )
        if name not in known.names and not english:
            found.append(name)
    for clause in CLAUSE.split(plain.lower()):
        mentions = _mentions(clause, known)
        if not mentions:
            continue
        words = list(WORD.finditer(clause))
        for at, word in enumerate(words):
            direction = _direction(words, at)
            if direction is None:
                continue
            if at and words[at - 1][0] in DETERMINERS:  # a noun: "the rise in CPU"
                after = [m for m in mentions if 0 <= m[0] - word.end() <= NOUN_REACH]
                if not after:
                    continue
                start, end, subject = min(after)
            else:
                start, end, subject = min(
                    mentions, key=lambda m: max(m[0] - word.end(), word.start() - m[1], 0)
                )
            if subject.startswith("dependency "):
                allowed = known.dependencies.get(subject.removeprefix("dependency "))
            else:
                allowed = known.directions.get(subject)
            if allowed is not None and direction not in allowed:
                found.append(f"{clause[start:end]} {word[0]}")
    return found


SENTENCE_END = re.compile(r"[.!?\u2026][\"')\]]*$")
LOOP = re.compile(r"(.{1,4}?)\1{7,}", re.S)
"""A few characters eight times or more in a row: a small model caught in a loop..."""
LOOP_CHARS = 20
"""...over this many characters (a log line's ``--------`` is no loop)."""


def unfinished(text: str) -> list[str]:
    """What makes prose no answer, however true its words: a few characters repeated over
    and over (``[].[].[].``), or a last sentence it does not finish (a model that closes its
    string where a quote was taken back leaves "The spans say ")."""
    found = [
        f"repeated: {loop[0][:24]}" for loop in LOOP.finditer(text) if len(loop[0]) >= LOOP_CHARS
    ]
    end = text.strip()
    if end and not SENTENCE_END.search(end):
        found.append(f"unfinished: {end[-40:]}")
    return found


def unsupported(text: str, report: AnomalyReport, note: str | None = None) -> list[str]:
    """Everything ``text`` says that the report does not: numbers it does not contain, then
    directions and names it contradicts (``misstated``), and prose that is no answer
    (``unfinished``). An answer with any is generated again, then degraded to the rule
    engine's text."""
    return (
        ungrounded(text, report_numbers(report))
        + misstated(text, facts(report, note))
        + unfinished(text)
    )
