"""Spans/s through the scale-out topology, as deployed (separate processes): the router and
N shard consumers, against one consumer of the whole stream, measured in the same run.

    .venv/bin/python tests/bench/scale_out.py [--spans 300000] [--shards 2] [--per-message 1000]

Each run starts the processes (``whyslow route``, ``whyslow consume --shard K`` or
``whyslow consume``, each in exactly-once mode with its own SQLite store), waits until they
serve ``/metrics``, publishes the messages (batched OTLP protobuf, three services) and stops
the clock when the consumers' ``/metrics`` count every span applied. On a machine with the
broker on the same cores, this shows what the shards add beyond one consumer there.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pika
from consumer_speed import otlp_messages, teardown
from prometheus_client.parser import text_string_to_metric_families

from baselines.demo import free_port
from baselines.settings import Settings
from baselines.topology import declare_topology

WHYSLOW = Path(sys.executable).with_name("whyslow")


def spans_applied(port: int) -> float:
    """What a consumer's /metrics counts as spans applied; -1 while it does not answer."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.TransportError:
        return -1.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "whyslow_consumer_events_applied_total" and sample.labels == {
                "kind": "span"
            }:
                return sample.value
    return 0.0


def not_applied(port: int) -> str:
    """A consumer's counts of what it did not apply, for a run that stalls."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    wanted = ("not_applied", "dead_lettered", "messages_total", "redelivered")
    return ", ".join(
        f"{sample.name}{sample.labels or ''} {sample.value:,.0f}"
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if any(word in sample.name for word in wanted) and sample.value
    )


def start(args: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """A whyslow process, once its /metrics answers."""
    process = subprocess.Popen(
        [str(WHYSLOW), *args],
        env={**env, "WHYSLOW_METRICS_PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while spans_applied(port) < 0:
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"whyslow {' '.join(args)} did not start")
        time.sleep(0.2)
    return process


def run(
    settings: Settings, env: dict[str, str], messages: list[bytes], spans: int, shards: int
) -> float:
    """Seconds from the first publish until every span is applied; 0 shards is one
    consumer of the ingest queue, without the router."""
    ports = [free_port() for _ in range(max(shards, 1))]
    processes = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if shards:
                processes.append(start(["route", "--shards", str(shards)], env, free_port()))
            for k, port in enumerate(ports):
                store = {"WHYSLOW_BASELINES_URL": f"sqlite:///{tmp}/{k}.db"}
                command = ["consume", "--shard", str(k)] if shards else ["consume"]
                processes.append(start(command, {**env, **store}, port))
            connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
            channel = connection.channel()
            # the processes declare it too, but may not have yet: what a topic exchange
            # cannot route is dropped (and confirmed)
            declare_topology(channel, settings)
            channel.confirm_delivery()  # faster than the consumers, so it costs no time
            started = time.perf_counter()
            for body in messages:
                channel.basic_publish(settings.exchange, "otlp_spans", body)
            connection.close()
            applied, progress_at = 0.0, time.monotonic()
            while applied < spans:
                time.sleep(0.05)
                now_applied = sum(spans_applied(port) for port in ports)
                if now_applied > applied:
                    applied, progress_at = now_applied, time.monotonic()
                elif time.monotonic() - progress_at > 60:
                    raise SystemExit(
                        f"stalled at {applied:,.0f} of {spans:,} spans applied; "
                        + "; ".join(not_applied(port) for port in ports)
                    )
            return time.perf_counter() - started
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=300_000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--per-message", type=int, default=1000)
    args = parser.parse_args()
    suffix = uuid.uuid4().hex[:8]
    names = {
        "WHYSLOW_EXCHANGE": f"bench.{suffix}",
        "WHYSLOW_QUEUE": f"bench.{suffix}",
        "WHYSLOW_DEAD_LETTER_EXCHANGE": f"bench.{suffix}.dlx",
        "WHYSLOW_DEAD_LETTER_QUEUE": f"bench.{suffix}.dlq",
        "WHYSLOW_SHARD_EXCHANGE": f"bench.{suffix}.shards",
        "WHYSLOW_SERVICE_URL": "http://127.0.0.1:9",  # nothing is flagged here
    }
    env = {**os.environ, **names}
    settings = Settings(**{k.removeprefix("WHYSLOW_").lower(): v for k, v in names.items()})
    messages = otlp_messages(args.spans, args.per_message)
    label = f"OTLP protobuf, {args.spans / len(messages):.0f} spans/msg, {args.spans:,} spans"
    try:
        one = run(settings, env, messages, args.spans, 0)
        print(f"{label}: one consumer: {args.spans / one:>10,.0f} spans/s")
        routed = run(settings, env, messages, args.spans, args.shards)
        print(
            f"{label}: router + {args.shards} shard consumers: {args.spans / routed:>10,.0f} "
            f"spans/s, {one / routed:.2f}x one consumer ({os.cpu_count()} cores, broker included)"
        )
    finally:
        teardown(settings, args.shards)


if __name__ == "__main__":
    main()
