"""Where a person clicks next: the report's traces in the tracing UI and the anomaly on the
dashboard, in every notification and in ``GET /v1/anomalies/{id}``."""

from __future__ import annotations

from urllib.parse import quote

from pydantic import BaseModel, Field

TRACE_ID = "{trace_id}"
"""The placeholder of ``WHYSLOW_TRACE_URL_TEMPLATE``; replaced as text, not ``str.format``,
so a template with other braces (a Grafana Explore URL's JSON) stays as written."""


class Links(BaseModel):
    traces: list[str] = Field([], description="The report's trace ids in the tracing UI.")
    dashboard: str | None = Field(None, description="The anomaly on whyslow's dashboard.")


class LinkBuilder:
    """Turns ids into URLs; a link whose setting is unset is left out."""

    def __init__(self, trace_url_template: str | None, dashboard_url: str | None) -> None:
        self._trace = trace_url_template or None
        base = dashboard_url.rstrip("/").removesuffix("/dashboard") if dashboard_url else None
        self._dashboard = base or None

    def trace(self, trace_id: str) -> str | None:
        if self._trace is None:
            return None
        return self._trace.replace(TRACE_ID, quote(trace_id, safe=""))

    def dashboard(self, anomaly_id: str) -> str | None:
        """The dashboard with the anomaly named in the fragment (the page reads it; the
        server never sees it). The setting is the service's URL as people reach it; one
        that already ends in /dashboard is read the same."""
        if self._dashboard is None:
            return None
        return f"{self._dashboard}/dashboard/#/anomalies/{quote(anomaly_id, safe='')}"

    def links(self, anomaly_id: str, trace_ids: list[str]) -> Links:
        traces = [url for url in map(self.trace, trace_ids) if url is not None]
        return Links(traces=traces, dashboard=self.dashboard(anomaly_id))
