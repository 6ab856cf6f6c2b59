"""Grafana annotations, received by a real HTTP server standing in for Grafana's
annotations API: one annotation per incident whatever the number of its reports, its end
patched in on the id Grafana answered, also after a restart; an annotation Grafana refused
comes back whole, as a region, at resolve.

The service answers with the rule engine (its model path names no file): no model."""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Loopback, QuietHandler, wait_for
from tests.service.serving import serving
from tests.service.test_notify import A1, A, B, metric, post_all, rule_engine

TOKEN = "glsa_whyslowTestToken_0f3c9a"
STARTED_MS = int(datetime.fromisoformat("2026-11-16T09:00:00Z").timestamp() * 1000)


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class Grafana(Loopback):
    """Grafana's ``/api/annotations`` on loopback: a POST gets the next id (or, while
    ``refuse`` lasts, a 400), a PATCH of a known id a 200, of another a 404."""

    def __init__(self, refuse: int = 0) -> None:
        super().__init__()
        self.calls: list[Call] = []
        self.refuse = refuse
        self._ids = itertools.count(41)
        self._known: set[int] = set()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        grafana = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                call = self._call()
                with grafana._lock:
                    if call.path != "/api/annotations":
                        return self._answer(404, {"message": "Not found"})
                    if grafana.refuse > 0:
                        grafana.refuse -= 1
                        return self._answer(400, {"message": "Failed to save annotation"})
                    made = next(grafana._ids)
                    grafana._known.add(made)
                self._answer(200, {"id": made, "message": "Annotation added"})

            def do_PATCH(self) -> None:
                call = self._call()
                annotation = call.path.removeprefix("/api/annotations/")
                with grafana._lock:
                    known = annotation.isdigit() and int(annotation) in grafana._known
                if not known:
                    return self._answer(404, {"message": "Annotation not found"})
                self._answer(200, {"message": "Annotation patched"})

            def _call(self) -> Call:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                call = Call(self.command, self.path, headers, json.loads(raw or b"{}"))
                with grafana._lock:
                    grafana.calls.append(call)
                return call

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def of(self, method: str) -> list[Call]:
        with self._lock:
            return [call for call in self.calls if call.method == method]


@contextmanager
def grafana_api(refuse: int = 0) -> Iterator[Grafana]:
    grafana = Grafana(refuse)
    grafana.start()
    try:
        yield grafana
    finally:
        grafana.stop()


def settings_for(tmp_path: Path, grafana: Grafana, **values: Any) -> Any:
    return rule_engine(
        tmp_path,
        grafana_url=grafana.url,
        grafana_token=TOKEN,
        dashboard_url="http://whyslow.example:8000",
        notify_retry_max_seconds=0.5,
        **values,
    )


def resolve(client: Any, anomaly_id: str) -> None:
    response = client.post(f"/v1/anomalies/{anomaly_id}/resolve")
    assert response.status_code == 200, response.text


def test_an_incident_is_one_annotation_and_its_end_patches_it_in_without_the_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with grafana_api() as grafana:
        settings = settings_for(tmp_path, grafana, grafana_dashboard_uid="whyslow-latency")
        with serving(settings) as client:
            post_all(client, A, A1, B)
            wait_for(lambda: len(grafana.of("POST")) == 2, 30, "two annotations")
            for _ in range(2):  # resolved twice: patched once
                resolve(client, "inc-a-1")
            wait_for(lambda: len(grafana.of("PATCH")) == 1, 30, "the end of inc-a")
            time.sleep(1.5)  # a poll more: a second post or patch would have come
            assert metric(client, "whyslow_notifications_sent_total", target="grafana") == 3
            assert metric(client, "whyslow_notifications_pending") == 0

    posts = grafana.of("POST")
    assert len(posts) == 2 and len(grafana.calls) == 3
    first = next(p for p in posts if "checkout" in p.body["tags"])
    assert first.path == "/api/annotations"
    assert first.headers["authorization"] == f"Bearer {TOKEN}"
    assert first.headers["content-type"] == "application/json"
    assert first.body["time"] == STARTED_MS  # the incident's start, epoch ms
    assert first.body["dashboardUID"] == "whyslow-latency"
    tags = first.body["tags"]
    assert tags[:3] == ["whyslow", "checkout", "payments-db"] and len(tags) == 4
    text = first.body["text"]
    assert "payments-db (own_time)" in text
    assert '<a href="http://whyslow.example:8000/dashboard/#/anomalies/inc-a">' in text
    assert "timeEnd" not in first.body
    (patch,) = grafana.of("PATCH")
    assert patch.path == "/api/annotations/41"  # the id Grafana answered for inc-a
    assert patch.headers["authorization"] == f"Bearer {TOKEN}"
    assert set(patch.body) == {"timeEnd"}
    assert abs(patch.body["timeEnd"] - time.time() * 1000) < 60_000
    assert TOKEN not in caplog.text


def test_an_annotation_grafana_refused_is_posted_as_a_region_at_resolve_without_the_model(
    tmp_path: Path,
) -> None:
    """Organisation-wide (no dashboard UID); Grafana refuses the first annotation."""
    with grafana_api(refuse=1) as grafana, serving(settings_for(tmp_path, grafana)) as client:
        post_all(client, A)
        wait_for(lambda: len(grafana.of("POST")) == 1, 30, "the refused annotation")
        wait_for(
            lambda: metric(client, "whyslow_notification_failures_total", target="grafana") == 1,
            30,
            "the refusal counted",
        )
        assert metric(client, "whyslow_notifications_pending") == 0  # not retried
        resolve(client, "inc-a")
        wait_for(lambda: len(grafana.of("POST")) == 2, 30, "the region")
        time.sleep(1.5)
    refused, region = grafana.of("POST")
    assert grafana.of("PATCH") == []
    assert "dashboardUID" not in region.body
    assert region.body["time"] == STARTED_MS == refused.body["time"]
    assert region.body["timeEnd"] > region.body["time"]
    assert region.body["tags"] == refused.body["tags"]
    assert region.body["text"] == refused.body["text"]


def test_a_restart_posts_nothing_twice_and_patches_the_id_kept_without_the_model(
    tmp_path: Path,
) -> None:
    """The same store under a second app: the reports again add no annotation, and the
    end goes to the id the first one was answered."""
    with grafana_api() as grafana:
        settings = settings_for(tmp_path, grafana)
        with serving(settings) as client:
            post_all(client, A, B)
            wait_for(lambda: len(grafana.of("POST")) == 2, 30, "two annotations")
        with serving(settings) as client:
            post_all(client, A, A1, B)
            resolve(client, "inc-b")
            wait_for(lambda: len(grafana.of("PATCH")) == 1, 30, "the end of inc-b")
            time.sleep(1.5)
            assert metric(client, "whyslow_notifications_pending") == 0
    assert len(grafana.of("POST")) == 2
    made_for_b = 41 + next(i for i, p in enumerate(grafana.of("POST")) if "cart" in p.body["tags"])
    assert grafana.of("PATCH")[0].path == f"/api/annotations/{made_for_b}"
