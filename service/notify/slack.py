"""A Slack incoming webhook: a Block Kit message an on-call engineer reads in the channel.

Opened: a header, the service, p95 against its usual, the root cause and its kind, the
severity; the summary; the top three actions; links to the dashboard and the traces.
Resolved: a header and the last summary, with the same links. Reports carry untrusted text
(operation names, the model's prose): it is escaped as Slack's mrkdwn asks (&, <, >), so
it can neither ping a channel nor forge a link, and cut to Block Kit's lengths (a header
150 characters, a field 2,000, a section 3,000) so Slack never refuses the message."""

from __future__ import annotations

import json
from typing import Any

from service.contract import AnomalyReport
from service.notify.event import Event

HEADER_MAX = 150
FIELD_MAX = 2000
SECTION_MAX = 3000
TOP_ACTIONS = 3
TRACE_LINKS = 3
SEVERITY_MARK = {
    "info": ":information_source:",
    "warning": ":warning:",
    "critical": ":rotating_light:",
}


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def mrkdwn(text: str, limit: int) -> dict[str, str]:
    return {"type": "mrkdwn", "text": cut(text, limit)}


def ms(value: float) -> str:
    return f"{value:.0f} ms" if value >= 100 else f"{value:.3g} ms"


def latency(report: AnomalyReport | None) -> str:
    if report is None:
        return "unknown"
    text = ms(report.latency_ms.p95)
    if report.baseline is not None:
        text += f" vs usual {ms(report.baseline.p95)}"
    if report.deviation is not None:
        text += f" ({report.deviation.ratio:.1f}x)"
    return text


def links_line(event: Event) -> str:
    links = []
    if event.links.dashboard:
        links.append(f"<{event.links.dashboard}|dashboard>")
    for number, url in enumerate(event.links.traces[:TRACE_LINKS], 1):
        links.append(f"<{url}|trace {number}>")
    return " · ".join([*links, f"incident `{escape(event.incident_id)}`"])


class Slack:
    name = "slack"
    resend_seconds: float | None = None

    def __init__(self, url: str) -> None:
        self.url = url

    def render(self, event: Event, opened: str | None) -> str:
        analysis = event.analysis
        where = f"{analysis.service} {analysis.operation}"
        if event.kind == "resolved":
            title = f"Resolved: {where}"
            blocks: list[dict[str, Any]] = [
                {"type": "header", "text": {"type": "plain_text", "text": cut(title, HEADER_MAX)}},
                {"type": "section", "text": mrkdwn(escape(analysis.summary), SECTION_MAX)},
            ]
        else:
            title = f"Slow: {where}"
            blocks = [
                {"type": "header", "text": {"type": "plain_text", "text": cut(title, HEADER_MAX)}},
                {"type": "section", "fields": self._fields(event)},
                {"type": "section", "text": mrkdwn(escape(analysis.summary), SECTION_MAX)},
                {"type": "section", "text": mrkdwn(self._actions(event), SECTION_MAX)},
            ]
        blocks.append({"type": "context", "elements": [mrkdwn(links_line(event), FIELD_MAX)]})
        return json.dumps(
            {"text": cut(f"{title}: {analysis.summary}", SECTION_MAX), "blocks": blocks}
        )

    def _fields(self, event: Event) -> list[dict[str, str]]:
        analysis = event.analysis
        incident = event.incident
        root = incident.root_cause if incident is not None else None
        cause = f"{analysis.probable_cause.value}"
        if root is not None:
            cause = f"{escape(root.service)} ({root.kind}): {cause}"
        mark = SEVERITY_MARK.get(analysis.severity.value, "")
        return [
            mrkdwn(
                f"*Service*\n{escape(analysis.service)} · {escape(analysis.operation)}", FIELD_MAX
            ),
            mrkdwn(f"*p95*\n{latency(event.report)}", FIELD_MAX),
            mrkdwn(f"*Root cause*\n{cause}", FIELD_MAX),
            mrkdwn(f"*Severity*\n{mark} {analysis.severity.value}".rstrip(), FIELD_MAX),
        ]

    def _actions(self, event: Event) -> str:
        actions = event.analysis.recommended_actions[:TOP_ACTIONS]
        steps = "\n".join(f"{n}. {escape(a)}" for n, a in enumerate(actions, 1))
        return f"*Next steps*\n{steps}"

    def headers(self, body: bytes, now: float) -> dict[str, str]:
        return {"Content-Type": "application/json"}
