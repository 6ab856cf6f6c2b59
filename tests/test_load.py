"""Load: telemetry through the real RabbitMQ at the consumer's benchmark rate while
``POST /v1/analyze`` gets more concurrent requests than its queue holds, for a bounded time
on loopback. The consumer and the service run as their own processes, as deployed.

Holds when: nothing crashes; every published span is applied; the service answers only
200 or 503, and a 503 (with Retry-After) only when the queue really was full; both
processes' memory is flat (the service's may grow only by the part of the model's KV
cache that longer answers first reach). The figures (spans/s, answer p50/p95, 503 share,
RSS) are printed (``-s``) for docs/reliability.md; no timing is
asserted.
"""

from __future__ import annotations

import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import gguf
import httpx
import pika
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.trace import SpanKind

from baselines.demo import free_port
from service.model.loader import ModelLoader
from service.settings import Settings as ServiceSettings
from tests.baselines.test_chaos import _ready
from tests.helpers import declare, sample_value, wait_for
from tests.otlp import record_spans

SPANS_PER_S = 50_000
"""The consumer's benchmark target, in 1,000-span OTLP messages."""
DURATION_S = 40
BATCH_S = 2
"""Event time one message covers, as a Collector batch covers its flush interval."""
CLIENTS = 12
QUEUE_LIMIT = 4


def batch(start_s: float) -> bytes:
    """1,000 server spans of three services over BATCH_S seconds, recorded by the SDK and
    encoded by its OTLP exporter, as the Collector publishes a batch."""
    rng = random.Random(0)
    spans = []
    for service in ("checkout", "exchange-api", "search"):

        def build(tracer, service=service) -> None:
            for _ in range(1000 // 3 + (service == "checkout")):
                end = round((start_s + rng.uniform(0, BATCH_S)) * 1e9)
                operation = rng.choice(("GET /a", "GET /b", "POST /c"))
                span = tracer.start_span(
                    operation,
                    kind=SpanKind.SERVER,
                    start_time=end - round(rng.lognormvariate(4, 0.3) * 1e6),
                )
                span.end(end_time=end)

        spans += record_spans(build, {"service.name": service})
    return encode_spans(spans).SerializeToString()


def shifted(message: bytes, seconds: float) -> bytes:
    """The same trace request with every span moved ``seconds`` later."""
    request = ExportTraceServiceRequest.FromString(message)
    offset = round(seconds * 1e9)
    for resource in request.resource_spans:
        for scope in resource.scope_spans:
            for span in scope.spans:
                span.start_time_unix_nano += offset
                span.end_time_unix_nano += offset
    return request.SerializeToString()


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def applied_spans(metrics_port: int) -> int:
    try:
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    except httpx.TransportError:
        return -1
    value = sample_value(text, "whyslow_consumer_events_applied_total", kind="span")
    return -1 if value is None else int(value)


class Clients:
    """HTTP clients posting distinct reports back to back; for each answer, the most
    requests of the others that were outstanding at once while it was (the server can
    have had no more admitted than the clients had outstanding)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._lock = threading.Lock()
        self._peaks: dict[int, int] = {}
        self._next = 0
        self.answers: list[tuple[int, float, int, str | None]] = []
        """(status, seconds, peak of others outstanding, Retry-After)"""

    def run(self, stop: threading.Event) -> None:
        with httpx.Client(base_url=self._url, timeout=120) as client:
            while not stop.is_set():
                with self._lock:
                    me, self._next = self._next, self._next + 1
                    self._peaks[me] = len(self._peaks)
                    for other in self._peaks:
                        self._peaks[other] = max(self._peaks[other], len(self._peaks) - 1)
                started = time.perf_counter()
                response = client.post("/v1/analyze", json=report(me))
                elapsed = time.perf_counter() - started
                with self._lock:
                    peak = self._peaks.pop(me)
                    self.answers.append(
                        (response.status_code, elapsed, peak, response.headers.get("retry-after"))
                    )
                if response.status_code == 503:
                    stop.wait(0.2)


def report(i: int) -> dict:
    """A report of its own situation (service name), so no cache answers it."""
    return {
        "id": f"load-{i}",
        "service": f"load-{i}",
        "operation": "GET /rates",
        "latency_ms": {"p50": 300, "p95": 520, "p99": 700},
        "baseline": {"hour_of_week": 10, "p50": 50, "p95": 90, "samples": 48, "level": "global"},
        "context": {"cpu_pct": 14, "cpu_baseline_pct": 36},
    }


def sample(pids: dict[str, int], stop: threading.Event, into: dict[str, list[float]]) -> None:
    while not stop.wait(1.0):
        for name, pid in pids.items():
            into.setdefault(name, []).append(rss_mb(pid))


def kv_cache_mb(model: Path, n_ctx: int = 2048) -> float:
    """The f16 KV cache llama.cpp allocates for ``n_ctx`` tokens: its pages are touched as
    contexts grow, so RSS rises by up to this much, once, with the longest answers."""
    reader = gguf.GGUFReader(str(model))

    def field(key: str) -> int:
        return int(reader.get_field(f"llama.{key}").contents())  # type: ignore[union-attr]

    head_dim = field("embedding_length") // field("attention.head_count")
    per_token = field("block_count") * 2 * field("attention.head_count_kv") * head_dim * 2
    return n_ctx * per_token / 2**20


def flat(samples: list[float]) -> tuple[float, float]:
    """(median of the first third, highest of the last third), in MB."""
    third = len(samples) // 3
    return statistics.median(samples[:third]), max(samples[2 * third :])


@pytest.mark.slow
def test_sustained_telemetry_and_an_overloaded_api_hold(
    amqp_settings, service_settings: ServiceSettings, tmp_path: Path
) -> None:
    settings = amqp_settings.model_copy(update={"prefetch": 50})
    declare(settings)
    port, metrics_port = free_port(), free_port()
    model = ModelLoader(service_settings).model_path()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHYSLOW_")}
    env |= {
        "WHYSLOW_DATA_DIR": str(tmp_path / "data"),
        "WHYSLOW_MODEL_PATH": str(model),
        "WHYSLOW_ANALYSES_URL": f"sqlite:///{tmp_path / 'analyses.db'}",
        "WHYSLOW_QUEUE_LIMIT": str(QUEUE_LIMIT),
        "WHYSLOW_N_THREADS": "1",
    }
    consumer_env = env | {
        "WHYSLOW_BASELINES_URL": f"sqlite:///{tmp_path / 'baselines.db'}",
        "WHYSLOW_EXCHANGE": settings.exchange,
        "WHYSLOW_QUEUE": settings.queue,
        "WHYSLOW_DEAD_LETTER_EXCHANGE": settings.dead_letter_exchange,
        "WHYSLOW_DEAD_LETTER_QUEUE": settings.dead_letter_queue,
        "WHYSLOW_PREFETCH": "50",
        "WHYSLOW_SERVICE_URL": f"http://127.0.0.1:{port}",
        "WHYSLOW_METRICS_PORT": str(metrics_port),
    }
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (logs / f"{name}.log").open("wb") as out:
            return subprocess.Popen(
                [sys.executable, "-m", *args], env=env, stdout=out, stderr=subprocess.STDOUT
            )

    service = start("service", ["service", "serve", "--port", str(port)], env)
    consumer = start("consumer", ["baselines", "consume"], consumer_env)
    template = batch(time.time() - 3 * 86400)  # event time ends well before now
    try:
        wait_for(lambda: _ready(port), 120, "the service")
        wait_for(lambda: applied_spans(metrics_port) == 0, 60, "the consumer's /metrics")
        stop, memory = threading.Event(), {}
        clients = Clients(f"http://127.0.0.1:{port}")
        workers: list[Callable[[], None]] = [lambda: clients.run(stop)] * CLIENTS
        workers.append(
            lambda: sample({"service": service.pid, "consumer": consumer.pid}, stop, memory)
        )
        threads = [threading.Thread(target=work, daemon=True) for work in workers]
        for thread in threads:
            thread.start()
        published, started = publish_steadily(settings.amqp_url, settings.exchange, template)
        stop.set()
        for thread in threads:
            thread.join(timeout=150)
        wait_for(lambda: applied_spans(metrics_port) >= published, 180, "the consumer to drain")
        drained = time.perf_counter() - started
        assert service.poll() is None and consumer.poll() is None, "a process died"
        applied = applied_spans(metrics_port)
        assert applied == published
    finally:
        for process in (service, consumer):
            process.terminate()
        for process in (service, consumer):
            process.wait(timeout=30)
    assert consumer.returncode == 0, (logs / "consumer.log").read_text()[-2000:]

    statuses = [status for status, *_ in clients.answers]
    others = [status for status in statuses if status not in {200, 503}]
    assert not others, sorted(set(others))
    refused = [a for a in clients.answers if a[0] == 503]
    assert refused, "the clients never filled the queue"
    for _, _, peak, retry_after in refused:
        assert peak >= QUEUE_LIMIT, f"a 503 with only {peak} other requests outstanding"
        assert retry_after is not None and int(retry_after) >= 1
    allowed = {"service": kv_cache_mb(model) + 10, "consumer": 10}
    for name, samples in memory.items():
        first, last = flat(samples)
        assert last - first <= allowed[name], f"{name} memory grew: {first:.0f} -> {last:.0f} MB"

    answered = sorted(seconds for status, seconds, *_ in clients.answers if status == 200)
    p95 = answered[max(0, round(0.95 * len(answered)) - 1)]
    rss = ", ".join(f"{n} {flat(s)[0]:.0f} -> {flat(s)[1]:.0f} MB" for n, s in memory.items())
    print(
        f"\nload: {published:,} spans published in {DURATION_S} s "
        f"({published / DURATION_S:,.0f}/s), {applied:,} applied, drained after {drained:.1f} s; "
        f"{len(clients.answers)} analyze calls from {CLIENTS} clients (queue {QUEUE_LIMIT}): "
        f"{len(answered)} answered (p50 {statistics.median(answered):.2f} s, p95 {p95:.2f} s), "
        f"{len(refused)} 503 past the bound, {len(others)} other errors; RSS {rss}"
    )


def publish_steadily(amqp_url: str, exchange: str, template: bytes) -> tuple[int, float]:
    """OTLP protobuf messages of 1,000 spans at SPANS_PER_S for DURATION_S, event time moving
    on by BATCH_S each message; returns (spans published, start time)."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    properties = pika.BasicProperties(content_type="application/x-protobuf", delivery_mode=2)
    per_message_s = 1000 / SPANS_PER_S
    started = time.perf_counter()
    sent = 0
    while (elapsed := time.perf_counter() - started) < DURATION_S:
        if sent * per_message_s > elapsed:
            time.sleep(min(per_message_s, sent * per_message_s - elapsed))
            continue
        body = shifted(template, sent * BATCH_S)
        channel.basic_publish(exchange, "otlp_spans", body, properties)
        sent += 1
    connection.close()
    return sent * 1000, started
