"""Root-cause analysis on a real fault-injection day, through the real broker, consumer and
service with their default settings.

Why: the product is judged on faults in a recorded microservice system replayed as a
stream: each fault detected, its root-cause service ranked first (and in the top 3), its
kind, and false alarms in fault-free hours. This bench measures that on the Nezha
TrainTicket day ``../shared/data/nezha-dev/rca_data/2023-01-29/`` (28 labelled faults).

    .venv/bin/python tests/bench/rca_real.py [--skip-service] [--data DIR] [--day DAY]
                                             [--again-after-days N]

What it does:

1. Reads the day (``nezha.py``): the spans and logs of each fault's three minute files
   (from about a minute before the labelled injection to two minutes after it), the per-pod
   minute metrics of the whole day, and the fault-free minute of ``construct_data``,
   replayed FIRST, moved to end one minute before the first fault's data (the only history
   the first faults have). It encodes them as the Collector's rabbitmqexporter publishes
   OTLP protobuf (routing keys ``otlp_spans``, ``otlp_logs``, ``otlp_metrics``; spans of
   UNSPECIFIED kind with their parent span ids), the signals interleaved in event time.
2. Starts ``whyslow serve`` and ``whyslow consume`` as processes (``python -m``, as the
   tests do) with default settings but for: a SQLite store in a temporary folder, exchange
   and queue names of this run only, the service's URL and a free /metrics port. Publishes
   every message, waits until the consumer has received them all and its outbox is empty
   (every report analysed), then reads every record through the service's API
   (``GET /v1/anomalies``, paginated, and ``GET /v1/anomalies/{id}``). The model is slow on
   a small shared machine: past ``--deadline`` the bench stops waiting, stops the consumer
   and takes the reports not analysed yet from its checkpointed outbox (it says how many).
   ``--skip-service``: the consumer forwards to a recorder in this process instead (the
   scores are the same: they come from the reports, not from the analyses).
3. Scores each fault. A fault's window is [inject - 60 s, inject + 240 s]; an alarm (an
   incident, or a report without one) belongs to the latest fault whose window holds its
   start (an incident's ``started``, a report's window start). Detected: the fault has an
   alarm. Ranked services: the candidates of its incidents (root first; incidents in order
   of start), or, for reports without incident, the flagged services by deviation score.
   Kind: the first incident's ``root_cause.kind`` against the fault's (cpu_contention:
   resources; exception, return: errors; network_delay: network). False alarms: alarms
   starting outside every fault window, per hour of replayed time outside them. The
   consumer's windows are whole minutes, and several roots log ERROR lines before their
   labelled injection time, so the last rows ("all, overlap", "shows, overlap", "own,
   overlap") also count an alarm whose first minute overlaps a fault's window as that
   fault's.

Beside it, from the CSVs, in the same run: a reference that ranks services by the rise of
their own entry spans' median latency (the fault's minutes after injection over the same
service's history), and what each root's telemetry showed (its entry-span p95 against its
history, its ERROR log lines per minute against its usual rate, its pod CPU against the 10
minutes before). A service's history is the fault-free minute and the windows of earlier
faults whose root was another service; a fault whose root has no spans there is "too
early" and out of every target's denominator. "Shows" means: with history, and an
entry-span p95 at least 1.5x its history's or more ERROR lines per minute than its usual
rate. Totals are printed over all faults, over those with history, and over those whose
root shows it; the last row counts a latency rise only in the root's own time (its entry
spans less their waits on calls to other services, which are the callees' time or the
network's): a root whose entry spans slowed only while waiting on another service shows
that service's trouble, not its own.

``--again-after-days N``: the day is replayed a second time N days later (its faults'
minutes and metrics, the whole first copy before it) and only that copy is scored: the
detector then judges each fault with the day's other faults and hours as history, as a
continuous stream would give it (N = 8: another weekday, so the hour-of-week buckets of the
first copy are not the second's).

A report, not a test: exit 0 whatever the scores, 2 when a process fails or data is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import nezha
import pika
from prometheus_client.parser import text_string_to_metric_families

from baselines.demo import free_port
from baselines.ingest.otlp.metrics import METRIC_RULES
from baselines.settings import Settings as ConsumerSettings
from baselines.snapshot import CONSUMER_KEY_PREFIX, ConsumerRecord
from baselines.store import open_store
from baselines.topology import ERROR_HEADER, declare_topology, delete_topology
from service.contract import AnomalyReport

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo: test helpers
from tests.helpers import own_topology

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "nezha-dev"
BEFORE_S, AFTER_S = 60.0, 240.0
"""A fault's window around its injection time."""
EXPECTED_KIND = {
    "cpu_contention": "resources",
    "cpu_consumed": "resources",
    "exception": "errors",
    "return": "errors",
    "network_delay": "network",
}
WINDOW_S = 60.0
"""The consumer's default detection window: minute-aligned, so an alarm's start is up to
59 s before the first data that raised it."""
LATENCY_RISE = 1.5
"""An entry-span p95 this many times its history's "shows" latency."""
MIN_SPANS = 3
"""Entry spans a service needs in the fault and in its history to be ranked by latency."""
CPU_HISTORY_ROWS = 10


def log(started: float, text: str) -> None:
    print(f"[{time.perf_counter() - started:6.1f} s] {text}", flush=True)


def clock(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%H:%M:%S")


# --------------------------------------------------------------------------- the data


@dataclass
class Telemetry:
    """What one service's own telemetry showed in one stretch of the day."""

    entry_ms: list[float] = field(default_factory=list)
    own_ms: list[float] = field(default_factory=list)
    """Each entry span's time less what it waited on calls to other services."""
    errors: int = 0


@dataclass
class Evidence:
    """What the root's telemetry showed for one fault, from the CSVs."""

    history: bool
    p95_ratio: float | None
    own_p95_ratio: float | None
    """The p95 of entry spans' own time (``Telemetry.own_ms``) against its history's."""
    errors_per_min: float
    usual_errors_per_min: float | None
    cpu_max: float | None
    cpu_before: float | None
    errors_early: int
    """ERROR lines of the root in its fault's files before the labelled injection time."""

    @property
    def shows(self) -> bool:
        return self._shows(self.p95_ratio)

    @property
    def shows_own(self) -> bool:
        """Shows it in the root's own time: a rise of its entry spans that their waits on
        other services account for is theirs, not the root's."""
        return self._shows(self.own_p95_ratio)

    def _shows(self, ratio: float | None) -> bool:
        latency = ratio is not None and ratio >= LATENCY_RISE
        usual = self.usual_errors_per_min
        errors = usual is not None and self.errors_per_min > usual
        return self.history and (latency or errors)

    def describe(self) -> str:
        p95 = "-" if self.p95_ratio is None else f"{self.p95_ratio:.2f}x"
        own = "-" if self.own_p95_ratio is None else f"{self.own_p95_ratio:.2f}x"
        usual = "-" if self.usual_errors_per_min is None else f"{self.usual_errors_per_min:.1f}"
        cpu = "-"
        if self.cpu_max is not None and self.cpu_before is not None:
            cpu = f"{self.cpu_max:.1f}% vs {self.cpu_before:.1f}%"
        return (
            f"entry p95 {p95:>7} (own time {own:>6})  "
            f"ERROR/min {self.errors_per_min:5.1f} (usual {usual:>4}, "
            f"{self.errors_early:2} lines before injection)  cpu max {cpu}"
        )


def per_service(segment: nezha.Segment, since_ns: int = 0) -> dict[str, Telemetry]:
    """Each service's entry-span durations (a span whose parent is in another service, or
    absent), their own time, and ERROR log lines in the segment, from ``since_ns`` on."""
    service_of = {span.span_id: nezha.service_of(span.pod) for span in segment.spans}
    children: dict[str, list[nezha.Span]] = {}
    for span in segment.spans:
        if span.parent_id:
            children.setdefault(span.parent_id, []).append(span)
    found: dict[str, Telemetry] = {}
    for span in segment.spans:
        if span.end_ns < since_ns:
            continue
        service = service_of[span.span_id]
        if span.parent_id and service_of.get(span.parent_id) == service:
            continue
        seen = found.setdefault(service, Telemetry())
        duration = span.end_ns - span.start_ns
        seen.entry_ms.append(duration / 1e6)
        seen.own_ms.append(max(duration - waited(span, children, service_of), 0) / 1e6)
    for line in segment.logs:
        if line.time_ns >= since_ns and line.level in ("ERROR", "FATAL"):
            found.setdefault(nezha.service_of(line.pod), Telemetry()).errors += 1
    return found


def waited(
    entry: nezha.Span, children: dict[str, list[nezha.Span]], service_of: dict[str, str]
) -> int:
    """Nanoseconds an entry span spent in its service's calls to other services: the
    durations of its service's spans below it with a child in another service (its client
    spans; the gap before the callee's server span is waiting too). Parallel calls count
    each; ``per_service`` clips the difference at zero. ``service_of``: by span id."""
    service, total, stack = service_of[entry.span_id], 0, [entry]
    while stack:
        for child in children.get(stack.pop().span_id, []):
            if service_of[child.span_id] != service:
                continue
            below = children.get(child.span_id, [])
            if any(service_of[g.span_id] != service for g in below):
                total += child.end_ns - child.start_ns
            else:
                stack.append(child)
    return total


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


@dataclass
class FaultData:
    fault: nezha.Fault
    evidence: Evidence
    reference: list[str]
    """Services by the rise of their entry spans' median latency, highest first."""


def analyse_data(day: nezha.Day) -> list[FaultData]:
    """The reference ranking and the root's evidence of every fault, from the CSVs."""
    clean, *windows = day.segments
    whole = [per_service(segment) for segment in day.segments]
    cpu: dict[str, list[tuple[int, float]]] = {}
    for row in day.metrics:
        if "CpuUsageRate(%)" in row.values:
            cpu.setdefault(row.pod, []).append((row.time_ns, row.values["CpuUsageRate(%)"]))
    out = []
    for k, segment in enumerate(windows):
        fault = segment.fault
        assert fault is not None
        at_ns = int(fault.at * nezha.NS)
        after = per_service(segment, at_ns)
        minutes_after = max((segment.last_ns - at_ns) / 60e9, 1 / 60)

        def history(service: str, k: int = k) -> tuple[Telemetry, int, bool]:
            """(entry spans and ERROR lines, minutes, any span) of the service's history."""
            seen_before, minutes, spans = Telemetry(), 0, False
            for j, seg in enumerate([clean, *windows[:k]]):
                if seg.fault is not None and seg.fault.service == service:
                    continue
                seen = whole[j].get(service)
                minutes += seg.minutes
                if seen is not None:
                    seen_before.entry_ms += seen.entry_ms
                    seen_before.own_ms += seen.own_ms
                    seen_before.errors += seen.errors
                spans = spans or any(nezha.service_of(s.pod) == service for s in seg.spans)
            return seen_before, minutes, spans

        ranking = []
        for service, seen in after.items():
            before = history(service)[0].entry_ms
            if len(seen.entry_ms) >= MIN_SPANS and len(before) >= MIN_SPANS:
                rise = statistics.median(seen.entry_ms) / max(statistics.median(before), 1e-3)
                ranking.append((rise, service))
        before, minutes, any_span = history(fault.service)
        root = after.get(fault.service, Telemetry())
        ratio = own_ratio = None
        if len(root.entry_ms) >= MIN_SPANS and len(before.entry_ms) >= MIN_SPANS:
            ratio = p95(root.entry_ms) / max(p95(before.entry_ms), 1e-3)
            own_ratio = p95(root.own_ms) / max(p95(before.own_ms), 1e-3)
        rows = cpu.get(fault.pod, [])
        before_rows = [v for t, v in rows if t < at_ns][-CPU_HISTORY_ROWS:]
        during = [v for t, v in rows if at_ns <= t <= at_ns + AFTER_S * nezha.NS]
        evidence = Evidence(
            history=any_span,
            p95_ratio=ratio,
            own_p95_ratio=own_ratio,
            errors_per_min=root.errors / minutes_after,
            usual_errors_per_min=before.errors / minutes if minutes else None,
            cpu_max=max(during) if during else None,
            cpu_before=statistics.fmean(before_rows) if before_rows else None,
            errors_early=sum(
                1
                for line in segment.logs
                if line.time_ns < at_ns
                and line.level in ("ERROR", "FATAL")
                and nezha.service_of(line.pod) == fault.service
            ),
        )
        out.append(FaultData(fault, evidence, [s for _, s in sorted(ranking, reverse=True)]))
    return out


# --------------------------------------------------------------------------- the processes


def scrape(port: int) -> dict[str, float]:
    """The consumer's /metrics as ``name{labels}`` -> value; empty while it is not up."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.TransportError:
        return {}
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.startswith("whyslow_") or sample.name.endswith("_created"):
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


class Recorder(ThreadingHTTPServer):
    """What the consumer posts to ``/v1/analyze``, kept: the consumer's service URL points
    here. With an ``upstream`` (the real service) each post is passed on as it came and the
    service's answer returned as it came (a tap: the service keeps only the analyses it
    stores, and the rule engine's answers past its deadline are not stored); without one
    (``--skip-service``) it answers with a placeholder analysis (the consumer only needs a
    200)."""

    def __init__(self, upstream: str | None) -> None:
        super().__init__(("127.0.0.1", 0), _RecorderHandler)
        self.upstream = httpx.Client(base_url=upstream, timeout=600) if upstream else None
        self.reports: dict[str, dict[str, object]] = {}
        self.posts = 0
        self.changed = 0
        """Posts of an id already recorded with another body (the last one is kept)."""
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def placeholder(report: dict[str, object]) -> bytes:
    return json.dumps(
        {
            "probable_cause": "unknown",
            "severity": "info",
            "confidence": 0.0,
            "summary": "recorded",
            "explanation": "recorded by the bench",
            "recommended_actions": ["none"],
            "anomaly_id": str(report.get("id")),
            "service": report.get("service"),
            "operation": report.get("operation"),
            "model": {"base": "none", "quantization": "none"},
            "latency_ms": 0.0,
            "grounding": "rules",
        }
    ).encode()


class _RecorderHandler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["content-length"]))
        report = json.loads(raw)
        status, body, headers = 200, b"", {"content-type": "application/json"}
        if self.server.upstream is None:
            body = placeholder(report)
        else:
            passed = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            try:
                answer = self.server.upstream.post(self.path, content=raw, headers=passed)
                status, body = answer.status_code, answer.content
                headers = {
                    k: v
                    for k, v in answer.headers.items()
                    if k.lower() in ("content-type", "retry-after")
                }
            except httpx.TransportError as exc:
                status, body = 502, str(exc).encode()
        if status == 200:
            with self.server.lock:
                key = str(report.get("id"))
                self.server.posts += 1
                self.server.changed += self.server.reports.get(key, report) != report
                self.server.reports[key] = report
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@dataclass
class Stack:
    settings: ConsumerSettings
    consumer: subprocess.Popen[bytes]
    service: subprocess.Popen[bytes] | None
    recorder: Recorder
    service_url: str
    """The service's own URL (the consumer posts to the recorder's)."""
    metrics_port: int
    logs: Path
    store_url: str


@contextmanager
def running(skip_service: bool, started: float) -> Iterator[Stack]:
    """The service (or the recorder) and the consumer, stopped and their queues and
    exchanges deleted on leaving."""
    settings = own_topology("bench.rca")
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    declare_topology(connection.channel(), settings)
    connection.close()
    with tempfile.TemporaryDirectory(prefix="whyslow-rca-") as work:
        root = Path(work)
        env = {k: v for k, v in os.environ.items() if not k.startswith("WHYSLOW_")}
        store = f"sqlite:///{root / 'baselines.db'}"
        processes: list[subprocess.Popen[bytes]] = []

        def start(name: str, args: list[str], extra: dict[str, str]) -> subprocess.Popen[bytes]:
            with (root / f"{name}.log").open("wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", *args],
                    env=env | extra,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=REPO,
                )
            processes.append(process)
            return process

        service, url, recorder = None, "", None
        try:
            if not skip_service:
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                service = start(
                    "service",
                    ["service", "serve", "--port", str(port)],
                    {"WHYSLOW_ANALYSES_URL": f"sqlite:///{root / 'analyses.db'}"}
                    | {"WHYSLOW_BASELINES_URL": store},
                )
            recorder = Recorder(url or None)
            threading.Thread(target=recorder.serve_forever, daemon=True).start()
            metrics_port = free_port()
            consumer = start(
                "consumer",
                ["baselines", "consume"],
                {
                    "WHYSLOW_DATA_DIR": str(root / "data"),
                    "WHYSLOW_BASELINES_URL": store,
                    "WHYSLOW_EXCHANGE": settings.exchange,
                    "WHYSLOW_QUEUE": settings.queue,
                    "WHYSLOW_DEAD_LETTER_EXCHANGE": settings.dead_letter_exchange,
                    "WHYSLOW_DEAD_LETTER_QUEUE": settings.dead_letter_queue,
                    "WHYSLOW_SHARD_EXCHANGE": settings.shard_exchange,
                    "WHYSLOW_SERVICE_URL": recorder.url,
                    "WHYSLOW_METRICS_PORT": str(metrics_port),
                },
            )
            other = (
                "a report recorder"
                if service is None
                else f"the service ({service.pid}) behind a tap"
            )
            log(started, f"started the consumer ({consumer.pid}) and {other}; logs in {root}")
            yield Stack(settings, consumer, service, recorder, url, metrics_port, root, store)
        finally:
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if recorder is not None:
                recorder.shutdown()
                recorder.server_close()
            connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
            delete_topology(connection.channel(), settings, 0)
            connection.close()


def wait_until(
    condition: Callable[[], bool], deadline: float, what: str, every: Callable[[], None]
) -> bool:
    """Poll ``condition`` until ``deadline`` (``time.perf_counter()``); call ``every`` each
    30 s (progress); False when the deadline came first."""
    last = time.perf_counter()
    while not condition():
        if time.perf_counter() > deadline:
            print(f"stopped waiting for {what}: the time limit came", flush=True)
            return False
        if time.perf_counter() - last >= 30:
            last = time.perf_counter()
            every()
        time.sleep(0.5)
    return True


def alive(stack: Stack) -> None:
    for name, process in (("consumer", stack.consumer), ("service", stack.service)):
        if process is not None and process.poll() is not None:
            tail = (stack.logs / f"{name}.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"the {name} exited with {process.returncode}:\n{tail}")


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def publish(settings: ConsumerSettings, messages: Sequence[nezha.Message], started: float) -> None:
    """Every message, confirmed, as the exporter publishes (persistent, protobuf)."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    channel.confirm_delivery()
    properties = pika.BasicProperties(content_type=nezha.CONTENT_TYPE, delivery_mode=2)
    for i, message in enumerate(messages, 1):
        channel.basic_publish(settings.exchange, message.routing_key, message.body, properties)
        if i % 2000 == 0:
            log(started, f"published {i:,} of {len(messages):,} messages")
    connection.close()


def dead_letter_reasons(settings: ConsumerSettings) -> Counter[str]:
    """The DLQ emptied: how many messages per reason (ids and numbers masked)."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    reasons: Counter[str] = Counter()
    while True:
        method, properties, _ = channel.basic_get(settings.dead_letter_queue, auto_ack=True)
        if method is None:
            break
        headers = (properties.headers if properties else None) or {}
        reason = str(headers.get(ERROR_HEADER, "?"))
        reasons[re.sub(r"[0-9a-f]{8,}|\d+", "#", reason)[:160]] += 1
    connection.close()
    return reasons


def read_records(url: str) -> list[tuple[AnomalyReport, dict[str, Any]]]:
    """Every analysed anomaly through the API: the list, page by page, then each record
    (the report as the service received it, and its analysis)."""
    records = []
    with httpx.Client(base_url=url, timeout=30) as client:
        ids: list[str] = []
        while True:
            page = client.get("/v1/anomalies", params={"limit": 500, "offset": len(ids)})
            page.raise_for_status()
            items = page.json()["items"]
            ids += [item["anomaly_id"] for item in items]
            if not items or len(ids) >= page.json()["total"]:
                break
        for anomaly_id in dict.fromkeys(ids):
            record = client.get(f"/v1/anomalies/{anomaly_id}")
            record.raise_for_status()
            payload = record.json()
            records.append((AnomalyReport.model_validate(payload["report"]), payload["analysis"]))
    return records


def checkpointed_outbox(stack: Stack) -> list[AnomalyReport]:
    """The reports a stopped consumer had not delivered yet, from its last checkpoint."""
    store = open_store(stack.store_url)
    key = CONSUMER_KEY_PREFIX + stack.settings.queue
    try:
        payload = store.load([key]).get(key)
    finally:
        store.close()
    if payload is None:
        return []
    return [
        AnomalyReport.model_validate_json(report)
        for report, _ in ConsumerRecord.decode(payload).outbox
    ]


def stop(process: subprocess.Popen[bytes], name: str, logs: Path) -> None:
    process.send_signal(signal.SIGTERM)
    if process.wait(timeout=120) != 0:
        tail = (logs / f"{name}.log").read_text(errors="replace")[-2000:]
        print(f"the {name} exited with {process.returncode}:\n{tail}")


def halt(process: subprocess.Popen[bytes]) -> None:
    """Stop a process now: SIGTERM, and SIGKILL after 10 s."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Run:
    reports: list[AnomalyReport]
    analyses: list[dict[str, Any]]
    """The analyses the service kept (none with ``--skip-service``)."""
    counters: dict[str, float]
    dead_letters: Counter[str]
    sources: str
    """Where the reports were read from, how many from each."""


def compact(counters: dict[str, float]) -> str:
    """The consumer's counters in one short line."""
    applied = ", ".join(
        f"{k.split('kind=')[1].rstrip('}')}s {int(v):,}"
        for k, v in counters.items()
        if k.startswith("whyslow_consumer_events_applied") and "kind=" in k
    )
    lost = ", ".join(
        f"{k.split('reason=')[1].rstrip('}')} {int(v):,}"
        for k, v in counters.items()
        if k.startswith("whyslow_consumer_events_not_applied") and v
    )
    return (
        f"{int(counters.get('whyslow_consumer_messages_total', 0)):,} messages; applied "
        f"{applied}; not applied: {lost or 'none'}; "
        f"{int(counters.get('whyslow_consumer_flagged_total', 0))} flagged, "
        f"{int(counters.get('whyslow_forwarder_forwarded_total', 0))} analysed, "
        f"{int(counters.get('whyslow_forwarder_outbox', 0))} waiting"
    )


def replay(
    messages: Sequence[nezha.Message], skip_service: bool, deadline: float, started: float
) -> Run:
    """Publish through the real pipeline and collect every report it produced: those the
    service analysed before ``deadline`` through its API, the rest from the consumer's
    checkpointed outbox once it has stopped."""
    with running(skip_service, started) as stack:
        if stack.service is not None:
            log(started, "waiting for the service's model to load (/readyz)")
            if not wait_until(
                lambda: ready(stack.service_url), deadline, "the service", lambda: alive(stack)
            ):
                raise SystemExit(2)
        if not wait_until(
            lambda: bool(scrape(stack.metrics_port)), deadline, "the consumer", lambda: alive(stack)
        ):
            raise SystemExit(2)
        log(started, f"publishing {len(messages):,} messages")
        publish(stack.settings, messages, started)

        def progress() -> None:
            alive(stack)
            log(started, "consumer: " + compact(scrape(stack.metrics_port)))

        wait_until(
            lambda: (
                scrape(stack.metrics_port).get("whyslow_consumer_messages_total", 0)
                >= len(messages)
            ),
            deadline,
            "the consumer to receive every message",
            progress,
        )
        progress()
        calm = [0]

        def delivered() -> bool:
            outbox = scrape(stack.metrics_port).get("whyslow_forwarder_outbox", 1)
            calm[0] = calm[0] + 1 if outbox == 0 else 0
            return calm[0] >= 3

        log(started, "waiting for every report to be analysed")
        complete = wait_until(delivered, deadline, "every report to be analysed", progress)
        counters = scrape(stack.metrics_port)
        log(started, "consumer: " + compact(counters))
        tap = stack.recorder
        with tap.lock:
            posted = {key: AnomalyReport.model_validate(r) for key, r in tap.reports.items()}
            sources = [
                f"{tap.posts} posts of {len(posted)} ids answered with a 200 "
                f"({tap.changed} an id again with another body)"
            ]
        analyses: list[dict[str, Any]] = []
        kept: dict[str, AnomalyReport] = {}
        if stack.service is not None:
            records = read_records(stack.service_url)
            kept = {report.anomaly_id: report for report, _ in records}
            analyses = [analysis for _, analysis in records]
            sources.append(f"{len(kept)} kept by the service, read through its API")
            unkept = [r for key, r in posted.items() if key not in kept]
            if unkept:
                sources.append(
                    f"{len(unkept)} answered but not kept by the service (a rule-engine "
                    "answer past the model's deadline is not stored), read from the tap"
                )
        if not complete and stack.service is not None:
            # the consumer's forwarder waits for the analysis in flight before it exits
            halt(stack.service)
        stop(stack.consumer, "consumer", stack.logs)
        reports = list(kept.values()) + [r for key, r in posted.items() if key not in kept]
        known = {report.anomaly_id for report in reports}
        late = [r for r in checkpointed_outbox(stack) if r.anomaly_id not in known]
        if late:
            sources.append(
                f"{len(late)} not delivered before the time limit, read from the consumer's "
                "checkpointed outbox"
            )
        log(started, f"collected {len(reports) + len(late)} reports")
        dead = dead_letter_reasons(stack.settings)
    return Run(reports + late, analyses, counters, dead, "; ".join(sources))


# --------------------------------------------------------------------------- scoring


@dataclass
class Alarm:
    """An incident (its reports together) or a report without incident."""

    key: str
    start: float
    services: list[str]
    """Ranked root-cause candidates (incident) or the flagged service (report)."""
    kind: str | None
    score: float
    incident: bool


def alarms(reports: list[AnomalyReport]) -> list[Alarm]:
    found: dict[str, Alarm] = {}
    revision: dict[str, tuple[int, float]] = {}
    for report in reports:
        window_start = report.window.start.timestamp() if report.window else 0.0
        incident = report.incident
        if incident is None:
            score = report.deviation.score if report.deviation else 0.0
            key = f"report {report.anomaly_id}"
            found[key] = Alarm(key, window_start, [report.service], None, score, False)
            continue
        key = f"incident {incident.id}"
        order = (incident.revision, window_start)
        if key in found and revision[key] >= order:
            found[key].start = min(found[key].start, incident.started.timestamp())
            continue
        revision[key] = order
        services = [c.service for c in incident.candidates]
        root = incident.root_cause
        if not services and root is not None:
            services = [root.service]
        start = incident.started.timestamp()
        if key in found:
            start = min(start, found[key].start)
        found[key] = Alarm(
            key, start, services, root.kind if root else None, root.score if root else 0.0, True
        )
    return sorted(found.values(), key=lambda a: a.start)


@dataclass
class Verdict:
    data: FaultData
    alarms: list[Alarm]

    @property
    def detected(self) -> bool:
        return bool(self.alarms)

    @property
    def ranked(self) -> list[str]:
        incidents = [a for a in self.alarms if a.incident]
        if incidents:
            ordered = [s for a in incidents for s in a.services]
        else:
            ordered = [s for a in sorted(self.alarms, key=lambda a: -a.score) for s in a.services]
        return list(dict.fromkeys(ordered))

    @property
    def kind(self) -> str | None:
        incidents = [a for a in self.alarms if a.incident]
        return incidents[0].kind if incidents else None

    def hit(self, k: int) -> bool:
        return self.data.fault.service in self.ranked[:k]

    def reference_hit(self, k: int) -> bool:
        return self.data.fault.service in self.data.reference[:k]

    @property
    def kind_right(self) -> bool:
        return self.kind == EXPECTED_KIND.get(self.data.fault.kind)


def assign(
    data: list[FaultData], found: list[Alarm], before_s: float = BEFORE_S
) -> tuple[list[Verdict], list[Alarm]]:
    """Each alarm to the latest fault whose window ([inject - before_s, inject + AFTER_S])
    holds its start; (verdicts, the rest)."""
    verdicts = [Verdict(d, []) for d in data]
    outside = []
    for alarm in found:
        owners = [
            v
            for v in verdicts
            if v.data.fault.at - before_s <= alarm.start <= v.data.fault.at + AFTER_S
        ]
        if owners:
            owners[-1].alarms.append(alarm)
        else:
            outside.append(alarm)
    return verdicts, outside


@dataclass
class Scoring:
    """The day's alarms assigned to its faults twice: by their start in a fault's window,
    and by an overlap of their first minute with it (``BEFORE_S + WINDOW_S`` before)."""

    verdicts: list[Verdict]
    outside: list[Alarm]
    overlapping: list[Verdict]
    outside_overlap: list[Alarm]


def score(data: list[FaultData], found: list[Alarm]) -> Scoring:
    return Scoring(*assign(data, found), *assign(data, found, BEFORE_S + WINDOW_S))


def second_copy(found: list[Alarm], day: nezha.Day, offset: float) -> list[Alarm]:
    """The alarms of a day replayed twice (``nezha.twice``) that start in its second copy,
    moved back by ``offset`` onto the day they are scored against."""
    begins = offset + min(day.segments[0].first_ns, day.metrics[0].time_ns) / nezha.NS
    return moved_back(found, begins, offset)


def moved_back(found: list[Alarm], begins: float, offset: float) -> list[Alarm]:
    """The alarms starting at ``begins`` (epoch seconds) or later, moved back by ``offset``
    onto the day they are scored against."""
    return [replace(a, start=a.start - offset) for a in found if a.start >= begins]


def hours_outside(day: nezha.Day, faults: list[nezha.Fault], before_s: float = BEFORE_S) -> float:
    """Hours of replayed event time outside every fault window."""
    first = min(day.segments[0].first_ns, day.metrics[0].time_ns) / nezha.NS
    last = max(day.segments[-1].last_ns, day.metrics[-1].time_ns) / nezha.NS
    covered, edge = 0.0, first
    for fault in faults:
        lo, hi = max(fault.at - before_s, edge), min(fault.at + AFTER_S, last)
        if hi > lo:
            covered += hi - lo
            edge = hi
    return (last - first - covered) / 3600


def short(service: str) -> str:
    return service.removeprefix("ts-").removesuffix("-service")


def report_table(verdicts: list[Verdict], title: str) -> None:
    print(f"\n{title}:")
    print(
        f"{'fault':8}  {'type':14}  {'root':28} {'hist':4} {'shows':5} {'det':3}  "
        f"{'ranked (pipeline)':34} {'kind':9}  reference (latency rise)"
    )
    for v in verdicts:
        f, e = v.data.fault, v.data.evidence
        ranked = ", ".join(short(s) for s in v.ranked[:3]) or "-"
        reference = ", ".join(short(s) for s in v.data.reference[:3]) or "-"
        mark = "*" if v.hit(1) else ("+" if v.hit(3) else " ")
        print(
            f"{f.label:8}  {f.kind:14}  {f.service:28} {'yes' if e.history else 'no':4} "
            f"{'yes' if e.shows else 'no':5} {'yes' if v.detected else 'no':3}  "
            f"{mark}{ranked:33} {v.kind or '-':9}  {reference}"
        )
    print("(* root ranked first, + in the top 3; names without ts- and -service)")


def evidence_table(verdicts: list[Verdict]) -> None:
    print("\nWhat each root's own telemetry showed (CSVs; after injection vs its history):")
    for v in verdicts:
        f, e = v.data.fault, v.data.evidence
        state = "too early" if not e.history else ("shows" if e.shows else "does not show")
        if e.shows and not e.shows_own:
            state += " (not in its own time)"
        print(f"  {f.label}  {f.kind:14} {f.service:30} {e.describe()}  -> {state}")


def totals(scoring: Scoring, day: nezha.Day) -> None:
    """Recall, AC@1, AC@3 and kind accuracy over each denominator, the reference's AC@k
    beside them, and the false alarm rate over the hours of ``day`` outside its faults'
    windows; the last three rows match an alarm whose first window overlaps the fault's
    window instead (see ``WINDOW_S``). Three decimals: 18 of 19 is 0.947, not the 0.95 two
    would print."""
    verdicts, overlapping = scoring.verdicts, scoring.overlapping
    groups = [
        ("all faults", verdicts),
        ("with history", [v for v in verdicts if v.data.evidence.history]),
        ("root shows it", [v for v in verdicts if v.data.evidence.shows]),
        ("all, overlap", overlapping),
        ("shows, overlap", [v for v in overlapping if v.data.evidence.shows]),
        ("own, overlap", [v for v in overlapping if v.data.evidence.shows_own]),
    ]
    print(
        f"\n{'denominator':14} {'faults':>6} {'recall':>7} {'AC@1':>6} {'AC@3':>6} {'kind':>6}"
        f"   reference  AC@1   AC@3"
    )
    for name, group in groups:
        n = max(len(group), 1)

        def share(test: Callable[[Verdict], bool], group: list[Verdict] = group, n: int = n) -> str:
            return f"{sum(map(test, group)) / n:.3f}"

        print(
            f"{name:14} {len(group):6} {share(lambda v: v.detected):>7} "
            f"{share(lambda v: v.hit(1)):>6} {share(lambda v: v.hit(3)):>6} "
            f"{share(lambda v: v.kind_right):>6}   "
            f"{share(lambda v: v.reference_hit(1)):>15} {share(lambda v: v.reference_hit(3)):>6}"
        )
    strict, overlap = len(scoring.outside), len(scoring.outside_overlap)
    strict_h = hours_outside(day, day.faults)
    overlap_h = hours_outside(day, day.faults, BEFORE_S + WINDOW_S)
    print(
        f"false alarms: {strict} alarms starting outside every fault window over "
        f"{strict_h:.1f} h replayed outside them: {strict / strict_h:.2f} per hour "
        f"(with overlap: {overlap} over {overlap_h:.1f} h, {overlap / overlap_h:.2f} per hour)"
    )
    print(
        "(overlap: an alarm whose first minute overlaps a fault window, i.e. starts within "
        f"[inject - {BEFORE_S + WINDOW_S:.0f} s, inject + {AFTER_S:.0f} s], is the fault's)"
    )


def pipeline_notes(run: Run, messages: Sequence[nezha.Message]) -> None:
    """What went in, what the consumer applied or refused, and how the service answered."""
    sent = Counter[str]()
    for message in messages:
        sent[message.routing_key] += message.items
    print(
        f"\npublished: {sent[nezha.TRACES_KEY]:,} spans, {sent[nezha.LOGS_KEY]:,} log records, "
        f"{sent[nezha.METRICS_KEY]:,} metric points in {len(messages):,} messages"
    )
    print("consumer: " + compact(run.counters))
    received = int(run.counters.get("whyslow_consumer_messages_total", 0))
    if received < len(messages):
        print(
            f"INCOMPLETE: the consumer had received {received:,} of {len(messages):,} messages "
            "when the time limit came (--deadline): the scores below miss the rest"
        )
    for reason, count in run.dead_letters.most_common(8):
        print(f"dead-lettered {count:,}x: {reason}")
    incidents = sum(1 for r in run.reports if r.incident is not None)
    print(f"reports: {len(run.reports)}, {incidents} of them with an incident: {run.sources}")
    if run.analyses:
        grounding = Counter(str(a.get("grounding")) for a in run.analyses)
        causes = Counter(str(a.get("probable_cause")) for a in run.analyses)
        print(f"service: {len(run.analyses)} analysed ({dict(grounding)}); causes {dict(causes)}")


# --------------------------------------------------------------------------- main


def check_metrics() -> None:
    """Say which of the gauges the consumer maps, and to what."""
    for name, column in nezha.METRIC_COLUMNS.items():
        rule = METRIC_RULES.get(name)
        target = f"-> {rule.target}" if rule else "NOT MAPPED (passes through under its name)"
        print(f"  {column} as {name} (fraction, scope kubeletstatsreceiver) {target}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the nezha-dev folder")
    parser.add_argument("--day", default="2023-01-29", help="a day of rca_data (TrainTicket)")
    parser.add_argument(
        "--skip-service",
        action="store_true",
        help="forward to a recorder in this process instead of `whyslow serve`",
    )
    parser.add_argument(
        "--batch-seconds", type=float, default=2.0, help="event time one message covers"
    )
    parser.add_argument(
        "--again-after-days",
        type=int,
        default=0,
        help="replay the day a second time this many days later and score that copy, the "
        "first being its history (default 0: once)",
    )
    parser.add_argument(
        "--save", type=Path, help="also write every report (and its analysis) here, JSON lines"
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=510.0,
        help="seconds from the start after which the bench stops waiting for the service's "
        "analyses and scores the reports it did not analyse from the consumer's checkpoint "
        "(default 510: the run ends within 10 minutes)",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if not (args.data / "rca_data" / args.day).is_dir():
        print(f"no {args.data / 'rca_data' / args.day}", file=sys.stderr)
        return 2
    day = nezha.load_day(args.data, args.day)
    clean = day.segments[0]
    log(
        started,
        f"read {args.day}: {len(day.faults)} faults, "
        f"{sum(len(s.spans) for s in day.segments):,} spans, "
        f"{sum(len(s.logs) for s in day.segments):,} log lines, {len(day.metrics):,} metric rows",
    )
    print(
        f"the fault-free minute is replayed first, moved by {day.shift_s:+.0f} s: "
        f"{clock(clean.first_ns / nezha.NS)}-{clock(clean.last_ns / nezha.NS)}, one minute "
        f"before the first fault's data ({clock(day.segments[1].first_ns / nezha.NS)})"
    )
    check_metrics()
    offset = args.again_after_days * 86400
    replayed = nezha.twice(day, offset) if offset else day
    messages = nezha.replay_messages(replayed, args.batch_seconds)
    data = analyse_data(day)
    log(started, f"encoded {len(messages):,} OTLP messages; reference computed")
    run = replay(messages, args.skip_service, started + args.deadline, started)
    found = alarms(run.reports)
    if offset:
        found = second_copy(found, day, offset)
        print(f"scored: the second copy, {args.again_after_days} days after the first")
    scoring = score(data, found)
    pipeline_notes(run, messages)
    report_table(scoring.verdicts, "Each fault, its alarms starting in its window")
    report_table(scoring.overlapping, "Each fault, with overlap (see the last rows of the totals)")
    evidence_table(scoring.verdicts)
    print("\nAlarms starting outside every fault window:")
    for alarm in scoring.outside:
        what = "incident" if alarm.incident else "report"
        near = [f for f in day.faults if f.at - BEFORE_S - WINDOW_S <= alarm.start < f.at]
        print(
            f"  {clock(alarm.start)} {what} {', '.join(short(s) for s in alarm.services[:3])} "
            f"({alarm.kind or '-'})"
            + (f": its first minute overlaps the window of fault {near[-1].label}" if near else "")
        )
    totals(scoring, day)
    if args.save:
        by_id = {str(a.get("anomaly_id")): a for a in run.analyses}
        with args.save.open("w") as out:
            for report in run.reports:
                record: dict[str, Any] = {
                    "report": report.model_dump(mode="json", exclude_none=True),
                    "analysis": by_id.get(report.anomaly_id),
                }
                out.write(json.dumps(record) + "\n")
        print(f"reports written to {args.save}")
    early = [v.data.fault for v in scoring.verdicts if not v.data.evidence.history]
    if early:
        print(
            "too early (no span history of the root): "
            + ", ".join(f"{f.label} {f.service}" for f in early)
        )
    log(started, "done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
