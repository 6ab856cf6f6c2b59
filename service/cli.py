"""``python -m service`` / ``whyslow serve|model`` (the ``whyslow`` command: whyslow/cli.py)."""

from __future__ import annotations

import argparse
import ctypes
import os
import sys

from service.logs import configure_logging

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
