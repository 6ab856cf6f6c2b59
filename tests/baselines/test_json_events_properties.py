"""Hostile input for ``parse_json_events`` and ``split_json_events``. Whatever a producer
publishes, they return a batch or raise ``MalformedMessage`` with a reason. The consumer
dead-letters on ``MalformedMessage`` only: any other exception would stop it, or have the
broker redeliver the message until its delivery limit."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baselines.ingest.json_events import parse_json_events, split_json_events
from service.contract import MAX_DURATION_MS, TELEMETRY_EVENT, SpanEvent
from tests.baselines.ingest_properties import outcome_of, shard, split_loses_nothing
from tests.hostile import PROPERTIES, Tally, mangled, mutated, tally_fixture

tally = tally_fixture("message parsers (JSON events)")


# --------------------------------------------------------------------------- JSON events

names = st.text(min_size=1, max_size=200)
moments = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
attribute_values = st.one_of(
    st.text(max_size=50), st.integers(), st.floats(allow_nan=False), st.booleans()
)


@st.composite
def span_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid JSON span event (optional fields present or not)."""
    moment = draw(moments)
    event: dict[str, Any] = {
        "service": draw(names),
        "operation": draw(names),
        "duration_ms": draw(st.floats(0, MAX_DURATION_MS)),
        "timestamp": draw(st.sampled_from([moment.isoformat(), int(moment.timestamp())])),
    }
    optional = {
        "status": st.sampled_from(["ok", "error"]),
        "kind": st.sampled_from(["server", "client", "consumer", "producer"]),
        "peer_service": names,
        "trace_id": st.text(max_size=64),
        "span_id": st.text(max_size=32),
        "attributes": st.dictionaries(st.text(max_size=20), attribute_values, max_size=4),
    }
    for key in draw(st.lists(st.sampled_from(sorted(optional)), unique=True)):
        event[key] = draw(optional[key])
    return event


@st.composite
def metric_samples(draw: st.DrawFn) -> dict[str, Any]:
    """A valid JSON metric sample."""
    metric = draw(
        st.sampled_from(["cpu_pct", "memory_pct", "queue_depth"])
        | st.text(min_size=1, max_size=100)
    )
    top = 100.0 if metric.endswith("_pct") else 1e12
    return {
        "service": draw(names),
        "metric": metric,
        "value": draw(st.floats(0, top)),
        "timestamp": draw(moments).isoformat(),
    }


valid_events = span_events() | metric_samples()

WRONG: dict[str, list[Any]] = {
    "service": ["", "x" * 201, 5, None, [], {}],
    "operation": ["", "x" * 201, 1.5, None, ["a"]],
    "duration_ms": [-1, -1e-9, MAX_DURATION_MS + 1, float("nan"), float("inf"), "x", None, []],
    "timestamp": ["not a date", "2026-13-01T00:00:00Z", None, [], {}, 1e300, "9999-99-99"],
    "status": ["fine", 1, None],
    "kind": ["unknown", 2, None],
    "peer_service": ["", "x" * 201, 7],
    "trace_id": ["x" * 65, 5],
    "span_id": ["x" * 33, 5],
    "attributes": [[1], "a", {"k": [1]}, {"k": {"n": 1}}],
    "metric": ["", "x" * 101, 3, None],
    "value": [-1, float("nan"), float("-inf"), "five", None],
}
"""Values each field must refuse, whatever the other fields hold."""


@st.composite
def invalid_items(draw: st.DrawFn) -> Any:
    """An item of a batch that must be rejected: not an object, a required field missing,
    an unknown field, or one field with a value it must refuse."""
    event = draw(valid_events)
    how = draw(st.sampled_from(["not an object", "missing", "unknown field", "wrong value"]))
    if how == "not an object":
        return draw(st.one_of(st.none(), st.integers(), st.text(), st.lists(st.integers())))
    if how == "missing":
        required = ["service", "timestamp"] + (
            ["metric", "value"] if "metric" in event else ["operation", "duration_ms"]
        )
        del event[draw(st.sampled_from(required))]
        return event
    if how == "unknown field":
        event["servcie"] = "typo"
        return event
    field = draw(st.sampled_from([key for key in event if key in WRONG]))
    value = draw(st.sampled_from(WRONG[field]))
    if field == "metric" and not isinstance(value, str):
        value = None  # a metric name of another type would make the item a span
    event[field] = value
    if field == "metric" and value is None:
        del event["metric"]  # a sample without a metric is a span without its fields
    return event


def dumps(value: Any) -> str:
    """For comparing items that may hold NaN (which is not equal to itself)."""
    return json.dumps(value, default=str)


@settings(PROPERTIES, max_examples=200)
@given(st.binary(max_size=2000) | st.text(max_size=2000).map(str.encode))
def test_json_events_any_bytes_give_a_batch_or_a_reason(tally: Tally, body: bytes) -> None:
    outcome_of(lambda: parse_json_events(body), tally, "json_events any bytes:")


@settings(PROPERTIES, max_examples=200)
@given(st.data())
def test_json_events_near_valid_messages_give_a_batch_or_a_reason(
    tally: Tally, data: st.DataObject
) -> None:
    """Valid events with fields mutated, wrong types, huge numbers, NaN/Infinity literals,
    deep nesting, lone surrogates, control characters; then damaged at the byte level."""
    batch = data.draw(st.lists(valid_events, min_size=1, max_size=4))
    document: Any = batch if data.draw(st.booleans()) else batch[0]
    body = data.draw(mutated(document))
    if data.draw(st.booleans()):
        body = data.draw(mangled(body))
    outcome_of(lambda: parse_json_events(body), tally, "json_events near valid:")
    split_loses_nothing(
        lambda: {k: (part, "") for k, part in split_json_events(body, shard).items()},
        lambda part, _: parse_json_events(part),
        lambda: parse_json_events(body),
        tally,
        "json_events split:",
    )


@settings(PROPERTIES, max_examples=150)
@given(st.lists(st.booleans(), min_size=1, max_size=12), st.data())
def test_a_mixed_batch_loses_nothing_and_keeps_the_order(
    tally: Tally, plan: list[bool], data: st.DataObject
) -> None:
    """accepted + rejected == sent; the accepted ones are the valid ones in their order, the
    rejected ones the invalid ones, each reason naming the item's position."""
    items = [data.draw(valid_events if valid else invalid_items()) for valid in plan]
    batch = parse_json_events(json.dumps(items).encode())
    tally("json_events mixed batch")
    assert len(batch.events) + len(batch.rejected) == len(items)
    valid = [item for ok, item in zip(plan, items, strict=True) if ok]
    assert batch.events == [TELEMETRY_EVENT.validate_python(item) for item in valid]
    invalid = [(i, item) for i, (ok, item) in enumerate(zip(plan, items, strict=True)) if not ok]
    assert [dumps(item) for item, _ in batch.rejected] == [dumps(item) for _, item in invalid]
    for (_, reason), (index, _) in zip(batch.rejected, invalid, strict=True):
        assert reason.startswith(f"[{index}]"), reason


@settings(PROPERTIES, max_examples=150)
@given(st.lists(span_events(), min_size=1, max_size=5))
def test_json_span_events_round_trip(tally: Tally, events: list[dict[str, Any]]) -> None:
    batch = parse_json_events(json.dumps(events).encode())
    tally("json_events round trip")
    assert not batch.rejected
    for sent, got in zip(events, batch.events, strict=True):
        assert isinstance(got, SpanEvent)
        assert (got.service, got.operation, got.duration_ms) == (
            sent["service"],
            sent["operation"],
            sent["duration_ms"],
        )
        stamp = sent["timestamp"]
        expected = (
            datetime.fromtimestamp(stamp, UTC)
            if isinstance(stamp, int)
            else datetime.fromisoformat(stamp)
        )
        assert got.timestamp == expected
        assert got.kind == sent.get("kind", "server") and got.status == sent.get("status", "ok")
        assert got.peer_service == sent.get("peer_service")
        assert got.attributes == sent.get("attributes")


# --------------------------------------------------------------------------- known crashes

KNOWN: dict[str, bytes] = {
    "JSON nested 100,000 deep": b"[" * 100_000,
    "a 5000-digit integer": b'{"value": ' + b"9" * 5000 + b"}",
    "a timestamp in year 0 once in UTC": json.dumps(
        {
            "service": "a",
            "operation": "b",
            "duration_ms": 1,
            "timestamp": "0001-01-01T00:00+01:00",
        }
    ).encode(),
}
"""Messages that raised RecursionError, ValueError, OverflowError out of the parser, or
gave an event the contract refuses, before it was hardened against hostile input."""


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_messages_that_crashed_the_parser_are_refused_with_a_reason(
    tally: Tally, name: str
) -> None:
    body = KNOWN[name]
    assert outcome_of(lambda: parse_json_events(body), tally, "known crash:") in (
        "malformed",
        "rejected",
    )
