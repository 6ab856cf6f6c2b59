"""Training step time of the shipped recipe against fp32, and against the whole batch run
without sharing its common prompt prefix, same run.

    .venv/bin/python tests/bench/train_step_speed.py [--steps 5]

Each mode runs ``--steps`` optimiser steps of batch 4 on the first samples of the training
file (the same batches for both), through ``training.train``'s own loss; the first step of
each mode is a warm-up and not counted. Needs the training extra.

The modes: fp32 with every row computed whole; bf16 autocast, rows whole; bf16 autocast with the
batch's common prefix (the system prompt) computed once, as ``training.train`` does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from unittest.mock import patch

import torch

from training.base import hf_folder
from training.cli import HF_CACHE, _base_gguf
from training.config import TrainConfig
from training.dataset.samples import read_jsonl
from training.train import collate, compute_precision, encode, load_model, weighted_loss

CONFIG = Path("training/configs/axolotl-config.yaml")


def step_times(config: TrainConfig, folder: Path, rows: list[dict], steps: int) -> list[float]:
    torch.manual_seed(config.seed)
    model, tokenizer = load_model(config, folder)
    examples = [encode(tokenizer, row, config) for row in rows]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for step in range(steps + 1):
        batch = collate(examples[4 * step : 4 * step + 4], tokenizer.eos_token_id)
        started = time.perf_counter()
        with compute_precision(config):
            loss = weighted_loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - started)
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    config = TrainConfig.load(CONFIG)
    folder = hf_folder(_base_gguf("embedded"), HF_CACHE)
    rows = read_jsonl(Path(config.datasets[0].path))[: 4 * (args.steps + 1)]
    torch.set_num_threads(os.cpu_count() or 1)  # as training.train does
    bf16 = config.model_copy(update={"bf16": True})
    with patch("training.train.MIN_SHARED_PREFIX", 10**9):
        fp32 = step_times(config.model_copy(update={"bf16": False}), folder, rows, args.steps)
        whole = step_times(bf16, folder, rows, args.steps)
    shared = step_times(bf16, folder, rows, args.steps)
    modes = {"fp32, rows whole": fp32, "bf16, rows whole": whole, "bf16, prefix once": shared}
    for name, times in modes.items():
        print(
            f"{name}: median {statistics.median(times):.2f} s/step {[round(t, 2) for t in times]}"
        )
    one = statistics.median(shared)
    print(
        f"the shipped recipe (bf16, prefix once) is {statistics.median(fp32) / one:.2f}x "
        f"faster than fp32 and {statistics.median(whole) / one:.2f}x faster than bf16 with "
        f"rows whole (native bf16 here: {torch.ops.mkldnn._is_mkldnn_bf16_supported()})"
    )


if __name__ == "__main__":
    main()
