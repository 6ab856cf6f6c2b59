import json

import pytest

from baselines.ingest.json_events import MalformedMessage, parse_json_events, split_json_events
from service.contract import MetricSample, SpanEvent

SPAN = {
    "service": "checkout",
    "operation": "POST /checkout",
    "duration_ms": 12.5,
    "timestamp": "2026-11-16T09:00:00Z",
}


def test_one_object_and_arrays_of_spans_and_metrics_parse() -> None:
    metric = {"service": "checkout", "metric": "cpu_pct", "value": 40, "timestamp": 1_700_000_000}
    assert isinstance(parse_json_events(json.dumps(SPAN).encode()).events[0], SpanEvent)
    batch = parse_json_events(json.dumps([SPAN, metric]).encode())
    assert [type(e) for e in batch.events] == [SpanEvent, MetricSample]
    assert batch.events[1].timestamp.tzinfo is not None
    assert not batch.rejected


def test_a_bad_item_is_rejected_with_its_index_and_field_and_the_rest_kept() -> None:
    bad = dict(SPAN, duration_ms=-5)
    batch = parse_json_events(json.dumps([SPAN, bad, "x"]).encode())
    assert len(batch.events) == 1
    (item, reason), (_, reason2) = batch.rejected
    assert item == bad
    assert reason.startswith("[1]") and "duration_ms" in reason
    assert reason2.startswith("[2]") and "expected an object" in reason2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"duration_ms": float("nan")}, "duration_ms"),
        ({"duration_ms": 1e12}, "duration_ms"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"status": "slow"}, "status"),
        ({"servce": "typo"}, "servce"),
    ],
)
def test_invalid_fields_are_named(change: dict, field: str) -> None:
    body = json.dumps(dict(SPAN, **change), allow_nan=True).encode()
    ((_, reason),) = parse_json_events(body).rejected
    assert field in reason


def test_cpu_out_of_range_is_refused() -> None:
    metric = {"service": "a", "metric": "cpu_pct", "value": 140, "timestamp": 1_700_000_000}
    ((_, reason),) = parse_json_events(json.dumps(metric).encode()).rejected
    assert "cpu_pct must be within 0..100" in reason


@pytest.mark.parametrize("body", [b"not json", b"\xff\xfe", b'{"service": '])
def test_unparseable_bodies_raise_a_clear_error(body: bytes) -> None:
    with pytest.raises(MalformedMessage, match="not JSON"):
        parse_json_events(body)


def test_a_batch_splits_by_service_in_order_with_the_items_it_cannot_read() -> None:
    """The router's split: each shard's events in their order; an item without a service
    string goes along (to the shard of ""), for that shard's consumer to dead-letter."""
    search = {**SPAN, "service": "search"}
    items = [SPAN, search, {**SPAN, "service": 5}, "not an event", {**SPAN, "operation": "b"}]

    def shard(service: str) -> int:
        return 1 if service == "search" else 0

    parts = split_json_events(json.dumps(items).encode(), shard)
    assert {k: json.loads(v) for k, v in parts.items()} == {
        0: [items[0], items[2], items[3], items[4]],
        1: [search],
    }
    one = json.dumps(SPAN).encode()
    assert split_json_events(one, shard) == {0: one}
    with pytest.raises(MalformedMessage, match="not JSON"):
        split_json_events(b"{not json", shard)
