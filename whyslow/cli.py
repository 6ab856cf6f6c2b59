"""``whyslow COMMAND``: each command is run by the CLI of the package that owns it.

The packages are named, not imported: a command imports only its own package when it is
run, so ``whyslow consume`` never loads the model's stack nor ``whyslow serve`` the
training one, and ``whyslow --help`` imports none of them.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    name: str
    module: str
    """The package CLI that runs it: a module with ``main(argv) -> int``."""
    summary: str
    own_parser: bool = False
    """The module's parser is the command's alone (it gets the arguments after the
    command); otherwise the module parses the command name among its siblings'."""


COMMANDS = (
    Command("serve", "service.cli", "run the analysis API (uvicorn)"),
    Command("model", "service.cli", "prepare the embedded model and print its path"),
    Command("consume", "baselines.cli", "consume telemetry from RabbitMQ and forward anomalies"),
    Command("route", "baselines.cli", "split the ingest queue into shards by service (scale-out)"),
    Command("replay", "baselines.cli", "backtest the detector on a timestamp,value CSV"),
    Command(
        "demo", "baselines.cli", "run service + consumer on a synthetic week with two incidents"
    ),
    Command(
        "train",
        "training.cli",
        "the training pipeline (dataset, LoRA, merge, GGUF, eval)",
        own_parser=True,
    ),
)


def usage() -> str:
    width = max(len(c.name) for c in COMMANDS) + 2
    lines = "\n".join(f"  {c.name:<{width}}{c.summary}" for c in COMMANDS)
    return (
        "usage: whyslow COMMAND [options]\n\n"
        f"commands:\n{lines}\n\n"
        "`whyslow COMMAND --help` for the options of one command."
    )


def whyslow(argv: list[str] | None = None) -> int:
    """Dispatch a subcommand to the package that owns it (imported only when asked for)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command = next((c for c in COMMANDS if c.name == argv[0]), None)
    if command is None:
        print(f"whyslow: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    main = importlib.import_module(command.module).main
    return main(argv[1:] if command.own_parser else argv)
