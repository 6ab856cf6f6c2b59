"""What the OTLP signal modules share: the batch they fill, decoding a request body in
either encoding, the resource (service) of a group of spans, metrics or log records,
attribute values, and building events.

Events are built with ``construct`` (``model_construct`` minus its overhead) for speed,
after the signal modules have checked every field the contract constrains (names,
duration range, finite values, percentages, UTC timestamps, lengths); anything that fails goes to
``rejected`` with a reason that names the span or metric and the field. Rejected items are
small JSON-serialisable dicts (the consumer dead-letters them with ``json.dumps``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple, TypeVar

from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from baselines.ingest.json_events import MAX_REASON_CHARS, MalformedMessage, ParsedBatch, load_json
from service.contract import CONTROL_CHARS, LogRecord, MetricSample, SpanEvent, SpanHistogram

Encoding = Literal["proto", "json"]

UNKNOWN_SERVICE = "unknown_service"
MAX_NAME_CHARS = 200
MAX_EVIDENCE_CHARS = 300

_Event = TypeVar("_Event", SpanEvent, MetricSample, LogRecord, SpanHistogram)
_new = object.__new__
_set = object.__setattr__

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CONTROL = re.compile(f"(?:{CONTROL_CHARS.pattern})+")

_ENVIRONMENT_KEYS = ("deployment.environment.name", "deployment.environment")
"""The newer semantic conventions renamed the key; both are reported as
``deployment.environment``, the newer one winning."""
RESOURCE_KEYS = frozenset({"service.name", "service.version", *_ENVIRONMENT_KEYS})


@dataclass
class OtlpBatch(ParsedBatch):
    """A ``ParsedBatch`` (so the consumer and detector take it unchanged) that also counts
    ``skipped``: spans of kind INTERNAL/UNSPECIFIED and metric data points the OTLP parsers do
    not ingest by design (histograms, summaries, monotonic counters, points flagged
    NO_RECORDED_VALUE, memory utilisation without a ``used`` state). They are neither events
    nor rejected: nothing is wrong with them, so they must not be dead-lettered."""

    skipped: int = 0


# --------------------------------------------------------------------------- decoding


MALFORMED = (TypeError, ValueError, AttributeError, KeyError, OverflowError)
"""What walking a hostile OTLP/JSON tree raises: a list where an object belongs, a text
that is not a number, ``Infinity`` or a 10**30 nanoseconds timestamp (OverflowError from
``int`` and ``timedelta``)."""


def check_encoding(encoding: str) -> None:
    if encoding not in ("proto", "json"):
        raise MalformedMessage(f"unknown OTLP encoding {encoding!r}; expected 'proto' or 'json'")


def json_object(body: bytes, field: str, message: str) -> dict[str, Any]:
    """The decoded OTLP/JSON request; a non-empty object without ``field`` is refused,
    since it is almost surely a message routed to the wrong queue, not an empty request."""
    payload = load_json(body)
    if not isinstance(payload, dict):
        raise MalformedMessage(f"not an OTLP/JSON {message}: a {type(payload).__name__}")
    if any(marker in body for marker in _SURROGATE_MARKERS) and not _valid_unicode(payload):
        raise MalformedMessage(
            f"not an OTLP/JSON {message}: a string holds a lone surrogate (\\ud800-\\udfff), "
            "which is not Unicode text (protobuf refuses such a message too)"
        )
    if payload and field not in payload:
        keys = ", ".join(sorted(payload)[:5])
        raise MalformedMessage(f"not an OTLP/JSON {message}: no {field!r} (keys: {keys})")
    return payload


_SURROGATE_MARKERS = (b"\\ud", b"\\uD", b"\xed", b"\x00")
"""A body without these cannot decode to a lone surrogate: no escape of one, no CESU-8 lead
byte, and not UTF-16/32 (which ``json`` also reads, and which always holds a zero byte)."""


def _valid_unicode(payload: dict[str, Any]) -> bool:
    """No lone surrogate anywhere (an escape such as ``"\\ud800"``, or its CESU-8 bytes,
    which ``json`` decodes too): events must hold text pydantic accepts and that can be
    encoded again. Checked only when the body holds one of ``_SURROGATE_MARKERS``."""
    try:
        json.dumps(payload, ensure_ascii=False).encode()
    except (UnicodeEncodeError, RecursionError):
        return False
    return True


_Request = TypeVar("_Request", bound=Message)


def proto_request(cls: type[_Request], body: bytes, field: str) -> _Request:
    """Decode; a non-empty body that decodes to an empty request carried only unknown
    fields, so it is not this message type either."""
    try:
        request = cls.FromString(body)
    except DecodeError as exc:
        raise MalformedMessage(
            f"not an OTLP protobuf {cls.__name__}: {exc}"[:MAX_REASON_CHARS]
        ) from exc
    if body and not getattr(request, field):
        raise MalformedMessage(f"not an OTLP protobuf {cls.__name__}: no {field}")
    return request


def decode_failure(message: str, exc: Exception) -> MalformedMessage:
    return MalformedMessage(f"malformed OTLP/JSON {message}: {exc!r}"[:MAX_REASON_CHARS])


def parse_request(
    body: bytes,
    encoding: str,
    cls: type[_Request],
    fields: tuple[str, str],
    from_proto: Callable[[_Request, OtlpBatch], None],
    from_json: Callable[[dict[str, Any], OtlpBatch], None],
) -> OtlpBatch:
    """One OTLP export request in either encoding into a batch: ``fields`` names its
    list of resources in protobuf and in JSON (``resource_spans``, ``resourceSpans``)."""
    check_encoding(encoding)
    batch = OtlpBatch()
    if encoding == "proto":
        from_proto(proto_request(cls, body, fields[0]), batch)
        return batch
    payload = json_object(body, fields[1], cls.__name__)
    try:
        from_json(payload, batch)
    except MALFORMED as exc:
        raise decode_failure(cls.__name__, exc) from exc
    return batch


# --------------------------------------------------------------------------- shared helpers


class Resource(NamedTuple):
    service: str
    attributes: dict[str, str | int | float | bool] | None
    """Shared by the resource's spans without evidence: read-only by convention."""


def resource_of(values: Mapping[str, object]) -> Resource:
    """The service and the resource attributes worth carrying as evidence."""
    raw = values.get("service.name")
    service = str(raw) if raw not in (None, "") else UNKNOWN_SERVICE
    attributes: dict[str, str | int | float | bool] = {}
    if (version := values.get("service.version")) not in (None, ""):
        attributes["service.version"] = clean(str(version))
    for key in _ENVIRONMENT_KEYS:
        if (environment := values.get(key)) not in (None, ""):
            attributes["deployment.environment"] = clean(str(environment))
            break
    return Resource(service, attributes or None)


def clean(text: str, limit: int = MAX_EVIDENCE_CHARS) -> str:
    """Untrusted text for the evidence list or a log record's body: control characters
    (newlines of a stack trace, terminal escapes, the bidirectional overrides that reorder
    what a dashboard shows) collapsed to a space, and at most ``limit`` characters. Only
    the first ``4 * limit`` characters are read, so a huge text costs no more than that."""
    return _CONTROL.sub(" ", text[: 4 * limit]).strip()[:limit]


def timestamp(unix_nano: int) -> datetime:
    """Exact to the microsecond (a float of seconds would lose it), always UTC."""
    return EPOCH + timedelta(microseconds=unix_nano // 1000)


def construct(cls: type[_Event], fields: dict[str, Any]) -> _Event:
    """An instance of a pydantic model from fields the signal modules have already checked,
    without validation: what ``model_construct`` does, minus its per-field alias and default
    handling, which costs 2.7 us of the 6.7 us a span may take at 150,000 spans/s.
    ``fields`` must hold every field of the model; the tests compare the result with a
    validated instance so that a pydantic upgrade that changes this cannot pass silently."""
    event = _new(cls)
    _set(event, "__dict__", fields)
    _set(event, "__pydantic_fields_set__", set(fields))
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", None)
    return event


def reject(batch: ParsedBatch, item: dict[str, object], reason: str) -> None:
    batch.rejected.append((item, reason[:MAX_REASON_CHARS]))


# ----------------------------------------------------------------- attribute values


def proto_value(value: AnyValue) -> object:
    """A scalar AnyValue as a Python value; arrays, key-value lists and bytes as None
    (nothing read here is one)."""
    which = value.WhichOneof("value")
    if which in ("string_value", "int_value", "double_value", "bool_value"):
        return getattr(value, which)
    return None


def proto_resource(attributes: Iterable[KeyValue]) -> Resource:
    values = {kv.key: proto_value(kv.value) for kv in attributes if kv.key in RESOURCE_KEYS}
    return resource_of(values)


def json_value(value: Any) -> object:
    """A scalar OTLP/JSON AnyValue (``{"stringValue": ...}``; 64-bit ints are strings)."""
    if not isinstance(value, dict):
        return None
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    return None


def json_attributes(
    attributes: Any, wanted: frozenset[str] | Mapping[str, int]
) -> dict[str, object]:
    return {
        kv["key"]: json_value(kv.get("value")) for kv in attributes or () if kv.get("key") in wanted
    }


def proto_scopes(
    groups: Iterable[Any], scopes: str, items: str, batch: OtlpBatch, what: str
) -> Iterator[tuple[Resource, Any]]:
    """Each scope of a protobuf export request's resource groups (``resource_spans``,
    ``resource_logs``) with its resource, the scopes under the field ``scopes``, their
    items under ``items``. A resource whose service name the contract refuses is rejected
    whole (``_reject_resource``), its scopes not yielded."""
    for group in groups:
        resource = proto_resource(group.resource.attributes)
        scope_list = getattr(group, scopes)
        if len(resource.service) > MAX_NAME_CHARS:
            n = sum(len(getattr(scope, items)) for scope in scope_list)
            _reject_resource(batch, resource, n, what)
            continue
        for scope in scope_list:
            yield resource, scope


def json_scopes(
    groups: Any, scopes: str, items: str, batch: OtlpBatch, what: str
) -> Iterator[tuple[Resource, dict[str, Any]]]:
    """``proto_scopes`` for an OTLP/JSON payload's groups (``resourceSpans``, ...)."""
    for group in groups or ():
        attributes = (group.get("resource") or {}).get("attributes")
        resource = resource_of(json_attributes(attributes, RESOURCE_KEYS))
        scope_list = group.get(scopes) or ()
        if len(resource.service) > MAX_NAME_CHARS:
            n = sum(len(scope.get(items) or ()) for scope in scope_list)
            _reject_resource(batch, resource, n, what)
            continue
        for scope in scope_list:
            yield resource, scope


def _reject_resource(batch: OtlpBatch, resource: Resource, n_items: int, items: str) -> None:
    """A service name the contract refuses rejects the resource's spans or records as one
    item: the reason is the same for all of them, and one item keeps the dead-letter header
    short."""
    item = {"service.name": resource.service[:MAX_NAME_CHARS] + "...", items: n_items}
    reject(
        batch,
        item,
        f"resource service.name is longer than {MAX_NAME_CHARS} characters: "
        f"its {n_items} {items} are refused",
    )


def json_id(value: Any, n_bytes: int, field: str) -> str | None:
    """OTLP/JSON ids are hex (the OTLP spec, unlike the protobuf JSON mapping's base64);
    base64 is still accepted, since some older exporters wrote it, and its length (24 or
    12 characters) can never be taken for a hex id (32 or 16)."""
    if not value:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{field} is not a string")
    if len(value) == 2 * n_bytes:
        try:
            if len(bytes.fromhex(value)) == n_bytes:
                return value.lower()
        except ValueError:
            pass
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == n_bytes:
        return raw.hex()
    raise ValueError(f"{field} {value[:40]!r} is neither {2 * n_bytes} hex digits nor base64")
