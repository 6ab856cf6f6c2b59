"""OTLP log records as the Collector's rabbitmqexporter publishes them (routing key
``otlp_logs``, protobuf or OTLP/JSON), and log records sent as JSON events."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord as ProtoRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from baselines.ingest.json_events import MalformedMessage, ParsedBatch, parse_json_events
from baselines.ingest.otlp import (
    MAX_BODY_CHARS,
    OtlpBatch,
    parse_otlp,
    parse_otlp_logs,
    severity_of,
    split_otlp,
)
from service.contract import LogRecord
from tests.baselines.otlp_helpers import MS, RESOURCE, T0, assert_valid, both
from tests.otlp import to_otlp_json

TRACE_ID = bytes(range(16))
SPAN_ID = bytes(range(8, 16))
NEZHA_LOG = (
    Path(__file__).resolve().parents[3]
    / "shared/data/nezha-dev/rca_data/2023-01-29/log/08_43_log.csv"
)


def text(value: str) -> AnyValue:
    return AnyValue(string_value=value)


def record(
    body: AnyValue | str | None = None,
    *,
    time: int = T0,
    observed: int = 0,
    number: int = 0,
    severity_text: str = "",
    trace_id: bytes = b"",
    span_id: bytes = b"",
) -> ProtoRecord:
    """A log record as an OTel SDK or the Collector's filelog receiver writes it."""
    value = text(body) if isinstance(body, str) else body
    return ProtoRecord(
        time_unix_nano=time,
        observed_time_unix_nano=observed,
        severity_number=number,  # type: ignore[arg-type]
        severity_text=severity_text,
        body=value,
        trace_id=trace_id,
        span_id=span_id,
    )


def request(
    records: Iterable[ProtoRecord], resource: dict[str, Any] | None = None
) -> ExportLogsServiceRequest:
    attributes = RESOURCE if resource is None else resource
    message = ExportLogsServiceRequest()
    resource_logs = message.resource_logs.add()
    resource_logs.resource.CopyFrom(
        Resource(attributes=[KeyValue(key=k, value=text(v)) for k, v in attributes.items()])
    )
    resource_logs.scope_logs.add().log_records.extend(records)
    return message


def logs(batch: ParsedBatch) -> list[LogRecord]:
    assert all(isinstance(e, LogRecord) for e in batch.events)
    return [e for e in batch.events if isinstance(e, LogRecord)]


def parsed(records: Iterable[ProtoRecord], encoding: str) -> OtlpBatch:
    body = dict((e, b) for b, e in both(request(records)))[encoding]
    batch = parse_otlp_logs(body, encoding)  # type: ignore[arg-type]
    assert_valid(batch)
    return batch


# --------------------------------------------------------------------------- mapping


@pytest.mark.parametrize("encoding", ["proto", "json"])
def test_records_map_service_time_severity_body_template_and_ids(encoding: str) -> None:
    batch = parsed(
        [
            record(
                "payment 4242 declined for order 17\n",
                number=17,
                severity_text="ERROR",
                trace_id=TRACE_ID,
                span_id=SPAN_ID,
            ),
            record("cache warmed in 35 ms", time=0, observed=T0 + 5 * MS, number=9),
        ],
        encoding,
    )
    assert not batch.rejected and batch.skipped == 0
    declined, warmed = logs(batch)
    assert declined.service == "checkout"
    assert declined.timestamp == datetime(2025, 11, 16, 9, 0, tzinfo=UTC)
    assert declined.severity == "error"
    assert declined.body == "payment 4242 declined for order 17"
    assert declined.template == "payment <*> declined for order <*>"
    assert (declined.trace_id, declined.span_id) == (TRACE_ID.hex(), SPAN_ID.hex())
    # no time of its own: the time the Collector observed it
    assert warmed.timestamp == datetime(2025, 11, 16, 9, 0, 0, 5000, tzinfo=UTC)
    assert (warmed.severity, warmed.trace_id, warmed.span_id) == ("info", None, None)


@pytest.mark.parametrize(
    ("number", "severity"),
    [
        (1, "debug"),
        (4, "debug"),
        (5, "debug"),
        (8, "debug"),
        (9, "info"),
        (12, "info"),
        (13, "warn"),
        (16, "warn"),
        (17, "error"),
        (20, "error"),
        (21, "fatal"),
        (24, "fatal"),
    ],
)
def test_the_severity_number_decides(number: int, severity: str) -> None:
    assert severity_of(number, "INFO", "12:00:00.123 INFO c.x.Y - fine") == severity


@pytest.mark.parametrize(
    ("severity_text", "severity"),
    [
        ("trace", "debug"),
        ("Debug", "debug"),
        ("INFO", "info"),
        ("INFO2", "info"),
        ("warn", "warn"),
        ("WARNING", "warn"),
        ("error", "error"),
        ("ERR", "error"),
        ("SEVERE", "error"),
        ("Fatal", "fatal"),
        ("CRITICAL", "fatal"),
        ("panic", "fatal"),
    ],
)
def test_without_a_number_the_severity_text_decides(severity_text: str, severity: str) -> None:
    assert severity_of(0, severity_text, "12:00:00.123 INFO c.x.Y - fine") == severity


@pytest.mark.parametrize(
    ("body", "severity"),
    [
        ("16:42:22.418 ERROR f.s.FoodServiceImpl#302 TraceID: 1f SpanID: 2e [getAllFood]", "error"),
        ("12:00:00.123 [main] WARN  c.x.Y - disk at 91%", "warn"),
        ("ERROR:root:Failed to connect to 10.0.0.12:5432", "error"),
        ("CRITICAL:celery:worker lost", "fatal"),
        ('time="2026-11-16T09:00:00Z" level=error msg="dial tcp: connection refused"', "error"),
        ('time="2026-11-16T09:00:00Z" level=debug msg="tick"', "debug"),
        ('{"level":"warn","msg":"slow query","ms":900}', "warn"),
        ('{"level":50,"time":1700000000,"msg":"request failed"}', "error"),  # pino
        (
            "2026/11/16 09:00:00 [error] 31#31: *1 connect() failed (111: Connection refused)",
            "error",
        ),
        ("java.lang.IllegalStateException: No instances available for ts-food-service", "error"),
        ('Exception in thread "main" java.lang.NullPointerException', "error"),
        ("Traceback (most recent call last):", "error"),
        ("ValueError: invalid literal for int() with base 10: 'x'", "error"),
        ("GET /health 200 in 3 ms", "info"),
        ("the error rate is fine today", "info"),  # a level word in prose is not a level
        ("\tat com.x.Y.charge(Y.java:42)", "info"),  # one frame is not one more error
        ("x" * 90 + " ERROR", "info"),  # past the line's prefix
    ],
)
def test_without_number_or_text_the_body_tells_the_severity(body: str, severity: str) -> None:
    assert severity_of(0, "", body) == severity
    assert severity_of(0, "NOT-A-LEVEL", body) == severity


@pytest.mark.parametrize("encoding", ["proto", "json"])
def test_bodies_are_unwrapped_rendered_cleaned_and_cut(encoding: str) -> None:
    docker = json.dumps(
        {
            "log": "16:42:22.418 ERROR f.s.FoodServiceImpl#302 [getAllFood][Failed]\n",
            "stream": "stdout",
            "time": "2023-01-29T08:42:22.41946Z",
        },
        separators=(",", ":"),
    )
    structured = AnyValue(
        kvlist_value=KeyValueList(
            values=[
                KeyValue(key="event", value=text("order.failed")),
                KeyValue(key="attempts", value=AnyValue(int_value=3)),
                KeyValue(key="ok", value=AnyValue(bool_value=False)),
                KeyValue(
                    key="ids",
                    value=AnyValue(array_value=ArrayValue(values=[text("a"), text("b")])),
                ),
            ]
        )
    )
    batch = parsed(
        [
            record(docker),
            record(structured, number=17),
            record("first line\n\tat com.x.Y(Y.java:1)\r\n\x1b[31mred\x1b[0m \u202egnp.exe\n\n"),
            record("y" * 10_000),
            record(None, number=13),
        ],
        encoding,
    )
    unwrapped, rendered, cleaned, long, empty = logs(batch)
    assert unwrapped.body == "16:42:22.418 ERROR f.s.FoodServiceImpl#302 [getAllFood][Failed]"
    assert unwrapped.severity == "error"  # read from the unwrapped line
    assert unwrapped.template == "<*> ERROR f.s.FoodServiceImpl#<*> [getAllFood][Failed]"
    assert rendered.body == '{"event":"order.failed","attempts":3,"ok":false,"ids":["a","b"]}'
    assert rendered.template == '{"event":<*>,"attempts":<*>,"ok":false,"ids":[<*>]}'
    assert cleaned.body == "first line at com.x.Y(Y.java:1) [31mred [0m  gnp.exe"
    assert len(long.body) == MAX_BODY_CHARS == LogRecord.model_fields["body"].metadata[0].max_length
    assert len(long.template) <= 300
    assert (empty.body, empty.template, empty.severity) == ("", "", "warn")


def test_text_that_only_looks_like_dockers_wrapper_stays() -> None:
    other = '{"log":"x","level":"error"}'
    batch = parsed([record(other), record('{"log": broken')], "proto")
    assert [e.body for e in logs(batch)] == [other, '{"log": broken']


# --------------------------------------------------------------------------- rejected


@pytest.mark.parametrize("encoding", ["proto", "json"])
def test_a_record_without_any_time_is_rejected_and_the_rest_kept(encoding: str) -> None:
    batch = parsed([record("no time", time=0, observed=0), record("on time")], encoding)
    assert [e.body for e in logs(batch)] == ["on time"]
    ((item, reason),) = batch.rejected
    assert "time_unix_nano and observed_time_unix_nano are unset" in reason
    assert "'no time'" in reason
    json.dumps(item)  # the consumer dead-letters it as JSON


@pytest.mark.parametrize("encoding", ["proto", "json"])
def test_a_service_name_over_the_limit_rejects_its_records_as_one_item(encoding: str) -> None:
    body = dict(
        (e, b) for b, e in both(request([record("a"), record("b")], {"service.name": "s" * 201}))
    )
    batch = parse_otlp_logs(body[encoding], encoding)  # type: ignore[arg-type]
    assert batch.events == []
    ((item, reason),) = batch.rejected
    assert "service.name is longer than 200 characters: its 2 log records are refused" in reason
    json.dumps(item)


def test_a_proto_trace_id_over_the_limit_is_rejected() -> None:
    batch = parsed([record("long id", trace_id=bytes(33)), record("fine")], "proto")
    assert [e.body for e in logs(batch)] == ["fine"]
    ((_, reason),) = batch.rejected
    assert "trace_id is longer than 64 hex characters" in reason


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"traceId": "not-hex"}, "traceId 'not-hex' is neither 32 hex digits nor base64"),
        ({"spanId": 7}, "spanId is not a string"),
        ({"timeUnixNano": "soon"}, "invalid literal for int()"),
        ({"timeUnixNano": str(10**30)}, "malformed"),
        ({"severityNumber": "SEVERITY_NUMBER_LOUD"}, "SEVERITY_NUMBER_LOUD"),
        ({"severityText": 5}, "severityText is a int"),
        ({"body": "plain"}, "an AnyValue is a str"),
        ({"body": {"stringValue": 5}}, "stringValue is a int"),
        ({"body": {"pictureValue": "x"}}, "unknown AnyValue"),
    ],
)
def test_malformed_json_fields_reject_their_record_with_a_reason(change: dict, reason: str) -> None:
    payload = json.loads(to_otlp_json(request([record("broken"), record("fine")])))
    records = payload["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    records[0].update(change)
    batch = parse_otlp_logs(json.dumps(payload).encode(), "json")
    assert [e.body for e in logs(batch)] == ["fine"]
    ((item, message),) = batch.rejected
    assert message.startswith("log record: malformed") and reason in message
    assert item == records[0]


def test_a_body_nested_too_deeply_is_rejected_not_a_crash() -> None:
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(200):
        value = {"arrayValue": {"values": [value]}}
    payload = json.loads(to_otlp_json(request([record("fine")])))
    payload["resourceLogs"][0]["scopeLogs"][0]["logRecords"].insert(
        0, {"timeUnixNano": str(T0), "body": value}
    )
    batch = parse_otlp_logs(json.dumps(payload).encode(), "json")
    assert [e.body for e in logs(batch)] == ["fine"]
    ((_, reason),) = batch.rejected
    assert "nested deeper than 32 levels" in reason


# --------------------------------------------------------------------------- dispatch


def test_otlp_logs_messages_are_dispatched_to_the_log_parser() -> None:
    message = request([record("GET /health 200", number=9), record("ERROR boom")])
    expected = parse_otlp_logs(message.SerializeToString(), "proto").events
    assert len(expected) == 2
    for body, _ in both(message):
        for content_type in ("", "application/x-protobuf", "application/json"):
            if content_type and ("json" in content_type) != body.startswith(b"{"):
                continue
            assert parse_otlp(body, "otlp_logs", content_type).events == expected


@pytest.mark.parametrize("encoding", ["proto", "json"])
def test_a_log_request_splits_by_service_into_requests_that_parse_to_the_same_records(
    encoding: str,
) -> None:
    shards = {"checkout": 0, "search": 1, "unknown_service": 1}
    message = request([record("checkout line 1"), record("checkout line 2")])
    for service in ("search", None):
        other = request([record(f"{service} line")], {"service.name": service} if service else {})
        message.resource_logs.extend(other.resource_logs)
    body = dict((e, b) for b, e in both(message))[encoding]
    parts = split_otlp(body, "otlp_logs", "", shards.__getitem__)
    assert parts.keys() == {0, 1}
    records = []
    for shard, (part, content_type) in parts.items():
        batch = parse_otlp(part, "otlp_logs", content_type)
        assert not batch.rejected and {shards[e.service] for e in logs(batch)} == {shard}
        records += batch.events
    whole = parse_otlp(body, "otlp_logs", "").events
    assert len(whole) == 4 and sorted(records, key=repr) == sorted(whole, key=repr)


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b'{"resourceSpans": []}', "", "no 'resourceLogs'"),
        (b'{"resourceLogs": [{"scopeLogs": 5}]}', "", "malformed OTLP/JSON"),
        (b"\xff\xfe garbage", "application/x-protobuf", "not an OTLP protobuf"),
    ],
)
def test_unusable_log_messages_raise_a_clear_reason(
    body: bytes, content_type: str, reason: str
) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        parse_otlp(body, "otlp_logs", content_type)


# --------------------------------------------------------------------------- real lines


@pytest.mark.skipif(not NEZHA_LOG.exists(), reason=f"{NEZHA_LOG} is absent")
def test_trainticket_lines_in_dockers_wrapper_get_their_level_and_ids() -> None:
    """TrainTicket's lines as a Collector reading the container files without a parser
    sends them: the body is Docker's wrapper, no severity is set, only the time."""
    with NEZHA_LOG.open(newline="") as file:
        rows = list(islice(csv.DictReader(file), 600))
    message = request(
        record(row["Log"], time=int(row["TimeUnixNano"]), trace_id=bytes.fromhex(row["TraceID"]))
        for row in rows
    )
    batch = parse_otlp(message.SerializeToString(), "otlp_logs", "")
    assert not batch.rejected and len(batch.events) == len(rows)
    for row, event in zip(rows, logs(batch), strict=True):
        level = json.loads(row["Log"])["log"].split()[1].lower()
        assert event.severity == level
        assert event.trace_id == row["TraceID"]
        assert event.body == json.loads(row["Log"])["log"].rstrip("\n")[:MAX_BODY_CHARS]
    assert {e.severity for e in logs(batch)} >= {"info", "warn", "error"}


# --------------------------------------------------------------------------- JSON events


def test_a_json_event_with_severity_or_body_and_no_operation_is_a_log_record() -> None:
    events = [
        {"service": "checkout", "timestamp": "2026-11-16T09:00:00Z", "severity": "error"},
        {"service": "checkout", "timestamp": 1_763_283_600, "body": "retry 3 of 5"},
        {
            "service": "checkout",
            "timestamp": "2026-11-16T09:00:00Z",
            "body": "done",
            "template": "given",
        },
        {"service": "a", "operation": "GET /", "duration_ms": 3, "timestamp": 1_763_283_600},
    ]
    batch = parse_json_events(json.dumps(events).encode())
    assert not batch.rejected
    error, retry, given, span = batch.events
    assert isinstance(error, LogRecord) and error.severity == "error" and error.body == ""
    assert isinstance(retry, LogRecord) and retry.severity == "info"
    assert retry.template == "retry <*> of <*>"  # filled in, as for OTLP records
    assert isinstance(given, LogRecord) and given.template == "given"
    assert not isinstance(span, LogRecord)


def test_a_bad_json_log_record_is_rejected_with_its_field() -> None:
    bad = [
        {"service": "a", "timestamp": "2026-11-16T09:00:00Z", "severity": "loud"},
        {"service": "a", "timestamp": "2026-11-16T09:00:00Z", "body": "x" * 4001},
        {"service": "a", "severity": "info", "body": "x", "operation": "GET /"},
    ]
    batch = parse_json_events(json.dumps(bad).encode())
    assert batch.events == []
    reasons = [reason for _, reason in batch.rejected]
    assert reasons[0].startswith("[0] severity:")
    assert reasons[1].startswith("[1] body:")
    assert "duration_ms" in reasons[2]  # with an operation it is a span, and says so
