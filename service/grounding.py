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
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime

from pydantic.main import IncEx

from service.contract import AnomalyReport
from service.prompt import derived_signals

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
