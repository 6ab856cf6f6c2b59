"""Coverage-guided fuzzing of the message parsers with atheris (libFuzzer for Python).

    python tests/fuzz/fuzz_parsers.py --seconds 300        # or --runs N

The first byte of an input picks the parser: ``parse_json_events``, or ``parse_otlp``
with each routing key (``otlp_spans``, ``otlp_metrics``) and content type (protobuf,
JSON, and none, which is sniffed as the rabbitmqexporter's messages are); the rest is the
message body. The router's split of the same message (``split_json_events``,
``split_otlp``) runs on it too. Any exception but ``MalformedMessage``, and any event the
contract would refuse (the OTLP path builds events without validation), is a crash; so is
an input that takes more than 10 s or 2 GB.

The fuzzer starts from a small corpus of valid messages built with the OpenTelemetry SDK
(as an instrumented app and the Collector would send them), written to a temporary folder
with a dictionary of OTLP/JSON tokens, and runs in a child process. At the end this prints
what libFuzzer reports (inputs executed, coverage, corpus) and the number of crashes, and
exits 1 if there was one, leaving the crashing input in ``--artifacts``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ROUTES: tuple[tuple[str, str], ...] = (
    ("json", "application/json"),
    ("otlp_spans", "application/x-protobuf"),
    ("otlp_spans", "application/json"),
    ("otlp_metrics", "application/x-protobuf"),
    ("otlp_metrics", "application/json"),
    ("otlp_spans", ""),
    ("otlp_metrics", ""),
)
"""Indexed by the first byte of an input (modulo): JSON events, then OTLP by routing key
and content type."""

TOKENS = (
    "resourceSpans",
    "scopeSpans",
    "spans",
    "resourceMetrics",
    "scopeMetrics",
    "metrics",
    "gauge",
    "sum",
    "dataPoints",
    "asInt",
    "asDouble",
    "timeUnixNano",
    "startTimeUnixNano",
    "endTimeUnixNano",
    "traceId",
    "spanId",
    "kind",
    "status",
    "code",
    "message",
    "events",
    "exception",
    "exception.message",
    "attributes",
    "key",
    "value",
    "stringValue",
    "intValue",
    "service.name",
    "peer.service",
    "isMonotonic",
    "flags",
    "system.cpu.utilization",
    "state",
    "idle",
    "duration_ms",
    "timestamp",
    "operation",
    "service",
    "metric",
    "cpu_pct",
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "\\ud800",
    "\\u0000",
)


# --------------------------------------------------------------------------- the child


def fuzz(argv: list[str]) -> None:
    """Run under libFuzzer (never returns: libFuzzer exits when done or on a crash)."""
    import atheris

    with atheris.instrument_imports(include=["baselines", "service"]):
        from baselines.ingest.json_events import (
            MalformedMessage,
            parse_json_events,
            split_json_events,
        )
        from baselines.ingest.otlp import parse_otlp, split_otlp

    def shard(service: str) -> int:
        return len(service) % 3

    def one_input(data: bytes) -> None:
        if not data:
            return
        routing_key, content_type = ROUTES[data[0] % len(ROUTES)]
        body = data[1:]
        try:  # as the router splits it
            if routing_key == "json":
                split_json_events(body, shard)
            else:
                split_otlp(body, routing_key, content_type, shard)
        except MalformedMessage as exc:
            if not str(exc):
                raise AssertionError("MalformedMessage without a reason") from exc
        try:
            if routing_key == "json":
                batch = parse_json_events(body)
            else:
                batch = parse_otlp(body, routing_key, content_type)
        except MalformedMessage as exc:
            if not str(exc):
                raise AssertionError("MalformedMessage without a reason") from exc
            return
        for event in batch.events:  # what the OTLP path built unvalidated must be valid
            if type(event).model_validate(event.model_dump()) != event:
                raise AssertionError(f"an event the contract changes: {event!r}")
        json.dumps([item for item, _ in batch.rejected], default=str)  # as dead-lettered

    atheris.Setup(argv, one_input)
    atheris.Fuzz()


# --------------------------------------------------------------------------- the parent


def seeds() -> dict[str, bytes]:
    """Valid messages of each route, built with the OTel SDK's own types and encoders."""
    sys.path.insert(0, str(ROOT))
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.trace import SpanKind, Status, StatusCode

    from tests.otlp import record_spans, to_otlp_json

    t0 = 1_763_283_600_000_000_000

    def spans(tracer: Any) -> None:
        server = tracer.start_span("POST /checkout", kind=SpanKind.SERVER, start_time=t0)
        server.end(end_time=t0 + 120_000_000)
        client = tracer.start_span(
            "charge", kind=SpanKind.CLIENT, attributes={"peer.service": "payments"}, start_time=t0
        )
        client.record_exception(TimeoutError("payments did not answer"))
        client.set_status(Status(StatusCode.ERROR, "timeout"))
        client.end(end_time=t0 + 80_000_000)
        internal = tracer.start_span("render", kind=SpanKind.INTERNAL, start_time=t0)
        internal.end(end_time=t0 + 1_000_000)

    traces = encode_spans(record_spans(spans, {"service.name": "checkout"}))

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], resource=Resource({"service.name": "api"}))
    meter = provider.get_meter("fuzz")

    def observe(*points: tuple[float, dict[str, Any]]) -> Any:
        def callback(options: CallbackOptions) -> list[Observation]:
            return [Observation(value, attributes) for value, attributes in points]

        return callback

    meter.create_observable_gauge(
        "system.cpu.utilization",
        callbacks=[observe((0.7, {"cpu": 0, "state": "idle"}), (0.3, {"cpu": 0, "state": "user"}))],
    )
    meter.create_observable_gauge(
        "system.memory.utilization", callbacks=[observe((0.6, {"state": "used"}))]
    )
    meter.create_observable_up_down_counter(
        "rabbitmq.message.current", callbacks=[observe((12, {"state": "ready"}))]
    )
    meter.create_counter("requests").add(3)
    meter.create_histogram("latency").record(0.2)
    metrics_data = reader.get_metrics_data()
    provider.shutdown()
    assert metrics_data is not None
    metrics = encode_metrics(metrics_data)

    events = [
        {
            "service": "checkout",
            "operation": "POST /checkout",
            "duration_ms": 182.4,
            "timestamp": "2026-11-16T09:00:01.250Z",
            "status": "ok",
            "kind": "server",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        },
        {
            "service": "checkout",
            "operation": "POST /charge",
            "kind": "client",
            "peer_service": "payments",
            "duration_ms": 41.0,
            "timestamp": 1794819601.3,
        },
        {"service": "checkout", "metric": "cpu_pct", "value": 47.5, "timestamp": 1794819630},
    ]
    selector = {route: bytes([index]) for index, route in enumerate(ROUTES)}
    return {
        "json-batch": selector[ROUTES[0]] + json.dumps(events).encode(),
        "json-one": selector[ROUTES[0]] + json.dumps(events[0]).encode(),
        "spans-proto": selector[ROUTES[1]] + traces.SerializeToString(),
        "spans-json": selector[ROUTES[2]] + to_otlp_json(traces),
        "metrics-proto": selector[ROUTES[3]] + metrics.SerializeToString(),
        "metrics-json": selector[ROUTES[4]] + to_otlp_json(metrics),
        "spans-sniffed": selector[ROUTES[5]] + to_otlp_json(traces),
        "metrics-sniffed": selector[ROUTES[6]] + metrics.SerializeToString(),
    }


def dictionary() -> str:
    """libFuzzer's dictionary format: one quoted token a line."""
    return "".join(json.dumps(token) + "\n" for token in TOKENS)


def run(seconds: int | None, runs: int | None, artifacts: Path) -> int:
    with tempfile.TemporaryDirectory(prefix="whyslow-fuzz-") as work:
        corpus = Path(work) / "corpus"
        corpus.mkdir()
        for name, body in seeds().items():
            (corpus / name).write_bytes(body)
        (Path(work) / "otlp.dict").write_text(dictionary())
        artifacts.mkdir(parents=True, exist_ok=True)
        flags = [
            f"-dict={Path(work) / 'otlp.dict'}",
            f"-artifact_prefix={artifacts}/",
            "-max_len=8192",
            "-timeout=10",
            "-rss_limit_mb=2048",
            "-print_final_stats=1",
        ]
        if seconds is not None:
            flags.append(f"-max_total_time={seconds}")
        if runs is not None:
            flags.append(f"-runs={runs}")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        child = subprocess.run(
            [sys.executable, __file__, "--child", *flags, str(corpus)],
            capture_output=True,
            text=True,
            cwd=work,
            env=env,
            check=False,
        )
    crashed = child.returncode != 0
    print(summary(child.stdout + child.stderr, crashed, artifacts))
    if crashed:  # atheris writes the exception to stdout, libFuzzer its report to stderr
        print(child.stdout[-6000:], child.stderr[-3000:], sep="\n", file=sys.stderr)
    return 1 if crashed else 0


def summary(log: str, crashed: bool, artifacts: Path) -> str:
    """The figures libFuzzer prints: executions, coverage (edges and features), corpus."""
    executed = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log)
    coverage = re.findall(r"cov: (\d+) ft: (\d+) corp: (\d+)/", log)
    lines = [f"inputs executed: {executed[-1] if executed else 'unknown'}"]
    if coverage:
        cov, ft, corp = coverage[-1]
        lines.append(f"coverage: {cov} edges, {ft} features, corpus {corp} inputs")
    lines.append(f"crashes: {1 if crashed else 0}")
    if crashed:
        lines.append(f"crashing input: {artifacts} (reproduce: fuzz_parsers.py --child FILE)")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        fuzz([sys.argv[0], *sys.argv[2:]])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, help="stop after this long")
    parser.add_argument("--runs", type=int, help="stop after this many inputs")
    parser.add_argument(
        "--artifacts",
        type=Path,
        default=Path(tempfile.gettempdir()) / "whyslow-fuzz-artifacts",
        help="where a crashing input is written",
    )
    args = parser.parse_args()
    if args.seconds is None and args.runs is None:
        parser.error("give --seconds or --runs: the fuzzer runs until told to stop")
    return run(args.seconds, args.runs, args.artifacts)


if __name__ == "__main__":
    sys.exit(main())
