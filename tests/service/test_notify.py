"""Notifications of incidents, received by a real HTTP server standing in for a webhook,
Slack and Alertmanager: one per incident and target, whatever the number of its reports,
restarts or replicas; a receiver that is down gets its message once it is up; Alertmanager
hears the alert again while the incident is open and its end once resolved.

The service answers with the rule engine (its model path names no file), which the hook
notifies from like any other answer: these tests need no model."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from baselines.demo import free_port
from service.contract import Analysis, AnomalyReport
from service.rules import RULES_MODEL, diagnose
from service.settings import Settings
from service.store import AnalysisStore
from tests.baselines.conftest import postgres_schema
from tests.helpers import Loopback, QuietHandler, sample_value, wait_for
from tests.service.serving import serving

SECRET = "whsec-3f9a"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@dataclass(frozen=True)
class Post:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def incident(self) -> str:
        """The incident a post is about, read as each receiver would."""
        if self.path == "/webhook":
            return str(self.json["incident_id"])
        if self.path == "/slack":
            context = self.json["blocks"][-1]["elements"][0]["text"]
            return context.rsplit("incident `", 1)[1].rstrip("`")
        (alert,) = self.json
        return str(alert["labels"]["incident_id"])


class Receiver(Loopback):
    """A loopback HTTP server that answers 200 to every POST and keeps it. Its port can be
    chosen before it starts, so a target can point at it while it is still down."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port)
        self.posts: list[Post] = []

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.posts.append(Post(self.path, headers, body))
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        return Handler

    def at(self, path: str) -> list[Post]:
        with self._lock:
            return [post for post in self.posts if post.path == path]

    def per_incident(self, path: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for post in self.at(path):
            counts[post.incident] = counts.get(post.incident, 0) + 1
        return counts


def hears(receiver: Receiver, path: str, counts: dict[str, int]) -> Callable[[], bool]:
    return lambda: receiver.per_incident(path) == counts


@contextmanager
def receiving(port: int | None = None) -> Iterator[Receiver]:
    receiver = Receiver(port)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


def verify(secret: str, body: bytes, signature: str) -> bool:
    """The check of a webhook's signature that docs/integrations.md gives."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def report(anomaly_id: str, incident_id: str | None, service: str = "checkout") -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": anomaly_id,
        "service": service,
        "operation": "POST /pay",
        "latency_ms": {"p95": 900.0},
        "baseline": {
            "hour_of_week": 9,
            "p50": 90,
            "p95": 200,
            "samples": 60,
            "level": "hour_of_week",
        },
        "deviation": {"ratio": 4.5, "score": 0.99},
        "evidence": ["<!channel> *bold* <https://evil.example|click>"],
        "trace_ids": [TRACE],
    }
    if incident_id is not None:
        body["incident"] = {
            "id": incident_id,
            "started": "2026-11-16T09:00:00Z",
            "root_cause": {"service": "payments-db", "kind": "own_time", "score": 3.0},
            "affected": [{"service": service}, {"service": "payments-db"}],
            "path": [service, "payments-db"],
        }
    return body


A, A1, B = report("inc-a", "inc-a"), report("inc-a-1", "inc-a"), report("inc-b", "inc-b", "cart")
ALL = {"inc-a": 1, "inc-b": 1}


def targets(receiver: Receiver) -> dict[str, Any]:
    return {
        "webhook_url": f"{receiver.url}/webhook",
        "webhook_secret": SECRET,
        "slack_webhook_url": f"{receiver.url}/slack",
        "alertmanager_url": receiver.url,
        "trace_url_template": "http://jaeger:16686/trace/{trace_id}",
        "dashboard_url": "http://whyslow.example:8000",
    }


def rule_engine(tmp_path: Path, **values: Any) -> Settings:
    """Settings of a service that answers with the rule engine: no model file."""
    return Settings(data_dir=tmp_path / "data", model_path=tmp_path / "no-model.gguf", **values)


def metric(client: TestClient | str, name: str, **labels: str) -> float | None:
    if isinstance(client, str):
        page = httpx.get(f"{client}/metrics", timeout=5).text
    else:
        page = client.get("/metrics").text
    return sample_value(page, name, **labels)


def post_all(client: TestClient, *reports: dict[str, Any]) -> None:
    for body in reports:
        response = client.post("/v1/analyze", json=body)
        assert response.status_code == 200, response.text


def test_a_receiver_that_is_down_gets_its_message_once_up_without_the_model(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there yet
    settings = rule_engine(
        tmp_path, webhook_url=f"http://127.0.0.1:{port}/webhook", notify_retry_max_seconds=0.5
    )
    with serving(settings) as client:
        post_all(client, A)
        failures = {"target": "webhook"}
        wait_for(
            lambda: (metric(client, "whyslow_notification_failures_total", **failures) or 0) >= 3,
            30,
            "failed posts to the receiver that is down",
        )
        assert metric(client, "whyslow_notifications_pending") == 1
        assert metric(client, "whyslow_notifications_sent_total", target="webhook") == 0
        with receiving(port) as receiver:
            wait_for(lambda: len(receiver.at("/webhook")) == 1, 30, "the webhook once up")
            time.sleep(1.5)  # three retry caps: any second post would have come
            assert receiver.per_incident("/webhook") == {"inc-a": 1}
            assert metric(client, "whyslow_notifications_pending") == 0
            assert metric(client, "whyslow_notifications_sent_total", target="webhook") == 1


def test_alertmanager_hears_an_open_incident_again_and_its_end_once_without_the_model(
    tmp_path: Path,
) -> None:
    with receiving() as receiver:
        settings = rule_engine(tmp_path, **targets(receiver), alertmanager_resend_seconds=0.3)
        with serving(settings) as client:
            post_all(client, A, A1, B)
            wait_for(lambda: len(receiver.at("/api/v2/alerts")) >= 6, 30, "re-sent alerts")
            assert set(receiver.per_incident("/api/v2/alerts")) == {"inc-a", "inc-b"}
            firing = next(p.json[0] for p in receiver.at("/api/v2/alerts") if p.incident == "inc-a")
            assert "endsAt" not in firing
            assert firing["labels"]["alertname"] == "WhyslowIncident"
            assert firing["labels"]["root_service"] == "payments-db"
            assert firing["startsAt"].startswith("2026-11-16T09:00:00")

            for _ in range(2):  # resolved twice: announced once
                response = client.post("/v1/anomalies/inc-a-1/resolve")
                assert response.status_code == 200, response.text

            def ends() -> list[dict[str, Any]]:
                alerts = [p.json[0] for p in receiver.at("/api/v2/alerts")]
                return [a for a in alerts if "endsAt" in a]

            wait_for(lambda: len(ends()) == 1, 30, "the resolved alert")
            resolved = ends()[0]
            assert resolved["labels"] == firing["labels"]  # the same alert
            assert resolved["startsAt"] == firing["startsAt"]
            time.sleep(1.0)  # three re-send periods
            after = [p.json[0] for p in receiver.at("/api/v2/alerts")]
            last_a = max(i for i, a in enumerate(after) if a["labels"]["incident_id"] == "inc-a")
            assert "endsAt" in after[last_a]  # nothing of inc-a re-sent after its end
            assert len(ends()) == 1
            # inc-b is still open: still re-sent
            count_b = receiver.per_incident("/api/v2/alerts")["inc-b"]
            wait_for(
                lambda: receiver.per_incident("/api/v2/alerts")["inc-b"] > count_b, 10, "inc-b"
            )

            for path in ("/webhook", "/slack"):
                assert receiver.per_incident(path) == {"inc-a": 2, "inc-b": 1}, path
            webhook = [p.json for p in receiver.at("/webhook") if p.incident == "inc-a"]
            assert [w["event"] for w in webhook] == ["opened", "resolved"]
            assert webhook[1]["incident"]["root_cause"]["service"] == "payments-db"
            slack = [p.json for p in receiver.at("/slack") if p.incident == "inc-a"]
            assert slack[1]["blocks"][0]["text"]["text"].startswith("Resolved: checkout")


def test_a_slack_message_is_block_kit_with_links_and_a_test_report_is_silent_without_the_model(
    tmp_path: Path,
) -> None:
    with receiving() as receiver:
        with serving(rule_engine(tmp_path, **targets(receiver))) as client:
            trial = client.post("/v1/analyze?test=true", json=report("t-1", "inc-t"))
            assert trial.status_code == 200, trial.text
            post_all(client, A)
            wait_for(lambda: len(receiver.at("/slack")) == 1, 30, "the Slack message")
            time.sleep(1.5)  # a poll more: a test report's would have come by now
        assert "inc-t" not in {post.incident for post in receiver.posts}  # tests: silent
        (message,) = [p.json for p in receiver.at("/slack")]
        header, fields, summary, actions, context = message["blocks"]
        assert header == {
            "type": "header",
            "text": {"type": "plain_text", "text": "Slow: checkout POST /pay"},
        }
        texts = [f["text"] for f in fields["fields"]]
        assert texts[0].startswith("*Service*\ncheckout")
        assert texts[1] == "*p95*\n900 ms vs usual 200 ms (4.5x)"
        assert texts[2].startswith("*Root cause*\npayments-db (own_time)")
        assert texts[3].startswith("*Severity*")
        assert summary["type"] == "section" and summary["text"]["text"]
        steps = actions["text"]["text"].splitlines()
        assert steps[0] == "*Next steps*" and 1 <= len(steps[1:]) <= 3
        links = context["elements"][0]["text"]
        assert "<http://whyslow.example:8000/dashboard/#/anomalies/inc-a|dashboard>" in links
        assert f"<http://jaeger:16686/trace/{TRACE}|trace 1>" in links
        assert "<!channel>" not in json.dumps(message)  # report text can ping no one

        webhook = receiver.at("/webhook")[0]
        assert webhook.json["links"] == {
            "traces": [f"http://jaeger:16686/trace/{TRACE}"],
            "dashboard": "http://whyslow.example:8000/dashboard/#/anomalies/inc-a",
        }
        (alert,) = receiver.at("/api/v2/alerts")[0].json
        assert alert["annotations"]["dashboard_url"] == webhook.json["links"]["dashboard"]


def test_a_target_gets_at_most_its_rate_and_the_rest_wait_without_the_model(
    tmp_path: Path,
) -> None:
    with receiving() as receiver:
        settings = rule_engine(
            tmp_path, webhook_url=f"{receiver.url}/webhook", notify_rate_per_minute=2
        )
        with serving(settings) as client:
            post_all(client, A, B, report("inc-c", "inc-c", "search"), report("manual-1", None))
            wait_for(lambda: len(receiver.at("/webhook")) == 2, 30, "two webhooks")
            time.sleep(2.5)  # two polls: the other two wait for the next minute
            assert len(receiver.at("/webhook")) == 2
            assert metric(client, "whyslow_notifications_pending") == 2


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_replicas_on_one_store_notify_each_incident_once_without_the_model(
    tmp_path: Path, backend: str
) -> None:
    with receiving() as receiver, store_url(tmp_path, backend) as url:
        values = {**targets(receiver), "analyses_url": url, "alertmanager_resend_seconds": 3600}
        one, two = rule_engine(tmp_path / "1", **values), rule_engine(tmp_path / "2", **values)
        with serving(one) as first, serving(two) as second:
            threads = [
                threading.Thread(target=post_all, args=(client, A, A1, B))
                for client in (first, second)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            for path in ("/webhook", "/slack", "/api/v2/alerts"):
                wait_for(hears(receiver, path, ALL), 30, path)
            time.sleep(1.5)  # a poll of each sender
            for path in ("/webhook", "/slack", "/api/v2/alerts"):
                assert receiver.per_incident(path) == ALL, path


@contextmanager
def store_url(tmp_path: Path, backend: str) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        with postgres_schema() as postgres:
            yield postgres.url


def test_an_anomaly_links_its_traces_and_its_dashboard_page(tmp_path: Path) -> None:
    settings = rule_engine(
        tmp_path,
        trace_url_template="https://grafana.example/explore?q={trace_id}&x={}",
        dashboard_url="http://whyslow.example:8000/dashboard/",
    )
    incoming = AnomalyReport.model_validate(report("inc-a", "inc-a"))
    analysis = Analysis(
        **diagnose(incoming).model_dump(),
        anomaly_id="inc-a",
        service="checkout",
        operation="POST /pay",
        model=RULES_MODEL,
        latency_ms=1.0,
    )
    store = AnalysisStore(settings.resolved_analyses_url())
    store.put(incoming, analysis)
    store.close()
    with serving(settings) as client:
        record = client.get("/v1/anomalies/inc-a").json()
    assert record["links"] == {
        "traces": [f"https://grafana.example/explore?q={TRACE}&x={{}}"],
        "dashboard": "http://whyslow.example:8000/dashboard/#/anomalies/inc-a",
    }
    assert record["analysis"]["anomaly_id"] == "inc-a"  # the fields it had are kept


@pytest.mark.slow
def test_each_incident_is_notified_once_across_a_restart_without_the_model(
    tmp_path: Path,
) -> None:
    """Real processes: ``whyslow serve`` stopped and started again on the same store, the
    same reports posted to each: the receivers hear of each incident once in all."""
    logs = tmp_path / "logs"
    logs.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with receiving() as receiver:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WHYSLOW_")}
        env |= {f"WHYSLOW_{name.upper()}": str(value) for name, value in targets(receiver).items()}
        env |= {
            "WHYSLOW_DATA_DIR": str(tmp_path / "data"),
            "WHYSLOW_MODEL_PATH": str(tmp_path / "no-model.gguf"),
            "WHYSLOW_ALERTMANAGER_RESEND_SECONDS": "3600",
            "WHYSLOW_NOTIFY_RETRY_MAX_SECONDS": "1",
        }

        def serve(name: str) -> subprocess.Popen[bytes]:
            with (logs / f"{name}.log").open("wb") as out:
                command = [sys.executable, "-m", "service", "serve", "--port", str(port)]
                process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
            wait_for(lambda: answering(url), 60, f"the {name} service")
            return process

        def stop(process: subprocess.Popen[bytes], name: str) -> None:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=60)
            log = (logs / f"{name}.log").read_text()
            # uvicorn raises the signal again once it has shut down
            assert code in (0, -signal.SIGTERM), log[-2000:]
            assert "Application shutdown complete" in log, log[-2000:]

        def post_all_to_service() -> None:
            for body in (A, A1, B):
                response = httpx.post(f"{url}/v1/analyze", json=body, timeout=30)
                assert response.status_code == 200, response.text

        first = serve("first")
        try:
            post_all_to_service()
            for path in ("/webhook", "/slack", "/api/v2/alerts"):
                wait_for(hears(receiver, path, ALL), 30, path)
            assert metric(url, "whyslow_notifications_pending") == 0
        finally:
            stop(first, "first")

        second = serve("second")
        try:
            post_all_to_service()
            time.sleep(2.5)  # two polls of the sender
            assert metric(url, "whyslow_notifications_pending") == 0
            assert metric(url, "whyslow_notifications_sent_total", target="webhook") == 0
        finally:
            stop(second, "second")

    for path in ("/webhook", "/slack", "/api/v2/alerts"):
        assert receiver.per_incident(path) == ALL, path
    for post in receiver.at("/webhook"):
        assert verify(SECRET, post.body, post.headers["x-whyslow-signature"])
        assert abs(int(post.headers["x-whyslow-timestamp"]) - time.time()) < 120
        assert not verify("another-secret", post.body, post.headers["x-whyslow-signature"])
    assert {p.json["analysis"]["anomaly_id"] for p in receiver.at("/webhook")} == {"inc-a", "inc-b"}


def answering(url: str) -> bool:
    """The model has settled (here: failed to load, so the rule engine answers)."""
    try:
        return httpx.get(f"{url}/readyz", timeout=2).json()["status"] in ("ready", "failed")
    except (httpx.TransportError, ValueError):
        return False
