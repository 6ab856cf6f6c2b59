"""``whyslow demo``: the whole path on one machine, in about a minute.

Starts the service (a child process, as in production), runs the consumer, publishes a
synthetic week of telemetry with two injected incidents into RabbitMQ, prints each
analysis as it arrives, and exits 0 once the model (not the rule engine it falls back to)
has diagnosed both incidents with their injected cause, 1 otherwise (with
``--keep-serving``, after keeping the service and its dashboard up until Ctrl-C). The consumer
checkpoints to a store of the demo's own, which the service reads for the dashboard's
baselines; it is emptied at the start of each run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pika

from baselines.consumer import TelemetryConsumer
from baselines.detect import Detector
from baselines.forward import Forwarder
from baselines.settings import Settings
from baselines.store import open_store
from baselines.synthetic import (
    CATALOGUE,
    Incident,
    demo_incidents,
    last_full_week_start,
    telemetry,
)
from baselines.topology import broker_problem, declare_topology
from service.contract import Analysis, AnomalyReport

MINUTES_PER_MESSAGE = 10
READY_TIMEOUT_S = 180.0
DRAIN_TIMEOUT_S = 600.0


def demo_settings(settings: Settings, service_url: str, state: Path) -> Settings:
    """Own queue names and store, so the demo never touches a real deployment's."""
    return settings.model_copy(
        update={
            "exchange": "whyslow.demo",
            "queue": "whyslow.demo.telemetry",
            "dead_letter_exchange": "whyslow.demo.dlx",
            "dead_letter_queue": "whyslow.demo.dlq",
            "service_url": service_url,
            "baselines_url": f"sqlite:///{state / 'baselines.db'}",
        }
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_or_free(port: int) -> int:
    """``port`` if it is free on loopback, else (or for 0) any free one."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
        return sock.getsockname()[1]


def start_service(
    port: int, log_path: Path, analyses_url: str, baselines_url: str, catalogue: Path
) -> subprocess.Popen[bytes]:
    """The service, keeping its analyses at ``analyses_url``, reading the consumer's
    profiles from ``baselines_url`` and its service notes from ``catalogue``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # both stores are named here: an inherited deprecated name would only earn a warning
    inherited = {k: v for k, v in os.environ.items() if k != "WHYSLOW_STORE_URL"}
    env = inherited | {
        "WHYSLOW_ANALYSES_URL": analyses_url,
        "WHYSLOW_BASELINES_URL": baselines_url,
        "WHYSLOW_CATALOGUE": str(catalogue),
    }
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )


def wait_ready(url: str, process: subprocess.Popen[bytes], log_path: Path) -> dict[str, object]:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited ({process.returncode}); see {log_path}")
        try:
            response = httpx.get(f"{url}/readyz", timeout=2)
            body = response.json()
            if response.status_code == 200:
                return body
            if body.get("status") == "failed":
                raise RuntimeError(f"the model failed to load: {body.get('detail')}")
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the service was not ready after {READY_TIMEOUT_S:.0f}s; see {log_path}")


def publish_week(settings: Settings, week_start: datetime, incidents: list[Incident]) -> int:
    """Publish the synthetic week (persistent, confirmed); returns the message count."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    channel.confirm_delivery()
    properties = pika.BasicProperties(
        content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent
    )
    messages, batch = 0, []
    for minute, events in enumerate(telemetry(week_start, incidents), start=1):
        batch.extend(events)
        if minute % MINUTES_PER_MESSAGE == 0:
            channel.basic_publish(settings.exchange, "demo", json.dumps(batch), properties)
            messages, batch = messages + 1, []
    if batch:
        channel.basic_publish(settings.exchange, "demo", json.dumps(batch), properties)
        messages += 1
    connection.close()
    return messages


def print_analysis(report: AnomalyReport, analysis: Analysis) -> None:
    window = f"{report.window.start:%a %Y-%m-%d %H:%M} UTC" if report.window else "-"
    usual = f" vs usual {report.baseline.p95:g} ms" if report.baseline else ""
    lines = [
        f"\n== {report.service} {report.operation} slow at {window}",
        f"   p95 {report.latency_ms.p95:g} ms{usual}",
        f"   cause: {analysis.probable_cause} ({analysis.severity}, "
        f"confidence {analysis.confidence:g})",
        f"   summary: {analysis.summary}",
        f"   explanation: {analysis.explanation}",
        *[f"   - {action}" for action in analysis.recommended_actions],
        f"   [{analysis.model.base} {analysis.model.quantization}, {analysis.latency_ms:.0f} ms]",
    ]
    print("\n".join(lines), flush=True)


def run_demo(settings: Settings, port: int = 8000, keep_serving: bool = False) -> int:
    problem = broker_problem(settings.amqp_url)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    port = port_or_free(port)
    url = f"http://127.0.0.1:{port}"
    state = Path(tempfile.gettempdir()) / "whyslow-demo"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    settings = demo_settings(settings, url, state)
    log_path = state / "service.log"
    catalogue = state / "catalogue.toml"
    notes = (f"{json.dumps(name)} = {json.dumps(note)}\n" for name, note in CATALOGUE.items())
    catalogue.write_text("".join(notes))
    print(f"whyslow demo: dashboard at {url}/dashboard (service log: {log_path})", flush=True)
    service = start_service(
        port,
        log_path,
        f"sqlite:///{state / 'analyses.db'}",
        settings.resolved_baselines_url(),
        catalogue,
    )
    try:
        ready = wait_ready(url, service, log_path)
        print(f"service ready, model: {ready.get('model')}", flush=True)
        code = _run_pipeline(settings)
        if keep_serving:
            print(f"\nthe service keeps serving {url}/dashboard; Ctrl-C stops it", flush=True)
            wait_for_interrupt(service)
        return code
    except RuntimeError as exc:
        print(f"whyslow demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        service.terminate()
        try:
            service.wait(timeout=15)
        except subprocess.TimeoutExpired:
            service.kill()


def wait_for_interrupt(service: subprocess.Popen[bytes]) -> None:
    """Until Ctrl-C or SIGTERM (or the service exits)."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.is_set() and service.poll() is None:
        stop.wait(0.5)


def _run_pipeline(settings: Settings) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    for queue in (settings.queue, settings.dead_letter_queue):
        channel.queue_delete(queue)
    declare_topology(channel, settings)
    connection.close()

    week_start = last_full_week_start(datetime.now(UTC))
    incidents = demo_incidents(week_start)
    analysed: list[tuple[AnomalyReport, Analysis]] = []

    def on_analysis(report: AnomalyReport, analysis: Analysis) -> None:
        analysed.append((report, analysis))
        print_analysis(report, analysis)

    forwarder = Forwarder(
        settings.service_url, settings.forward_timeout_s, on_analysis, api_key=settings.api_key()
    ).start()
    store = open_store(settings.resolved_baselines_url())
    consumer = TelemetryConsumer(
        settings, lambda: Detector(settings.detector_config()), forwarder, store
    )
    thread = threading.Thread(target=consumer.run, name="whyslow-consumer", daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        print(
            f"publishing a synthetic week from {week_start:%Y-%m-%d} with "
            f"{len(incidents)} injected incidents...",
            flush=True,
        )
        messages = publish_week(settings, week_start, incidents)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while consumer.stats.messages < messages or not forwarder.idle():
            if time.monotonic() > deadline:
                print("timed out waiting for the pipeline to drain", file=sys.stderr)
                return 1
            time.sleep(0.2)
        elapsed = time.monotonic() - started
    finally:
        consumer.stop()
        thread.join(timeout=10)
        forwarder.close()
        store.close()

    stats = consumer.detector.stats
    print(
        f"\n{stats.spans} spans and {stats.metrics} metric samples in {messages} messages, "
        f"{stats.windows_closed} windows, {stats.flagged} flagged, "
        f"{len(analysed)} analysed, {elapsed:.1f}s",
        flush=True,
    )
    wrong = 0
    for incident, state, right in verdicts(incidents, analysed):
        wrong += not right
        print(
            f"  injected {incident.cause} on {incident.service} at {incident.start:%a %H:%M}: "
            f"{state}"
        )
    return 1 if wrong else 0


RIGHT = "diagnosed by the model, right cause"


def verdicts(
    incidents: list[Incident], analysed: list[tuple[AnomalyReport, Analysis]]
) -> list[tuple[Incident, str, bool]]:
    """Each injected incident, what became of it, and whether that is a success: the model
    answered every report of its window (``grounding`` other than ``rules``) and named the
    injected cause. The rule engine's answer proves nothing about the model, whatever its
    cause: it is the fallback the demo must not pass on."""
    found = []
    for incident in incidents:
        answers = [
            a
            for r, a in analysed
            if r.service == incident.service and r.window and incident.covers(r.window.start)
        ]
        by_model = sorted({a.probable_cause.value for a in answers if a.grounding != "rules"})
        if not answers:
            state = "MISSED"
        elif not by_model:
            state = "answered by the rule engine, not the model"
        elif any(a.grounding == "rules" for a in answers):
            state = f"answered by the model as {', '.join(by_model)} and by the rule engine"
        elif by_model == [incident.cause]:
            state = RIGHT
        else:
            state = f"diagnosed by the model as {', '.join(by_model)}: not the injected cause"
        found.append((incident, state, state == RIGHT))
    return found
