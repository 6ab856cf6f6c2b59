"""Alerts in: Alertmanager's webhook payload (``version: "4"``) and Grafana's variant of it,
each firing alert turned into an AnomalyReport the service diagnoses like a posted one.

Both formats share one shape: ``status``, ``alerts`` (each with ``status``, ``labels``,
``annotations``, ``startsAt``, ``endsAt``, ``generatorURL``, ``fingerprint``) and the
group's labels; Grafana adds ``orgId``, ``title``, ``state``, ``message`` and per alert
``values`` (its expressions' values by ref id) or, before Grafana 9.4, ``valueString``.
Fields neither sends yet are ignored, so a newer sender is not refused.

The report is built from what the alert says and completed from the consumers' week
profile of its service (``service/profiles.py``): the usual p95 of the operation at the
alert's hour, and, when the alert carries no value, the operation's latest observed p95.
Its id is a hash of the alert's fingerprint and ``startsAt``: Alertmanager re-sends a firing
alert every ``repeat_interval``, and a re-sent alert is the same anomaly (answered from the
store), while the same alert firing again later (a new ``startsAt``) is a new one.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from service.contract import AnomalyReport, Context, Rfc3339, WeekProfile
from service.notify.alertmanager import ALERTNAME
from service.profiles import complete

MAX_ALERTS = 100
"""Alerts in one payload (each is a diagnosis); Alertmanager's ``max_alerts`` and Grafana's
``maxAlerts`` bound what they send."""
Text = Annotated[str, Field(max_length=10_000)]
LabelSet = Annotated[dict[str, Text], Field(max_length=200)]
StrictNumber = Annotated[float, Field(strict=True)]
"""A JSON number: neither text nor a boolean read as one."""


def _text(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("expected an RFC 3339 date-time, e.g. 2026-11-16T09:00:00Z")
    return value


TextTime = Annotated[datetime, BeforeValidator(_text)]
"""A time as both senders write it, RFC 3339 text; kept in its own offset (Grafana's
``0001-01-01T00:00:00Z`` for "not ended" has no UTC equivalent with a positive offset)."""


class Alert(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    status: Literal["firing", "resolved"]
    labels: LabelSet
    annotations: LabelSet = {}
    starts_at: Rfc3339 = Field(alias="startsAt")
    ends_at: TextTime | None = Field(None, alias="endsAt")
    generator_url: Text = Field("", alias="generatorURL")
    fingerprint: Annotated[str, Field(max_length=200)] | None = Field(
        None, description="Alertmanager's hash of the labels; derived from them if absent."
    )
    values: Annotated[dict[str, StrictNumber | None], Field(max_length=50)] | None = Field(
        None, description="Grafana: the value of each expression of the rule, by ref id."
    )
    value_string: Text | None = Field(None, alias="valueString")


class AlertWebhook(BaseModel):
    """Alertmanager's webhook payload; Grafana's contact point posts the same shape."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    version: str | None = None
    receiver: Text = ""
    status: Literal["firing", "resolved"]
    alerts: Annotated[list[Alert], Field(max_length=MAX_ALERTS)]
    group_labels: LabelSet = Field({}, alias="groupLabels")
    common_labels: LabelSet = Field({}, alias="commonLabels")
    common_annotations: LabelSet = Field({}, alias="commonAnnotations")
    external_url: Text = Field("", alias="externalURL")
    group_key: Text = Field("", alias="groupKey")
    truncated_alerts: int = Field(0, ge=0, strict=True, alias="truncatedAlerts")
    org_id: int | None = Field(None, strict=True, alias="orgId")
    title: Text | None = None
    message: Text | None = None


@dataclass(frozen=True)
class AlertLabels:
    """Which labels name the service and the operation, in order of preference."""

    service: list[str]
    operation: list[str]


class Skipped(ValueError):
    """A firing alert that does not make a report: why, for the answer's ``skipped``."""


def fingerprint(alert: Alert) -> str:
    if alert.fingerprint:
        return alert.fingerprint
    labels = "\x00".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
    return hashlib.sha256(labels.encode()).hexdigest()[:16]


def anomaly_id(alert: Alert) -> str:
    """The same alert (fingerprint) firing since the same time: the same anomaly."""
    started = alert.starts_at.isoformat(timespec="microseconds")
    key = f"{fingerprint(alert)}\x00{started}"
    return "alert-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _first(labels: dict[str, str], names: list[str]) -> str | None:
    return next((labels[name].strip() for name in names if labels.get(name, "").strip()), None)


NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(ms|s)?\s*$")


def _number(text: str | None, unit_s: bool = False) -> float | None:
    """A number as an annotation writes it (``512``, ``5.12e+02``, ``512ms``, ``0.5s``), in
    ms; a value without a unit is in seconds when ``unit_s``."""
    match = NUMBER.match(text or "")
    if match is None:
        return None
    value = float(match.group(1))
    if match.group(2) == "s" or (unit_s and match.group(2) is None):
        value *= 1000
    return value if math.isfinite(value) and value >= 0 else None


GRAFANA_VALUE = re.compile(r"value=([-+]?[\d.]+(?:[eE][-+]?\d+)?)")


def alert_p95(alert: Alert) -> float | None:
    """The p95 (ms) the alert carries: annotation ``p95_ms``, ``p95_seconds``, or ``value``
    (ms, or seconds with annotation ``unit: s``); else Grafana's value, the first by ref id
    (the query's or its reduction's: the condition's ref, a 0 or 1, comes after them)."""
    notes = alert.annotations
    seconds = notes.get("unit", "").strip().lower() in {"s", "seconds"}
    for found in (
        _number(notes.get("p95_ms")),
        _number(notes.get("p95_seconds"), unit_s=True),
        _number(notes.get("value"), unit_s=seconds),
    ):
        if found is not None:
            return found
    if alert.values:
        for ref in sorted(alert.values):
            value = alert.values[ref]
            if value is not None and math.isfinite(value) and value >= 0:
                return value
    if alert.value_string and (match := GRAFANA_VALUE.search(alert.value_string)):
        return _number(match.group(1))
    return None


CONTEXT_NUMBERS = tuple(name for name in Context.model_fields if name != "downstream")
"""Annotations read into the report's context when they hold a number (``cpu_pct``,
``cpu_baseline_pct``, ``error_rate``, ``deployed_minutes_ago``...)."""


def _context(annotations: dict[str, str]) -> dict[str, float]:
    """Each context annotation the contract accepts; one it refuses (a cpu_pct of 150) is
    left out rather than the alert."""
    context: dict[str, float] = {}
    for name in CONTEXT_NUMBERS:
        value = _number(annotations.get(name))
        if value is None:
            continue
        try:
            Context.model_validate({name: value})
        except ValidationError:
            continue
        context[name] = value
    return context


def _worst_operation(profile: WeekProfile | None) -> str | None:
    """The profile's operation furthest above its usual p95 in its latest hour: the one an
    alert naming only the service most likely fired for."""
    if profile is None:
        return None
    worst, worst_ratio = None, -1.0
    for name, operation in sorted(profile.operations.items()):
        hour = operation.latest_hour_of_week
        if hour is None:
            continue
        observed, usual = operation.observed_p95[hour], operation.p95[hour]
        if observed is None:
            continue
        ratio = observed / usual if usual else observed
        if ratio > worst_ratio:
            worst, worst_ratio = name, ratio
    return worst


def _observed_p95(profile: WeekProfile | None, operation: str) -> float | None:
    if profile is None or (found := profile.operations.get(operation)) is None:
        return None
    hour = found.latest_hour_of_week
    return None if hour is None else found.observed_p95[hour]


def service_of(alert: Alert, names: AlertLabels) -> str:
    refuse_own(alert)
    service = _first(alert.labels, names.service)
    if service is None:
        raise Skipped(f"no service label (looked for {', '.join(names.service)})")
    return service


OWN_COMPONENT = "whyslow"
"""The ``component`` label of the rules that watch whyslow itself (deploy/prometheus/)."""


def refuse_own(alert: Alert) -> None:
    """whyslow's own alerts routed back to it would diagnose themselves: an incident alert
    would open an incident, announced as a new alert, without end."""
    if alert.labels.get("alertname") == ALERTNAME:
        raise Skipped(f"{ALERTNAME} is whyslow's own incident alert: route it to people")
    if alert.labels.get("component") == OWN_COMPONENT:
        raise Skipped("an alert on whyslow itself (component=whyslow): route it to people")


def report_of(alert: Alert, names: AlertLabels, profile: WeekProfile | None) -> AnomalyReport:
    """The report a firing alert stands for, completed from the service's profile."""
    service = service_of(alert, names)
    operation = (
        _first(alert.labels, names.operation)
        or _worst_operation(profile)
        or alert.labels.get("alertname")
        or "(alert)"
    )
    p95 = alert_p95(alert)
    if p95 is None:
        p95 = _observed_p95(profile, operation)
    if p95 is None:
        raise Skipped(
            "no p95: set annotation p95_ms (or value), or let a consumer learn the "
            f"service {service!r} first"
        )
    notes = alert.annotations
    latency: dict[str, float] = {"p95": p95}
    for key, name in (("p50", "p50_ms"), ("p99", "p99_ms")):
        if (value := _number(notes.get(name))) is not None:
            latency[key] = value
    alertname = alert.labels.get("alertname", "alert")
    evidence = [
        f"{alertname}: {text}"[:500]
        for text in (notes.get("summary"), notes.get("description"))
        if text and text.strip()
    ]
    started = alert.starts_at
    fields: dict[str, Any] = {
        "id": anomaly_id(alert),
        "service": service,
        "operation": operation,
        "window": {"start": started, "end": started, "count": 0},
        "latency_ms": latency,
        "context": _context(notes),
        "evidence": evidence,
    }
    try:
        report = AnomalyReport.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise Skipped(f"{where}: {first['msg']}") from None
    return complete(report, profile)
