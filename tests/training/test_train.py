"""LoRA training on the real embedded base: what is learnt, what is written, reproducibly."""

from __future__ import annotations

import json
import random
from pathlib import Path
from unittest.mock import patch

import pytest
import torch
from safetensors.numpy import load_file
from transformers import AutoTokenizer

from service.model.embedded import shipped_gguf
from service.model.gguf_files import base_identity, read_manifest
from training.config import TrainConfig
from training.dataset.generator import generate
from training.dataset.samples import to_sample, write_jsonl
from training.train import (
    IGNORE,
    batches,
    collate,
    encode,
    load_model,
    shared_prefix,
    train,
    weighted_loss,
)


@pytest.fixture(scope="module")
def eight_samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "eight.jsonl"
    write_jsonl(path, [to_sample(s, "generated") for s in generate(8, seed=21)])
    return path


def _config(data: Path, out: Path, **extra: object) -> TrainConfig:
    return TrainConfig.from_dict(
        {
            "datasets": [{"path": str(data)}],
            "val_set_size": 2,
            "micro_batch_size": 2,
            "output_dir": str(out),
            "seed": 5,
            **extra,
        }
    )


def test_grouping_by_length_keeps_every_sample_once_and_pads_less() -> None:
    rng = random.Random(3)
    lengths = [rng.randint(300, 550) for _ in range(203)]

    def padding(cut: list[list[int]]) -> int:
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in cut)

    plain = batches(lengths, 4, random.Random(1), by_length=False)
    grouped = batches(lengths, 4, random.Random(1), by_length=True)
    for cut in (plain, grouped):
        assert sorted(i for b in cut for i in b) == list(range(len(lengths)))
        assert all(1 <= len(b) <= 4 for b in cut)
    assert padding(grouped) < padding(plain) / 3
    assert grouped == batches(lengths, 4, random.Random(1), by_length=True)  # seeded
    assert grouped != batches(lengths, 4, random.Random(2), by_length=True)


def test_loss_is_on_the_answer_only_with_the_cause_weighted(hf_base: Path, eight_samples) -> None:
    tokenizer = AutoTokenizer.from_pretrained(hf_base)
    row = json.loads(eight_samples.read_text().splitlines()[0])
    config = _config(eight_samples, Path("unused"))
    example = encode(tokenizer, row, config)
    learnt = tokenizer.decode(
        [t for t, label in zip(example.input_ids, example.labels, strict=True) if label != IGNORE]
    )
    answer = row["messages"][-1]["content"]
    assert learnt.startswith(answer) and learnt.removeprefix(answer).strip() == "<|im_end|>"
    cause = json.loads(answer)["probable_cause"]
    weighted = tokenizer.decode(
        [t for t, w in zip(example.input_ids, example.weights, strict=True) if w > 1]
    )
    assert weighted == cause
    everything = encode(tokenizer, row, _config(eight_samples, Path("u"), train_on_inputs=True))
    assert IGNORE not in everything.labels
    with pytest.raises(ValueError, match="exceeds sequence_len 64"):
        encode(tokenizer, row, _config(eight_samples, Path("u"), sequence_len=64))


@pytest.mark.slow
def test_two_steps_write_a_peft_adapter_and_manifest_reproducibly(
    hf_base: Path, eight_samples: Path, tmp_path: Path
) -> None:
    base = base_identity(shipped_gguf())
    runs = []
    for name in ("a", "b"):
        out = train(
            _config(eight_samples, tmp_path / name), hf_base, base, max_steps=2, progress=False
        )
        runs.append(out)
    first, second = (load_file(str(out / "adapter_model.safetensors")) for out in runs)
    assert first.keys() == second.keys() and len(first) == 30 * 4 * 2  # 30 layers, q/k/v/o, A+B
    assert all((first[k] == second[k]).all() for k in first), "same seed, same adapter"
    assert any(abs(v).max() > 0 for k, v in first.items() if "lora_B" in k), "B was trained"
    config = json.loads((runs[0] / "adapter_config.json").read_text())
    assert config["r"] == 16 and sorted(config["target_modules"]) == [
        "k_proj",
        "o_proj",
        "q_proj",
        "v_proj",
    ]
    manifest = read_manifest(runs[0] / "manifest.json")
    assert manifest.base == base
    assert manifest.metrics["steps"] == 2 and manifest.metrics["train_samples"] == 6
    assert manifest.metrics["eval_loss"] > 0
    assert manifest.seed == 5 and len(manifest.data_sha256) == 64


def test_the_shared_prompt_run_once_gives_the_whole_batch_loss_and_gradients(
    hf_base: Path, eight_samples: Path
) -> None:
    config = _config(eight_samples, Path("unused"), lora_dropout=0.0)
    model, tokenizer = load_model(config, hf_base)
    rows = [json.loads(line) for line in eight_samples.read_text().splitlines()[:3]]
    batch = collate([encode(tokenizer, row, config) for row in rows], tokenizer.eos_token_id)
    assert shared_prefix(batch["input_ids"]) > 80, "the system prompt is common to every row"
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the LoRA change the prompt's keys
            torch.nn.init.normal_(param, std=0.02)
    results = []
    for shared in (True, False):
        model.zero_grad()
        with patch("training.train.MIN_SHARED_PREFIX", 16 if shared else 10**6):
            loss = weighted_loss(model, batch)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss.item(), grads))
    (once, grads_once), (whole, grads_whole) = results
    assert once == pytest.approx(whole, rel=1e-4)
    assert grads_once.keys() == grads_whole.keys() and grads_once
    worst = max((grads_once[n] - grads_whole[n]).abs().max().item() for n in grads_once)
    scale = max(g.abs().max().item() for g in grads_whole.values())
    assert worst <= 1e-3 * scale, (worst, scale)
