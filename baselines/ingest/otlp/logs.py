"""Log records of an OTLP ``ExportLogsServiceRequest`` as ``LogRecord``s.

Mapping decisions (the "why" is next to each helper):

* A record's ``service`` is its resource's ``service.name``, read as for spans
  (``unknown_service`` when absent; one longer than 200 characters rejects the resource's
  records as one rejected item).
* Its ``timestamp`` is ``time_unix_nano``, or ``observed_time_unix_nano`` when the source
  gave no time (the Collector's filelog receiver sets only the observed time unless a
  parser extracts one); a record with neither is rejected.
* Its ``severity``: ``severity_number``, else ``severity_text``, else read from the body
  (``severity_of_body``), else ``info``. Many pipelines (a filelog receiver without a
  severity parser, Docker's log driver) send every line with neither set, and the level
  is then only in the text.
* Its ``body``: a string as it is, Docker's JSON log wrapper unwrapped to its ``log``
  text, any other value as compact JSON; control characters (a stack trace's newlines)
  become spaces, and it is cut to the contract's 4000 characters. Its ``template`` is the
  body with its variable parts masked (``baselines.ingest.log_template``).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from annotated_types import MaxLen
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber

from baselines.ingest.log_template import template_of
from baselines.ingest.otlp.common import (
    MALFORMED,
    MAX_NAME_CHARS,
    Encoding,
    OtlpBatch,
    clean,
    construct,
    json_id,
    json_scopes,
    parse_request,
    proto_scopes,
    reject,
    timestamp,
)
from baselines.ingest.otlp.traces import MAX_SPAN_ID_CHARS, MAX_TRACE_ID_CHARS
from service.contract import LogRecord, LogSeverity


def _max_length(field: str) -> int:
    """The contract's bound on a field's length, so the two cannot drift apart."""
    for constraint in LogRecord.model_fields[field].metadata:
        if isinstance(constraint, MaxLen):
            return constraint.max_length
    raise LookupError(f"LogRecord.{field} has no maximum length")


MAX_BODY_CHARS: Final = _max_length("body")
MAX_BODY_DEPTH = 32
"""A body nested deeper is refused: no log statement writes one, and rendering it must not
exhaust the stack."""
LEVEL_WINDOW = 80
"""How many characters at the start of a body are searched for a level word: a line's
prefix (time, level, logger) fits, and a level word later in the message is text."""

_BY_NUMBER: tuple[LogSeverity, ...] = ("debug", "debug", "info", "warn", "error", "fatal")
"""Indexed by ``(severity_number - 1) // 4``: TRACE 1-4 and DEBUG 5-8 are both debug."""

SEVERITY_WORDS: Mapping[str, LogSeverity] = MappingProxyType(
    {
        **dict.fromkeys(("TRACE", "DEBUG", "FINE", "FINER", "FINEST", "VERBOSE"), "debug"),
        **dict.fromkeys(("INFO", "INFORMATION", "NOTICE", "CONFIG"), "info"),
        **dict.fromkeys(("WARN", "WARNING"), "warn"),
        **dict.fromkeys(("ERROR", "ERR", "SEVERE"), "error"),
        **dict.fromkeys(
            ("FATAL", "CRITICAL", "CRIT", "PANIC", "ALERT", "EMERG", "EMERGENCY"), "fatal"
        ),
        # pino and bunyan write the level as a number
        **{"10": "debug", "20": "debug", "30": "info", "40": "warn", "50": "error", "60": "fatal"},
    }
)
"""Level names of logging libraries (upper case; OTel's ``INFO2`` and the like lose their
digit first): syslog's, Java's (``SEVERE``, ``FINE``), Go's (``PANIC``), Python's."""

_LEVEL_IN_BODY = re.compile(
    r"\b(TRACE|DEBUG|INFO|WARN|WARNING|ERROR|FATAL|CRITICAL|SEVERE|PANIC)\b"
    r"|(?i:\b(?:level|lvl|severity)[\"']?\s*[=:]\s*[\"']?(\w+))"
    r"|(?i:\[(trace|debug|info|warn|warning|error|err|fatal|crit|critical)\])"
)
"""Where a line's level is: an upper-case level word (logback's ``12:00:00.123 ERROR
c.x.Y``, Python's ``ERROR:root:``, zap's tab-separated ``ERROR``), a ``level=error`` of
logfmt or ``"level":"error"`` of a JSON line (any case, also pino's numbers), or nginx's
``[error]``. A lower-case ``error`` in prose is not a level."""

_EXCEPTION_START = re.compile(
    r"\s*(?:Traceback \(most recent call last\)|Exception in thread\b"
    r"|(?:[A-Za-z_$][\w$]*\.)+[A-Z][\w$]*(?:Exception|Error|Throwable)\b"
    r"|(?:[A-Z]\w*)?(?:Error|Exception)(?::|$))"
)
"""A body that starts an exception: Java's ``java.lang.IllegalStateException: ...`` and
``Exception in thread "main" ...``, Python's ``Traceback (most recent call last):`` and its
last line ``ValueError: ...``, JavaScript's ``Error: ...``. Stack frames (``at
com.x.Y(Y.java:42)``) are not matched: a trace split into one record per line must count
as one error line, not forty."""

_DOCKER_KEYS = frozenset({"log", "stream", "time", "attrs"})


def parse_otlp_logs(body: bytes, encoding: Encoding) -> OtlpBatch:
    """Log records of an ``ExportLogsServiceRequest`` as ``LogRecord``s; see the module
    doc."""
    return parse_request(
        body,
        encoding,
        ExportLogsServiceRequest,
        ("resource_logs", "resourceLogs"),
        _logs_from_proto,
        _logs_from_json,
    )


# ----------------------------------------------------------------- severity


def severity_of(number: int, text: str, body: str) -> LogSeverity:
    """The record's own severity number, else its text, else the level its body shows."""
    if 1 <= number <= 24:
        return _BY_NUMBER[(number - 1) // 4]
    if text:
        word = SEVERITY_WORDS.get(text.strip().upper().rstrip("0123456789"))
        if word is not None:
            return word
    return severity_of_body(body)


def severity_of_body(body: str) -> LogSeverity:
    """``error`` for a body that starts an exception, else the first level word among its
    first ``LEVEL_WINDOW`` characters, else ``info``."""
    if _EXCEPTION_START.match(body):
        return "error"
    for match in _LEVEL_IN_BODY.finditer(body[:LEVEL_WINDOW]):
        word = next(group for group in match.groups() if group is not None)
        level = SEVERITY_WORDS.get(word.upper())
        if level is not None:
            return level
    return "info"


# ----------------------------------------------------------------- body


def body_text(value: object) -> str:
    """The text a person reads: a string as it is (Docker's wrapper unwrapped), any other
    value as compact JSON, control characters as spaces, at most ``MAX_BODY_CHARS``."""
    if value is None:
        return ""
    if isinstance(value, str):
        text = unwrap_docker(value)
    else:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return clean(text.rstrip("\r\n"), MAX_BODY_CHARS)


def unwrap_docker(text: str) -> str:
    """The ``log`` text of Docker's json-file line ``{"log":"...\\n","stream":"stdout",
    "time":"..."}``, which a Collector reading container files without the container parser
    sends as the body; any other text as it is."""
    if not text.startswith('{"log":'):
        return text
    try:
        wrapper = json.loads(text)
    except (ValueError, RecursionError):
        return text
    if isinstance(wrapper, dict) and wrapper.keys() <= _DOCKER_KEYS:
        log = wrapper.get("log")
        if isinstance(log, str):
            return log
    return text


def _proto_any(value: AnyValue, depth: int = 0) -> object:
    """An AnyValue as the Python value ``json.dumps`` renders: bytes as base64."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if depth > MAX_BODY_DEPTH:
        raise ValueError(f"body is nested deeper than {MAX_BODY_DEPTH} levels")
    if which == "kvlist_value":
        return {kv.key: _proto_any(kv.value, depth + 1) for kv in value.kvlist_value.values}
    if which == "array_value":
        return [_proto_any(item, depth + 1) for item in value.array_value.values]
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, which)


def _json_any(value: Any, depth: int = 0) -> object:
    """An OTLP/JSON AnyValue (``{"stringValue": ...}``; 64-bit ints are strings)."""
    if value is None or value == {}:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"an AnyValue is a {type(value).__name__}, not an object")
    if depth > MAX_BODY_DEPTH:
        raise ValueError(f"body is nested deeper than {MAX_BODY_DEPTH} levels")
    if "stringValue" in value:
        text = value["stringValue"]
        if not isinstance(text, str):
            raise TypeError(f"stringValue is a {type(text).__name__}")
        return text
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "bytesValue" in value:
        return str(value["bytesValue"])
    if "arrayValue" in value:
        return [_json_any(item, depth + 1) for item in value["arrayValue"].get("values") or ()]
    if "kvlistValue" in value:
        return {
            str(kv["key"]): _json_any(kv.get("value"), depth + 1)
            for kv in value["kvlistValue"].get("values") or ()
        }
    raise ValueError(f"unknown AnyValue {sorted(value)[:3]}")


# ----------------------------------------------------------------- records


def _add_record(
    batch: OtlpBatch,
    service: str,
    time_unix_nano: int,
    severity: LogSeverity,
    body: str,
    trace_id: str | None,
    span_id: str | None,
) -> None:
    """Check every constrained field, then build the event without pydantic validation."""
    problem = None
    if time_unix_nano <= 0:
        problem = "time_unix_nano and observed_time_unix_nano are unset"
    elif trace_id is not None and len(trace_id) > MAX_TRACE_ID_CHARS:
        problem = f"trace_id is longer than {MAX_TRACE_ID_CHARS} hex characters"
    elif span_id is not None and len(span_id) > MAX_SPAN_ID_CHARS:
        problem = f"span_id is longer than {MAX_SPAN_ID_CHARS} hex characters"
    if problem is not None:
        item: dict[str, object] = {
            "service": service,
            "time_unix_nano": time_unix_nano,
            "severity": severity,
            "body": body[:MAX_NAME_CHARS],
            "trace_id": trace_id if trace_id is None else trace_id[:MAX_TRACE_ID_CHARS],
            "span_id": span_id if span_id is None else span_id[:MAX_SPAN_ID_CHARS],
        }
        reject(batch, item, f"log record {body[:80]!r}: {problem}")
        return
    batch.events.append(
        construct(
            LogRecord,
            {
                "service": service,
                "timestamp": timestamp(time_unix_nano),
                "severity": severity,
                "body": body,
                "template": template_of(body),
                "trace_id": trace_id,
                "span_id": span_id,
            },
        )
    )


def _logs_from_proto(request: ExportLogsServiceRequest, batch: OtlpBatch) -> None:
    for resource, scope_logs in proto_scopes(
        request.resource_logs, "scope_logs", "log_records", batch, "log records"
    ):
        for record in scope_logs.log_records:
            try:
                body = body_text(_proto_any(record.body))
            except ValueError as exc:
                reject(batch, {"service": resource.service}, f"log record: {exc}")
                continue
            _add_record(
                batch,
                resource.service,
                record.time_unix_nano or record.observed_time_unix_nano,
                severity_of(record.severity_number, record.severity_text, body),
                body,
                record.trace_id.hex() or None,
                record.span_id.hex() or None,
            )


def _json_severity_number(value: Any) -> int:
    """OTLP/JSON writes enums as integers; the protobuf JSON mapping also allows names."""
    if isinstance(value, str) and value.startswith("SEVERITY_NUMBER_"):
        return SeverityNumber.Value(value)
    return int(value or 0)


def _logs_from_json(payload: dict[str, Any], batch: OtlpBatch) -> None:
    for resource, scope_logs in json_scopes(
        payload.get("resourceLogs"), "scopeLogs", "logRecords", batch, "log records"
    ):
        for record in scope_logs.get("logRecords") or ():
            try:
                body = body_text(_json_any(record.get("body")))
                text = record.get("severityText") or ""
                if not isinstance(text, str):
                    raise TypeError(f"severityText is a {type(text).__name__}")
                time_unix_nano = int(record.get("timeUnixNano") or 0) or int(
                    record.get("observedTimeUnixNano") or 0
                )
                _add_record(
                    batch,
                    resource.service,
                    time_unix_nano,
                    severity_of(_json_severity_number(record.get("severityNumber")), text, body),
                    body,
                    json_id(record.get("traceId"), 16, "traceId"),
                    json_id(record.get("spanId"), 8, "spanId"),
                )
            except MALFORMED as exc:
                item = record if isinstance(record, dict) else {"record": repr(record)[:200]}
                reject(batch, item, f"log record: malformed: {exc}")
