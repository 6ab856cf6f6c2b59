"""LoRA fine-tuning with peft on transformers: a small, explicit training loop.

The loss is computed on the assistant turn only (unless ``train_on_inputs``), with the
``probable_cause`` value's tokens weighted ``cause_loss_weight`` times: the decision is a
handful of tokens in a ~150-token answer, and a 135M model learns it only when it weighs
more (NOTES: 20/24 -> 24/24). A CPU keeps fp32 weights, with bf16 autocast where it has
native bf16; CUDA runs in bf16, or with an 8-bit or 4-bit NF4 (double-quantised) frozen base
through bitsandbytes. Logits are computed only where there is a label: the vocabulary
projection of the ~300 prompt positions would be a fifth of the step for nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from service.contract import Diagnosis
from service.model.gguf_files import AdapterManifest, BaseIdentity
from service.prompt import SYSTEM_PROMPT
from training.config import TrainConfig
from training.dataset.samples import fingerprint, read_jsonl, split

IGNORE = -100
MIN_SHARED_PREFIX = 16
"""A shorter common prefix is not worth a pass of its own."""
LENGTH_GROUP = 16
"""Batches sorted together by ``group_by_length``: enough for like lengths to meet, few
enough that a batch still mixes causes and patterns from across the shuffle."""


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]
    weights: list[float]


def schema_version() -> str:
    """What an adapter was trained to answer: the Diagnosis schema and the system prompt."""
    schema = json.dumps(Diagnosis.model_json_schema(), sort_keys=True)
    return hashlib.sha256((schema + SYSTEM_PROMPT).encode()).hexdigest()[:16]


def encode(tokenizer: Any, sample: dict[str, Any], config: TrainConfig) -> Example:
    """Token ids of the chat as the base's template writes it, labels on the answer only,
    and the extra weight on the cause value's tokens."""
    messages = sample["messages"]
    prompt = tokenizer.apply_chat_template(
        messages[:-1], tokenize=False, add_generation_prompt=True
    )
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("the chat template does not extend the prompt with the answer")
    answer = messages[-1]["content"]
    answer_at = full.index(answer, len(prompt))
    cause = json.loads(answer).get("probable_cause", "")
    cause_at = full.index(f'"{cause}"', answer_at) + 1 if cause else -1
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    if len(ids) > config.sequence_len:
        raise ValueError(f"sample of {len(ids)} tokens exceeds sequence_len {config.sequence_len}")
    labels, weights = [], []
    for token, (start, end) in zip(ids, offsets, strict=True):
        learnt = config.train_on_inputs or start >= len(prompt)
        labels.append(token if learnt else IGNORE)
        in_cause = cause_at >= 0 and start < cause_at + len(cause) and end > cause_at
        weights.append(config.cause_loss_weight if in_cause else 1.0)
    return Example(ids, labels, weights)


def collate(batch: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in batch)

    def pad(rows: list[list], value: float | int, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor([row + [value] * (width - len(row)) for row in rows], dtype=dtype)

    return {
        "input_ids": pad([e.input_ids for e in batch], pad_id, torch.long),
        "attention_mask": pad([[1] * len(e.input_ids) for e in batch], 0, torch.long),
        "labels": pad([e.labels for e in batch], IGNORE, torch.long),
        "weights": pad([e.weights for e in batch], 0.0, torch.float32),
    }


def batches(lengths: list[int], size: int, rng: random.Random, by_length: bool) -> list[list[int]]:
    """An epoch's batches of sample indices, shuffled. ``by_length`` (HF's and axolotl's
    ``group_by_length``): each run of ``LENGTH_GROUP`` batches of the shuffle is sorted by
    length before it is cut, so a batch pads less, and the batches are shuffled again."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if by_length:
        span = size * LENGTH_GROUP
        order = [
            i
            for start in range(0, len(order), span)
            for i in sorted(order[start : start + span], key=lengths.__getitem__)
        ]
    cut = [order[start : start + size] for start in range(0, len(order), size)]
    if by_length:
        rng.shuffle(cut)
    return cut


def shared_prefix(input_ids: torch.Tensor) -> int:
    """How many leading tokens every row of the batch has in common."""
    same = (input_ids == input_ids[:1]).all(dim=0)
    return int(same.long().cumprod(dim=0).sum())


def hidden_states(decoder: Any, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The decoder's last hidden states, the batch's common prefix computed once.

    Every sample starts with the same system prompt, about a third of its tokens; it is run
    once (with gradients: the LoRA changes its keys and values) and its KV cache expanded
    to the batch, as generation reuses a prompt. Same values as the whole batch at once.
    """
    from transformers import DynamicCache

    rows, shared = input_ids.shape[0], min(shared_prefix(input_ids), input_ids.shape[1] - 1)
    if rows > 1 and shared >= MIN_SHARED_PREFIX:
        prefix = decoder(input_ids=input_ids[:1, :shared], use_cache=True)
        if prefix.cache is not None:  # gradient checkpointing turns the cache off
            cache = DynamicCache(
                [
                    (k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1))
                    for k, v, *_ in prefix.cache
                ]
            )
            rest = decoder(
                input_ids=input_ids[:, shared:], attention_mask=mask, cache=cache, use_cache=True
            )
            first = prefix.last_hidden_state.expand(rows, -1, -1)
            return torch.cat([first, rest.last_hidden_state], dim=1)
    return decoder(input_ids=input_ids, attention_mask=mask).last_hidden_state


def weighted_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Next-token cross-entropy over the labelled tokens, each scaled by its weight."""
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    causal_lm = model.get_base_model()
    hidden = hidden_states(causal_lm.get_decoder(), batch["input_ids"], batch["attention_mask"])
    hidden = hidden[:, :-1]
    labels, weights = batch["labels"][:, 1:], batch["weights"][:, 1:]
    learnt = labels != IGNORE
    logits = causal_lm.get_output_embeddings()(hidden[learnt]).float()
    losses = torch.nn.functional.cross_entropy(logits, labels[learnt], reduction="none")
    weights = weights[learnt]
    return (losses * weights).sum() / weights.sum().clamp(min=1.0)


def compute_precision(config: TrainConfig) -> contextlib.AbstractContextManager:
    """bf16 autocast on a CPU with native bf16 (config ``bf16``); CUDA's bf16 is the
    weights' dtype (``load_model``), so there and elsewhere this changes nothing."""
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    wanted = config.bf16 is True or (config.bf16 == "auto" and native)
    cpu = not torch.cuda.is_available()
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu and wanted)


def load_model(config: TrainConfig, folder: Path) -> tuple[Any, Any]:
    """(model with its LoRA, tokenizer) on CUDA when there is one, else CPU fp32."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    if (config.load_in_8bit or config.load_in_4bit) and not cuda:
        raise RuntimeError("load_in_8bit / load_in_4bit need a CUDA GPU (bitsandbytes)")
    bf16 = cuda and (
        config.bf16 is True or (config.bf16 == "auto" and torch.cuda.is_bf16_supported())
    )
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if bf16 else torch.float32}
    if config.load_in_8bit or config.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_8bit=config.load_in_8bit,
            load_in_4bit=config.load_in_4bit,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if bf16 else torch.float32,
        )
        kwargs["device_map"] = {"": 0}
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    if "quantization_config" in kwargs:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing
        )
    elif cuda:
        model = model.to("cuda")  # type: ignore[arg-type]  # functools.wraps hides the bound self
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,  # type: ignore[arg-type]  # peft says int; alpha / r takes a float
        lora_dropout=config.lora_dropout,
        target_modules=list[str](config.lora_target_modules),
        use_rslora=config.peft_use_rslora,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora), tokenizer


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def evaluate_loss(model: Any, examples: list[Example], config: TrainConfig, pad: int) -> float:
    if not examples:
        return math.nan
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), config.micro_batch_size):
            batch = examples[start : start + config.micro_batch_size]
            with compute_precision(config):
                loss = weighted_loss(model, collate(batch, pad))
            total += loss.item() * len(batch)
            count += len(batch)
    model.train()
    return total / count


def train(
    config: TrainConfig,
    base_folder: Path,
    base: BaseIdentity,
    max_steps: int | None = None,
    progress: bool = True,
) -> Path:
    """Train and write the PEFT adapter plus ``manifest.json`` to ``config.output_dir``."""
    seed_everything(config.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    rows = [row for spec in config.datasets for row in read_jsonl(Path(spec.path))]
    train_rows, val_rows = split(rows, config.val_set_size, config.seed)
    model, tokenizer = load_model(config, base_folder)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    train_set = [encode(tokenizer, row, config) for row in train_rows]
    val_set = [encode(tokenizer, row, config) for row in val_rows]
    lengths = [len(example.input_ids) for example in train_set]
    per_epoch = math.ceil(len(train_set) / config.micro_batch_size)
    steps = math.ceil(per_epoch * config.num_epochs / config.gradient_accumulation_steps)
    if max_steps is not None:
        steps = min(steps, max_steps)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    scheduler = (
        get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, steps)
        if config.lr_scheduler == "cosine"
        else get_constant_schedule_with_warmup(optimizer, config.warmup_steps)
    )
    order = random.Random(config.seed)
    history: list[dict[str, float]] = []
    step, micro, started = 0, 0, time.monotonic()
    bar = tqdm(total=steps, desc="train", unit="step", disable=not progress)
    model.train()
    for epoch in range(1, config.num_epochs + 1):
        losses = []
        for chosen in batches(lengths, config.micro_batch_size, order, config.group_by_length):
            batch = [train_set[i] for i in chosen]
            with compute_precision(config):
                loss = weighted_loss(model, collate(batch, pad))
            (loss / config.gradient_accumulation_steps).backward()
            losses.append(loss.item())
            micro += 1
            if micro % config.gradient_accumulation_steps == 0:
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                step += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}")
                if step >= steps:
                    break
        eval_loss = evaluate_loss(model, val_set, config, pad)
        history.append(
            {
                "epoch": epoch,
                "train_loss": sum(losses) / max(len(losses), 1),
                "eval_loss": eval_loss,
            }
        )
        bar.write(
            f"epoch {epoch}: train loss {history[-1]['train_loss']:.4f}, eval loss {eval_loss:.4f}"
        )
        if step >= steps:
            break
    bar.close()
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    manifest = AdapterManifest(
        name=output.name,
        base=base,
        lora={
            "r": config.lora_r,
            "alpha": config.lora_alpha,
            "dropout": config.lora_dropout,
            "target_modules": config.lora_target_modules,
            "rslora": config.peft_use_rslora,
        },
        schema_version=schema_version(),
        data_sha256=fingerprint(rows),
        seed=config.seed,
        metrics={
            "steps": step,
            "train_seconds": round(time.monotonic() - started, 1),
            "train_samples": len(train_set),
            "val_samples": len(val_set),
            "train_loss": history[-1]["train_loss"] if history else math.nan,
            "eval_loss": history[-1]["eval_loss"] if history else math.nan,
        },
        created=datetime.now(UTC),
    )
    (output / "manifest.json").write_text(manifest.model_dump_json(indent=2) + "\n")
    (output / "training-config.json").write_text(json.dumps(config.model_dump(), indent=2) + "\n")
    return output
