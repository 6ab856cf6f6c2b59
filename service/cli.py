"""``python -m service`` and the ``whyslow`` console script."""

from __future__ import annotations

import argparse
import ctypes
import importlib
import os
import sys

from service.logs import configure_logging

USAGE = """usage: whyslow COMMAND [options]

commands:
  serve     run the analysis API (uvicorn)
  model     prepare the embedded model and print its path
  consume   consume telemetry from RabbitMQ and forward anomalies
  route     split the ingest queue into shards by service (scale-out)
  replay    backtest the detector on a timestamp,value CSV
  demo      run service + consumer on a synthetic week with two incidents
  train     the training pipeline (dataset, LoRA, merge, GGUF, eval)

`whyslow COMMAND --help` for the options of one command."""

ELSEWHERE = dict.fromkeys(("consume", "route", "replay", "demo"), "baselines.cli")


M_ARENA_MAX = -8


def cap_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives threads that allocate at once heap arenas of their own (up to 8 per
    core) and seldom returns their pages: under concurrent requests the service's RSS
    climbed from 310 to 498 MB before levelling off; with two arenas it stays at about
    387 MB (tests/test_load.py). A MALLOC_ARENA_MAX in the environment is left to glibc."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    libc.mallopt(M_ARENA_MAX, arenas)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.catalogue import CatalogueError
    from service.main import create_app
    from service.tracing import configure_tracing

    configure_tracing("whyslow-service")
    cap_malloc_arenas()  # before uvicorn starts its threads
    try:
        app = create_app()
    except CatalogueError as exc:
        print(f"whyslow serve: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def _model(args: argparse.Namespace) -> int:
    from service.model.embedded import ModelUnavailable
    from service.model.loader import ModelLoader
    from service.settings import Settings

    try:
        print(ModelLoader(Settings()).model_path())
    except ModelUnavailable as exc:
        print(f"whyslow model: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="whyslow", description="The whyslow service.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the analysis API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    sub.add_parser("model", help="prepare the embedded model and print its path")
    args = parser.parse_args(argv)
    configure_logging()
    return {"serve": _serve, "model": _model}[args.command](args)


def whyslow(argv: list[str] | None = None) -> int:
    """Dispatch a subcommand to the package that owns it (imported only when asked for)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command = argv[0]
    if command == "train":
        return importlib.import_module("training.cli").main(argv[1:])
    if command in ELSEWHERE:
        return importlib.import_module(ELSEWHERE[command]).main(argv)
    if command in ("serve", "model"):
        return main(argv)
    print(f"whyslow: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2
