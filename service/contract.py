"""The wire contract between the tiers, defined once (DESIGN.md, "Contracts").

Plain pydantic, no FastAPI import: the consumer in ``baselines`` imports this module to
build reports, the service to validate them, the training pipeline to write samples. The
service owns it because it is the service's API; ``baselines`` is its client.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    model_validator,
)

MAX_DURATION_MS = 86_400_000.0
"""A span longer than a day is a clock or unit bug, not latency: refused."""


def _as_utc(value: datetime) -> datetime:
    """Timestamps on the wire are UTC; a naive one is read as UTC rather than refused."""
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is in year 0 in UTC
        # pydantic turns a ValueError into a validation error (a 422, a rejected event);
        # an OverflowError escaped it (a 500, a consumer crash)
        raise ValueError("out of range once in UTC (years 1 to 9999)") from None


def _not_epoch(value: object) -> object:
    if isinstance(value, int | float | bool):
        raise ValueError("expected an RFC 3339 date-time, e.g. 2026-11-16T09:00:00Z")
    return value


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
"""RFC 3339 text, or epoch seconds (telemetry producers send either)."""
Rfc3339 = Annotated[datetime, AfterValidator(_as_utc), BeforeValidator(_not_epoch)]
"""RFC 3339 text only (reports: what a person or a dashboard writes and reads)."""
Name = Annotated[str, Field(min_length=1, max_length=200)]

CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
"""Characters that are not text a person reads: C0 and C1 controls (NUL, terminal escapes,
newlines), line and paragraph separators, and the bidirectional marks, embeddings,
overrides and isolates that reorder what a terminal or a dashboard shows (U+202E)."""


def _printable(value: str) -> str:
    return CONTROL_CHARS.sub(" ", value)


def _no_control(value: str) -> str:
    if CONTROL_CHARS.search(value):
        raise ValueError("must not hold control or bidirectional formatting characters")
    return value


Label = Annotated[Name, AfterValidator(_printable)]
"""A name in a report, which the service echoes in its Analysis, its logs and the dashboard,
and the rule engine writes into its text: control characters become spaces (a report built
from telemetry must not be refused for a tab in a span name)."""
ReportId = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_no_control)]
"""A key, stored and echoed: one with control characters is refused, not altered (two
different ids must not become one)."""


def _not_text(value: object) -> object:
    if isinstance(value, str | bytes | bool):
        raise ValueError(f"expected a number, got {type(value).__name__}")
    return value


# Numbers are numbers: "12.5" as text is refused, not coerced; an int is a fine float, and
# 3.0 a fine count (JSON Schema's integer).
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]
Percent = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False, strict=True)]
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False, strict=True)]
Count = Annotated[int, Field(ge=0), BeforeValidator(_not_text)]


class Strict(BaseModel):
    """Unknown fields are errors: a typo in a field name must not pass silently."""

    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- telemetry in


class SpanEvent(Strict):
    """One finished operation: a server request, a client call, a consumed message."""

    service: Name
    operation: Name
    duration_ms: Annotated[float, Field(ge=0, le=MAX_DURATION_MS, allow_inf_nan=False)]
    timestamp: UtcDatetime
    status: Literal["ok", "error"] = "ok"
    kind: Literal["server", "client", "consumer", "producer", "internal"] = Field(
        default="server",
        description="'internal': the tracer did not say (or said in-process); whether it is "
        "an entry or a call is inferred from its parent's and children's services.",
    )
    peer_service: Name | None = None
    trace_id: Annotated[str, Field(max_length=64)] | None = None
    span_id: Annotated[str, Field(max_length=32)] | None = None
    parent_span_id: Annotated[str, Field(max_length=32)] | None = Field(
        default=None,
        description="The span this one is a child of: across services, a call-graph edge.",
    )
    attributes: dict[str, str | int | float | bool] | None = None


class SpanHistogram(Strict):
    """Many spans of one series summarised as a latency histogram, as the OpenTelemetry
    Collector's ``spanmetrics`` connector writes them: what a Collector fleet sends when it
    pre-aggregates, so whyslow's cost grows with series, not spans."""

    service: Name
    operation: Name
    kind: Literal["server", "client", "consumer", "producer"] = "server"
    peer_service: Name | None = None
    timestamp: UtcDatetime = Field(description="The end of the interval the counts cover.")
    error: bool = Field(default=False, description="The spans of this point ended in error.")
    bounds_ms: Annotated[list[float], Field(max_length=200)] = Field(
        description="Explicit bucket upper bounds, ascending, in milliseconds."
    )
    bucket_counts: Annotated[list[int], Field(max_length=201)] = Field(
        description="Spans per bucket over the interval: one more than the bounds (the last "
        "is above every bound)."
    )
    stream: Annotated[str, Field(max_length=64)] = Field(
        default="",
        description="For cumulative counts, the identity of the stream they accumulate in "
        "(its attributes and start time): counts of one stream are differenced. Empty for "
        "delta counts.",
    )

    @model_validator(mode="after")
    def _shape(self) -> SpanHistogram:
        if len(self.bucket_counts) != len(self.bounds_ms) + 1:
            raise ValueError(
                f"bucket_counts has {len(self.bucket_counts)} entries for "
                f"{len(self.bounds_ms)} bounds; expected {len(self.bounds_ms) + 1}"
            )
        if any(b <= a for a, b in zip(self.bounds_ms, self.bounds_ms[1:], strict=False)):
            raise ValueError("bounds_ms must be strictly ascending")
        if any(c < 0 for c in self.bucket_counts):
            raise ValueError("bucket_counts cannot be negative")
        return self


LogSeverity = Literal["debug", "info", "warn", "error", "fatal"]


class LogRecord(Strict):
    """One log line of a service. ERROR and FATAL lines are a judged series per service and
    the evidence of the incidents that service is a root-cause candidate of."""

    service: Name
    timestamp: UtcDatetime
    severity: LogSeverity = "info"
    body: Annotated[str, Field(max_length=4000)] = ""
    template: Annotated[str, Field(max_length=300)] = Field(
        default="",
        description="The body with its variable parts (numbers, ids, quoted values) masked: "
        "lines of one statement share it.",
    )
    trace_id: Annotated[str, Field(max_length=64)] | None = None
    span_id: Annotated[str, Field(max_length=32)] | None = None


class MetricSample(Strict):
    """One resource sample of a service (``cpu_pct``, ``memory_pct``, ``queue_depth``...)."""

    service: Name
    metric: Annotated[str, Field(min_length=1, max_length=100)]
    value: Annotated[float, Field(allow_inf_nan=False)]
    timestamp: UtcDatetime

    @model_validator(mode="after")
    def _in_range(self) -> MetricSample:
        if self.metric.endswith("_pct") and not 0 <= self.value <= 100:
            raise ValueError(f"{self.metric} must be within 0..100, got {self.value}")
        if self.value < 0:
            raise ValueError(f"{self.metric} cannot be negative, got {self.value}")
        return self


def _telemetry_kind(value: object) -> str | None:
    """A JSON event is a metric sample when it names a ``metric``, a span when it names an
    ``operation``, a log record when it has a ``severity`` or a ``body`` (and neither of
    those), else a span (whose validation errors then say what is missing)."""
    if isinstance(value, dict):
        if "metric" in value:
            return "metric"
        if "operation" not in value and ("severity" in value or "body" in value):
            return "log"
        return "span"
    if isinstance(value, MetricSample):
        return "metric"
    return "log" if isinstance(value, LogRecord) else "span"


TelemetryEvent = Annotated[
    Annotated[SpanEvent, Tag("span")]
    | Annotated[MetricSample, Tag("metric")]
    | Annotated[LogRecord, Tag("log")],
    Discriminator(_telemetry_kind),
]
TELEMETRY_EVENT = TypeAdapter(TelemetryEvent)


# --------------------------------------------------------------------------- anomaly report


class Window(Strict):
    start: Rfc3339
    end: Rfc3339
    count: Count

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.end < self.start:
            raise ValueError("window.end is before window.start")
        return self


class LatencySummary(Strict):
    p50: NonNegative | None = None
    p95: NonNegative
    p99: NonNegative | None = None


BaselineLevel = Literal["hour_of_week", "hour_of_day", "global"]
"""Which history a baseline came from: the hour of the week, the same hour on other days,
or every hour."""


class BaselineRef(Strict):
    """Which baseline the window was compared with, and how much history stood behind it."""

    hour_of_week: Annotated[int, Field(ge=0, le=167), BeforeValidator(_not_text)]
    p50: NonNegative
    p95: NonNegative
    samples: Count
    level: BaselineLevel


class Deviation(Strict):
    ratio: NonNegative = Field(description="observed p95 / baseline p95")
    score: Fraction


class Downstream(Strict):
    service: Label
    operation: Label
    p95_ms: NonNegative
    baseline_p95_ms: NonNegative | None = None


class Context(Strict):
    """What a person would look at next, each observed value beside its usual one."""

    cpu_pct: Percent | None = None
    cpu_baseline_pct: Percent | None = None
    memory_pct: Percent | None = None
    memory_baseline_pct: Percent | None = None
    request_rate: NonNegative | None = None
    request_rate_baseline: NonNegative | None = None
    error_rate: Fraction | None = None
    error_rate_baseline: Fraction | None = None
    queue_depth: NonNegative | None = None
    queue_depth_baseline: NonNegative | None = None
    deployed_minutes_ago: NonNegative | None = None
    downstream: Annotated[list[Downstream], Field(max_length=20)] = []


class RelatedOperation(Strict):
    """Another operation of the same service flagged in the same window."""

    operation: Label
    p95_ms: NonNegative
    baseline_p95_ms: NonNegative


RootCauseKind = Literal["own_time", "resources", "network", "errors"]
"""Where an incident starts in its root service: its own code got slower, its resources
(CPU, memory) ran short, the network in front of it slowed its callers' calls, or it fails
(error spans, error log lines)."""


class Candidate(Strict):
    """A service that may be where an incident starts, with reasons a person can check."""

    service: Label
    kind: RootCauseKind
    score: NonNegative = Field(
        description="Higher is likelier: the sum of the weights of the reasons."
    )
    reasons: Annotated[
        list[Annotated[str, Field(max_length=300)]],
        Field(max_length=8, description="Each observed signal behind the score, with its numbers."),
    ] = []
    evidence: Annotated[
        list[Annotated[str, Field(max_length=500)]],
        Field(max_length=8, description="Untrusted text: the service's error log lines."),
    ] = []


class AffectedService(Strict):
    """A service in the incident and the signals that flagged it."""

    service: Label
    operations: Annotated[list[Label], Field(max_length=20)] = []
    signals: Annotated[list[Label], Field(max_length=10)] = []


class Incident(Strict):
    """Anomalies of connected services within a few minutes, as one: where it starts and
    what it reached. Reports of one incident share its id; ``revision`` grows with it."""

    id: ReportId
    started: Rfc3339 = Field(
        description="When it began: its first error line where error lines opened it, "
        "else the start of its first window."
    )
    revision: Count = 0
    root_cause: Candidate | None = None
    candidates: Annotated[list[Candidate], Field(max_length=3)] = []
    affected: Annotated[list[AffectedService], Field(max_length=50)] = []
    path: Annotated[
        list[Label],
        Field(max_length=20, description="Services from the flagged one down to the root."),
    ] = []


class AnomalyReport(Strict):
    """A flagged window, with its baseline and context. Only ``service``, ``operation`` and
    ``latency_ms.p95`` are required, so a person can post one by hand."""

    id: ReportId | None = Field(
        default=None, description="Stable idempotency key; derived from the content if absent."
    )
    service: Label
    operation: Label
    window: Window | None = None
    latency_ms: LatencySummary
    baseline: BaselineRef | None = None
    deviation: Deviation | None = None
    context: Context = Field(default_factory=Context)
    evidence: Annotated[
        list[Annotated[str, Field(max_length=500)]],
        Field(max_length=8, description="Untrusted text from exemplar spans and logs."),
    ] = []
    trace_ids: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=20)] = []
    related: Annotated[
        list[RelatedOperation],
        Field(
            max_length=20,
            description="Other operations of the service flagged in the same window: one "
            "root, one report.",
        ),
    ] = []
    incident: Incident | None = Field(
        default=None, description="The incident this report belongs to, across services."
    )

    @property
    def anomaly_id(self) -> str:
        """The given id, or a hash of the content so that a re-post is the same anomaly."""
        if self.id:
            return self.id
        digest = hashlib.sha256(self.model_dump_json(exclude={"id"}).encode()).hexdigest()
        return f"manual-{digest[:16]}"


def report_id(service: str, operation: str, window_start: datetime) -> str:
    """Stable id of the report for one series and window: the same window, the same id."""
    key = f"{service}\x00{operation}\x00{window_start.isoformat()}"
    return hashlib.sha256(key.encode()).hexdigest()[:24]


# --------------------------------------------------------------------------- analysis out


class ProbableCause(StrEnum):
    local_cpu_saturation = "local_cpu_saturation"
    downstream_dependency = "downstream_dependency"
    memory_pressure = "memory_pressure"
    traffic_surge = "traffic_surge"
    queue_backlog = "queue_backlog"
    recent_deployment = "recent_deployment"
    network_degradation = "network_degradation"
    unknown = "unknown"


class Severity(StrEnum):
    info = "info"
    warning = "warning"
    critical = "critical"


class Diagnosis(Strict):
    """The part of an Analysis the model writes, in this order: the cause is decided first
    and the prose explains it (NOTES: summary-first made the summary the decision).

    Length bounds are part of the decoding grammar, so an answer always terminates within
    the token budget instead of looping inside a string."""

    probable_cause: ProbableCause
    severity: Severity
    confidence: Fraction
    summary: Annotated[str, Field(min_length=1, max_length=160)]
    explanation: Annotated[str, Field(min_length=1, max_length=400)]
    recommended_actions: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=100)]],
        Field(min_length=1, max_length=5),
    ]


class ModelInfo(Strict):
    base: str
    adapter: str | None = None
    quantization: str


class Analysis(Diagnosis):
    anomaly_id: str
    service: str
    operation: str
    model: ModelInfo
    latency_ms: NonNegative = Field(description="Time spent producing this analysis.")
    cached: bool = False
    grounding: Literal["grounded", "regenerated", "degraded", "rules"] = Field(
        "grounded",
        description="grounded: the model's text cites only the report's numbers; "
        "regenerated: its first answer did not, the second does; degraded: neither did, "
        "the cause is the model's and the text the rule engine's; rules: the model could "
        "not answer (not loaded, failed, too slow) and the rule engine did.",
    )
    ungrounded_numbers: list[str] = Field(
        [],
        description="What the model wrote that the report does not support (the field keeps "
        "its name): numbers the report does not contain, directions its numbers contradict "
        "(e.g. 'cpu rose' of a CPU below its usual level), service-like names it does not "
        "hold, quotes of text it does not contain, and prose that is no answer (a last "
        "sentence left unfinished, a few characters repeated over and over).",
    )


# ------------------------------------------------------------------ week profile (consumer)

PROFILE_KEY_PREFIX = "whyslow:profile:"
"""Store key of a service's week profile, beside its baselines in ``whyslow_baselines``:
this prefix and the service's name. The consumer writes the row (baselines/snapshot.py),
the service reads it (service/profiles.py)."""
PROFILE_VERSION: Final = 1
"""Bumped when a WeekProfile changes shape. A row of another version is no profile to the
service until the consumer's next checkpoint rewrites it."""

HOURS_PER_WEEK = 168
HourColumn = Annotated[
    list[float | None], Field(min_length=HOURS_PER_WEEK, max_length=HOURS_PER_WEEK)
]
"""One value per hour of the week (0 = Monday 00:00 in the profile's time zone); null: no
data for that hour yet."""
HourCounts = Annotated[list[Count], Field(min_length=HOURS_PER_WEEK, max_length=HOURS_PER_WEEK)]
HourOfWeek = Annotated[int, Field(ge=0, le=167)]


def _known_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


class ProfileFlag(Strict):
    """A window of the last week that was flagged."""

    start: Rfc3339
    hour_of_week: HourOfWeek
    p95: float


class OperationProfile(Strict):
    """One server operation's week: what is usual, the band a window is judged against, and
    the last week as observed."""

    p95: HourColumn = Field(description="The usual p95 (ms) of each hour of the week.")
    p50: HourColumn = Field(description="The usual p50 (ms).")
    samples: HourCounts = Field(description="The windows behind each hour's usual values.")
    band_low: HourColumn = Field(description="The band a window is judged against (ms).")
    band_high: HourColumn
    flag_above: HourColumn = Field(
        description="The p95 above which a window is flagged (the ratio floors hold too)."
    )
    observed_p95: HourColumn = Field(description="Last week as observed (ms).")
    observed_peak: HourColumn
    latest_hour_of_week: HourOfWeek | None = None
    flags: list[ProfileFlag] = []


class CallEdge(Strict):
    """One service calling another, as learnt from spans."""

    callee: Name
    calls: NonNegative = Field(description="Calls seen since the edge was first learnt.")
    last_seen: Rfc3339 | None = None


class WeekProfile(Strict):
    """A service's week profile as the consumer learnt it: one row per service, rewritten at
    each checkpoint. A row written before ``version`` existed has the same shape: version 1."""

    version: Literal[1] = PROFILE_VERSION  # the only version this service reads
    service: Name
    timezone: Annotated[str, AfterValidator(_known_zone)]
    operations: dict[str, OperationProfile]
    calls: Annotated[list[CallEdge], Field(max_length=1000)] = Field(
        default=[], description="The services this one calls: its edges of the call graph."
    )
