"""``python -m baselines`` / ``whyslow consume|replay|demo``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path

from baselines.settings import Settings
from service.logs import configure_logging


def _consume(args: argparse.Namespace, settings: Settings) -> int:
    from baselines.consumer import TelemetryConsumer
    from baselines.detect import Detector
    from baselines.forward import Forwarder
    from baselines.metrics import ConsumerCollector, serve_metrics
    from baselines.snapshot import SnapshotFormatError
    from baselines.store import StoreError, open_store
    from baselines.topology import broker_problem
    from service.tracing import configure_tracing

    problem = broker_problem(settings.amqp_url)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    configure_tracing("whyslow-consumer")
    try:
        store = open_store(settings.resolved_baselines_url())
    except (StoreError, ValueError) as exc:
        print(f"consume: baseline store: {exc}", file=sys.stderr)
        return 2
    forwarder = Forwarder(
        settings.service_url, settings.forward_timeout_s, api_key=settings.api_key()
    ).start()
    consumer = TelemetryConsumer(
        settings, lambda: Detector(settings.detector_config()), forwarder, store
    )
    if settings.metrics_port:
        serve_metrics(ConsumerCollector(consumer), settings.metrics_port)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: consumer.stop())
    try:
        consumer.run()
    except (StoreError, SnapshotFormatError) as exc:
        print(f"consume: refusing to start from empty baselines: {exc}", file=sys.stderr)
        return 2
    finally:
        forwarder.close()
        store.close()
    return 0


def _route(args: argparse.Namespace, settings: Settings) -> int:
    from baselines.metrics import RouterCollector, serve_metrics
    from baselines.router import Router
    from baselines.topology import broker_problem
    from service.tracing import configure_tracing

    problem = broker_problem(settings.amqp_url)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    configure_tracing("whyslow-router")
    router = Router(settings, args.shards)
    if settings.metrics_port:
        serve_metrics(RouterCollector(router), settings.metrics_port)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: router.stop())
    router.run()
    return 0


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from baselines.replay import ReplayInputError, replay_files

    started = time.perf_counter()
    try:
        series, result = replay_files(
            args.input, args.output, settings.detector_config(), args.direction
        )
        if args.plot:
            from baselines.plot import plot_replay

            plot_replay(series, result, args.plot, title=args.input.name)
    except (OSError, ReplayInputError, ImportError) as exc:
        print(f"replay: {args.input}: {exc}", file=sys.stderr)
        return 2
    if args.summary:
        rows = series.values.size
        elapsed = time.perf_counter() - started
        print(
            f"{rows} rows, {result.flagged} flagged, {result.skipped_not_finite} not finite "
            f"and {result.skipped_out_of_order} out of order (not judged), {elapsed:.2f}s "
            f"({rows / max(elapsed, 1e-9):,.0f} rows/s) -> {args.output}"
        )
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from baselines.demo import run_demo

    return run_demo(settings, args.port, args.keep_serving)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="whyslow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    consume = sub.add_parser("consume", help="consume telemetry and forward anomalies")
    consume.add_argument(
        "--shard", type=int, help="read this shard's queue (behind `whyslow route`)"
    )
    route = sub.add_parser("route", help="split the ingest queue into shards by service")
    route.add_argument("--shards", type=int, required=True, help="how many shard consumers")
    replay = sub.add_parser("replay", help="backtest the detector on a timestamp,value CSV")
    replay.add_argument("--input", type=Path, required=True, help="CSV with a header row")
    replay.add_argument("--output", type=Path, required=True, help="where to write the scores")
    replay.add_argument(
        "--direction",
        choices=["high", "low", "both"],
        default="both",
        help="which deviations count (default both: a metric of unknown meaning)",
    )
    replay.add_argument("--summary", action="store_true", help="print rows, flags and time")
    replay.add_argument(
        "--plot", type=Path, help="also draw the series, its band and the flags to this PNG"
    )
    demo = sub.add_parser("demo", help="run service + consumer on a synthetic week with incidents")
    demo.add_argument(
        "--port", type=int, default=8000, help="the service's port (taken or 0: any free one)"
    )
    demo.add_argument(
        "--keep-serving",
        action="store_true",
        help="after the run, keep the service and its dashboard up until Ctrl-C",
    )
    return parser


COMMANDS = {"consume": _consume, "route": _route, "replay": _replay, "demo": _demo}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    if args.command == "demo":
        logging.getLogger().setLevel(logging.WARNING)
    settings = Settings()
    if getattr(args, "shard", None) is not None:
        settings = settings.model_copy(update={"shard": args.shard})
    return COMMANDS[args.command](args, settings)


def consume(argv: list[str]) -> int:
    """``whyslow consume``: the ``whyslow.commands`` entry points get the arguments after
    the command's name."""
    return main(["consume", *argv])


def route(argv: list[str]) -> int:
    """``whyslow route``."""
    return main(["route", *argv])


def replay(argv: list[str]) -> int:
    """``whyslow replay``."""
    return main(["replay", *argv])


def demo(argv: list[str]) -> int:
    """``whyslow demo``."""
    return main(["demo", *argv])
