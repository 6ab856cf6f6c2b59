"""JSON telemetry events (DESIGN.md): one object or an array of objects per message, each
a span, a metric sample or a log record (``service.contract.TelemetryEvent`` tells them
apart by their keys)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from baselines.ingest.log_template import template_of
from service.contract import TELEMETRY_EVENT, LogRecord, MetricSample, SpanEvent, SpanHistogram

MAX_REASON_CHARS = 1000


class MalformedMessage(ValueError):
    """The whole message is unusable; the text says why, for the dead-letter header."""


@dataclass
class ParsedBatch:
    """Events that validated, and each rejected item with the reason it was refused, so a
    bad span in a batch of 500 costs one span, not 500, and is itself kept."""

    events: list[SpanEvent | MetricSample | LogRecord | SpanHistogram] = field(default_factory=list)
    rejected: list[tuple[object, str]] = field(default_factory=list)


_TAGS = frozenset({"span", "metric", "log"})
"""The discriminator's tags, which pydantic puts first in an error's location."""


def describe(error: ValidationError) -> str:
    """'field: message; ...' for the first errors, short enough for an AMQP header."""
    parts = []
    for item in error.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in item["loc"] if p not in _TAGS) or "event"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)[:MAX_REASON_CHARS]


def load_json(body: bytes) -> Any:
    """The decoded body, or MalformedMessage. Besides bad syntax and encodings, ``json``
    raises a plain ValueError for an integer of more than 4300 digits and RecursionError
    for nesting deeper than the interpreter's stack: a message, not the consumer, is bad."""
    try:
        return json.loads(body)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, the digit limit
        raise MalformedMessage(f"not JSON: {exc}"[:MAX_REASON_CHARS]) from exc
    except RecursionError as exc:
        raise MalformedMessage("not JSON: nested too deeply") from exc


def parse_json_events(body: bytes) -> ParsedBatch:
    payload = load_json(body)
    items = payload if isinstance(payload, list) else [payload]
    batch = ParsedBatch()
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            kind = type(item).__name__
            batch.rejected.append((item, f"[{index}]: expected an object, got {kind}"))
            continue
        try:
            event = TELEMETRY_EVENT.validate_python(item)
        except ValidationError as exc:
            batch.rejected.append((item, f"[{index}] {describe(exc)}"))
            continue
        if isinstance(event, LogRecord) and not event.template:
            # as for OTLP records: a producer need not know how lines are grouped
            event.template = template_of(event.body)
        batch.events.append(event)
    return batch


def split_json_events(body: bytes, shard_of: Callable[[str], int]) -> dict[int, bytes]:
    """Split a message by the ``service`` of its events: shard -> the JSON array of the
    shard's events, in their order. Nothing is validated here (the shard's consumer does
    that and dead-letters what it refuses); an item without a service string goes to the
    shard of ``""``. A message whose events all map to one shard is passed on unchanged."""
    payload = load_json(body)
    groups: dict[int, list[Any]] = {}
    for item in payload if isinstance(payload, list) else [payload]:
        service = item.get("service") if isinstance(item, dict) else None
        groups.setdefault(shard_of(service if isinstance(service, str) else ""), []).append(item)
    if len(groups) == 1:
        return {shard: body for shard in groups}
    return {shard: json.dumps(items).encode() for shard, items in groups.items()}
