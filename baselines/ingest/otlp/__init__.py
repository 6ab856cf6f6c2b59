"""OTLP traces, metrics and logs, as the OpenTelemetry Collector's ``rabbitmqexporter``
publishes them (DESIGN.md, "Telemetry in"), turned into the same ``ParsedBatch`` the JSON
path returns, so the detector consumes them unchanged.

The exporter publishes one ``ExportTraceServiceRequest`` / ``ExportMetricsServiceRequest`` /
``ExportLogsServiceRequest`` per message, protobuf by default or OTLP/JSON with an
``otlp_encoding`` extension, to the routing keys ``otlp_spans`` / ``otlp_metrics`` /
``otlp_logs``, and it sets **no content type**: ``parse_otlp`` therefore sniffs the body
when the content type is empty (OTLP/JSON is an object, so it starts with ``{``; a protobuf
request starts with the tag of field 1, ``0x0a``, never with ``{``).

Protobuf is decoded with ``opentelemetry.proto`` (upb backend); OTLP/JSON is read with
``json.loads`` and walked directly, because ``json_format`` would read the hex trace and
span ids of OTLP/JSON as base64, and because walking plain dicts is several times faster.

One module per part: ``dispatch`` (routing key and content type to a parser, and splitting
a message by service), ``traces`` (spans and their mapping decisions), ``metrics``
(``METRIC_RULES``), ``logs`` (log records: severity, body, template), ``common`` (decoding,
resources, attribute values, building events). This package re-exports the public names of
all five.
"""

from baselines.ingest.otlp.common import (
    MAX_EVIDENCE_CHARS,
    MAX_NAME_CHARS,
    UNKNOWN_SERVICE,
    Encoding,
    OtlpBatch,
)
from baselines.ingest.otlp.dispatch import (
    JSON_CONTENT_TYPE,
    JSON_CONTENT_TYPES,
    LOGS_ROUTING_KEY,
    METRICS_ROUTING_KEY,
    OTLP_ROUTING_KEYS,
    PROTO_CONTENT_TYPE,
    PROTO_CONTENT_TYPES,
    TRACES_ROUTING_KEY,
    parse_otlp,
    split_otlp,
)
from baselines.ingest.otlp.logs import (
    MAX_BODY_CHARS,
    SEVERITY_WORDS,
    body_text,
    parse_otlp_logs,
    severity_of,
    severity_of_body,
)
from baselines.ingest.otlp.metrics import (
    MAX_METRIC_CHARS,
    METRIC_RULES,
    MetricRule,
    Point,
    parse_otlp_metrics,
)
from baselines.ingest.otlp.traces import (
    MAX_SPAN_ID_CHARS,
    MAX_TRACE_ID_CHARS,
    PEER_ATTRIBUTES,
    parse_otlp_traces,
)

__all__ = [
    "JSON_CONTENT_TYPE",
    "JSON_CONTENT_TYPES",
    "LOGS_ROUTING_KEY",
    "MAX_BODY_CHARS",
    "MAX_EVIDENCE_CHARS",
    "MAX_METRIC_CHARS",
    "MAX_NAME_CHARS",
    "MAX_SPAN_ID_CHARS",
    "MAX_TRACE_ID_CHARS",
    "METRICS_ROUTING_KEY",
    "METRIC_RULES",
    "OTLP_ROUTING_KEYS",
    "PEER_ATTRIBUTES",
    "PROTO_CONTENT_TYPE",
    "PROTO_CONTENT_TYPES",
    "SEVERITY_WORDS",
    "TRACES_ROUTING_KEY",
    "UNKNOWN_SERVICE",
    "Encoding",
    "MetricRule",
    "OtlpBatch",
    "Point",
    "body_text",
    "parse_otlp",
    "parse_otlp_logs",
    "parse_otlp_metrics",
    "parse_otlp_traces",
    "severity_of",
    "severity_of_body",
    "split_otlp",
]
