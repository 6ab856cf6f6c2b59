"""What the hostile-input tests of the message parsers assert of every outcome: whatever a
producer publishes, a parser returns a batch the contract allows or raises
``MalformedMessage`` with a reason, and the router's split of a message loses nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC
from functools import partial

import pytest

from baselines.ingest.json_events import MalformedMessage, ParsedBatch
from service.contract import MetricSample, SpanEvent
from tests.hostile import Tally


def assert_usable(batch: ParsedBatch) -> None:
    """Each event is what the contract allows (it equals its validated self), each rejected
    item has a reason and can be dead-lettered as the consumer does it (``json.dumps``)."""
    for event in batch.events:
        assert isinstance(event, SpanEvent | MetricSample)
        assert type(event).model_validate(event.model_dump()) == event
        assert event.timestamp.tzinfo is UTC
    for _, reason in batch.rejected:
        assert isinstance(reason, str) and reason
    json.dumps([item for item, _ in batch.rejected], default=str)


def outcome_of(parse: Callable[[], ParsedBatch], tally: Tally, label: str) -> str:
    """Parse; a batch must be usable, an error must be MalformedMessage with a reason (any
    other exception fails the test). Counted in the tally."""
    try:
        batch = parse()
    except MalformedMessage as exc:
        assert str(exc), "MalformedMessage without a reason"
        tally(f"{label} malformed")
        return "malformed"
    assert_usable(batch)
    tally(f"{label} {'partly rejected' if batch.rejected else 'accepted'}")
    return "rejected" if batch.rejected else "accepted"


def shard(service: str) -> int:
    """Any deterministic mapping will do: this one spreads the seeds' services."""
    return len(service) % 3


def split_loses_nothing(
    split: Callable[[], dict[int, tuple[bytes, str]]],
    parse: Callable[[bytes, str], ParsedBatch],
    whole: Callable[[], ParsedBatch],
    tally: Tally,
    label: str,
) -> None:
    """The router's split of a message: refused with a reason (and then the consumer would
    refuse the whole message too), or parts that each parse, as the shard's consumer does,
    to a batch or a reason; when the whole parses, the parts give its events and rejected
    items, no more and no fewer."""
    try:
        parts = split()
    except MalformedMessage as exc:
        assert str(exc), "MalformedMessage without a reason"
        with pytest.raises(MalformedMessage):
            whole()
        tally(f"{label} malformed")
        return
    outcomes = [outcome_of(partial(parse, *part), tally, label) for part in parts.values()]
    try:
        expected = whole()
    except MalformedMessage:
        assert "malformed" in outcomes  # only the parts of the unreadable resources are lost
        return
    batches = [parse(body, type_) for body, type_ in parts.values()]
    assert sorted(repr(e) for b in batches for e in b.events) == sorted(
        repr(e) for e in expected.events
    )
    assert sum(len(b.rejected) for b in batches) == len(expected.rejected)
