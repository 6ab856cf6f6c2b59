"""``python -m service`` (serve, model) and the ``whyslow`` console script.

``whyslow COMMAND`` runs the command's entry point in the ``whyslow.commands`` group
(pyproject.toml): the packages are named there, not imported here, so the service package
never imports ``training``, ``whyslow consume`` never loads the model's stack nor
``whyslow serve`` the training one, and ``whyslow --help`` imports no command at all.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
from importlib.metadata import EntryPoints, entry_points

from service.logs import configure_logging

COMMANDS_GROUP = "whyslow.commands"
"""The entry points of the ``whyslow`` subcommands: each is called with the arguments after
the command's name and returns the exit status."""

SUMMARIES = {
    "serve": "run the analysis API (uvicorn)",
    "model": "prepare the embedded model and print its path",
    "consume": "consume telemetry from RabbitMQ and forward anomalies",
    "route": "split the ingest queue into shards by service (scale-out)",
    "replay": "backtest the detector on a timestamp,value CSV",
    "demo": "run service + consumer on a synthetic week with two incidents",
    "train": "the training pipeline (dataset, LoRA, merge, GGUF, eval)",
}
"""The help line of each command, here so that ``whyslow --help`` imports none of them."""

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


def serve(argv: list[str]) -> int:
    """``whyslow serve``."""
    return main(["serve", *argv])


def model(argv: list[str]) -> int:
    """``whyslow model``."""
    return main(["model", *argv])


def usage(commands: EntryPoints) -> str:
    """The commands, each with its help line, in the order of ``SUMMARIES`` (installed
    entry points come back sorted by name); one without a help line comes last."""
    order = {name: i for i, name in enumerate(SUMMARIES)}
    names = sorted(commands.names, key=lambda name: (order.get(name, len(order)), name))
    width = max(len(name) for name in names) + 2
    lines = "\n".join(f"  {name:<{width}}{SUMMARIES.get(name, '')}".rstrip() for name in names)
    return (
        "usage: whyslow COMMAND [options]\n\n"
        f"commands:\n{lines}\n\n"
        "`whyslow COMMAND --help` for the options of one command."
    )


def dispatch(argv: list[str], commands: EntryPoints) -> int:
    """Run ``argv[0]``'s entry point with the arguments after it (its module is imported
    only now)."""
    if not commands:
        print(
            f"whyslow: no commands are registered (entry points {COMMANDS_GROUP!r}): the "
            "whyslow package is not installed; run `make install` (pip install -e .)",
            file=sys.stderr,
        )
        return 2
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(commands))
        return 0 if argv else 2
    if argv[0] not in commands.names:
        print(f"whyslow: unknown command {argv[0]!r}\n\n{usage(commands)}", file=sys.stderr)
        return 2
    run = commands[argv[0]].load()
    return run(argv[1:])


def whyslow(argv: list[str] | None = None) -> int:
    """The ``whyslow`` console script."""
    return dispatch(sys.argv[1:] if argv is None else argv, entry_points(group=COMMANDS_GROUP))
