"""``python -m training`` / ``whyslow train``: the planned commands of the pipeline.

None is implemented yet (issue: training pipeline); each says so and exits non-zero rather
than pretending to work.
"""

from __future__ import annotations

import argparse
import sys

PLANNED = {
    "data": "generate and check the chat-format dataset",
    "plan": "print the cost of a LoRA run: trainable parameters, adapter size, memory",
    "train": "LoRA fine-tune a base model (peft + transformers)",
    "merge": "merge the adapter into the base and write a GGUF",
    "quantize": "quantise a GGUF (Q8_0, Q4_K_M, ...)",
    "export-adapter": "write the adapter as a GGUF LoRA for runtime swap",
    "eval": "score base vs tuned vs rules on held-out and hand-written cases",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="whyslow train", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in PLANNED.items():
        sub.add_parser(name, help=f"{text} (not implemented yet)")
    args, _ = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    print(f"whyslow train {args.command}: not implemented yet", file=sys.stderr)
    return 2
