"""The training configuration: axolotl's YAML keys, so a config moves between the two tools.

Each field carries its help text (as peft's config dataclasses do) and every check lives in
``TrainConfig.validate``: an invalid value is refused with its key named; an unknown key is
reported as a warning and ignored, as axolotl does with keys of its other features.
"""

from __future__ import annotations

import math
import reprlib
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

KNOWN_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


@dataclass
class DatasetSpec:
    path: str = field(metadata={"help": "Chat JSONL file, one {'messages': [...]} per line."})
    type: str = field(
        default="chat_template",
        metadata={"help": "Only 'chat_template': the base's own template formats the chat."},
    )


@dataclass
class TrainConfig:
    base_model: str = field(
        default="embedded",
        metadata={
            "help": "'embedded' (SmolLM2-135M-Instruct shipped with whyslow), a GGUF file, a "
            "transformers folder, or a hub name already in the local cache (no downloads)."
        },
    )
    load_in_8bit: bool = field(
        default=False, metadata={"help": "Load the frozen base in 8 bits (bitsandbytes, CUDA)."}
    )
    load_in_4bit: bool = field(
        default=False,
        metadata={"help": "Load the base in 4-bit NF4 with double quantisation (QLoRA, CUDA)."},
    )
    adapter: str = field(default="lora", metadata={"help": "'lora' or 'qlora' (4-bit base)."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank r."})
    lora_alpha: float = field(default=32, metadata={"help": "LoRA scale numerator: alpha / r."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        metadata={"help": f"Linear layers that get an adapter, among {', '.join(KNOWN_TARGETS)}."},
    )
    peft_use_rslora: bool = field(
        default=False, metadata={"help": "Scale by alpha / sqrt(r) instead of alpha / r."}
    )
    datasets: list[DatasetSpec] = field(
        default_factory=lambda: [DatasetSpec("training/data/training-data-combined.jsonl")],
        metadata={"help": "Training files (chat JSONL)."},
    )
    val_set_size: float = field(
        default=0.05,
        metadata={"help": "Held-out fraction (0..1) or count (>= 1) for the eval loss."},
    )
    num_epochs: int = field(default=3, metadata={"help": "Passes over the training split."})
    micro_batch_size: int = field(default=4, metadata={"help": "Samples per forward pass."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per optimiser step."}
    )
    learning_rate: float = field(default=8e-4, metadata={"help": "Peak AdamW learning rate."})
    warmup_steps: int = field(default=5, metadata={"help": "Linear warm-up steps."})
    lr_scheduler: str = field(default="cosine", metadata={"help": "'cosine' or 'constant'."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    sequence_len: int = field(
        default=1024, metadata={"help": "Longest tokenised sample; a longer one is refused."}
    )
    train_on_inputs: bool = field(
        default=False,
        metadata={"help": "Also learn the system and user turns (default: the answer only)."},
    )
    cause_loss_weight: float = field(
        default=5.0,
        metadata={
            "help": "whyslow: loss weight of the probable_cause value's tokens; the decision "
            "is a few tokens among ~150 and a tiny model learns it only when it weighs more."
        },
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations: less memory, ~20% slower."}
    )
    group_by_length: bool = field(
        default=False,
        metadata={
            "help": "Batch samples of similar length together, the batches in random order: "
            "less padding (11% of the shipped run's tokens without it)."
        },
    )
    bf16: str | bool = field(
        default="auto",
        metadata={
            "help": "bf16 compute ('auto': when the hardware has it). CUDA holds the base in "
            "bf16; a CPU keeps fp32 weights and runs the matmuls in bf16 autocast, ~1.8x "
            "faster on AVX512-BF16/AMX cores. False: fp32 throughout."
        },
    )
    seed: int = field(default=42, metadata={"help": "Seed of the split, init and shuffling."})
    output_dir: str = field(
        default="training/output/whyslow-smollm2", metadata={"help": "Where the adapter goes."}
    )

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> TrainConfig:
        known = {f.name for f in fields(cls)}
        for key in sorted(set(raw) - known, key=str):  # YAML keys may be ints, null, dates
            warnings.warn(f"{source}: unknown key {key!r} ignored", UserWarning, stacklevel=2)
        values = {key: value for key, value in raw.items() if key in known}
        if "datasets" in values:
            values["datasets"] = _datasets(values["datasets"])
        config = cls(**values)
        config.validate(source)
        return config

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text: {exc}") from exc
        except ValueError as exc:  # an integer past Python's 4300-digit limit
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        except RecursionError as exc:  # PyYAML composes nested collections recursively
            raise ConfigError(f"{path}: not valid YAML: nested too deeply") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of keys, got {type(raw).__name__}")
        return cls.from_dict(raw, str(path))

    def validate(self, source: str = "config") -> None:
        """Every rule in one place; the first broken one is raised with its key."""

        def need(ok: bool, key: str, why: str) -> None:
            if not ok:
                raise ConfigError(f"{source}: {key}={_short(getattr(self, key))}: {why}")

        def kind(key: str, types: tuple[type, ...]) -> None:
            value = getattr(self, key)
            ok = (
                isinstance(value, bool)
                if types == (bool,)
                else (isinstance(value, types) and not isinstance(value, bool))
            )
            need(ok, key, f"must be {' or '.join(t.__name__ for t in types)}")
            if float in types:  # YAML's .inf and .nan are floats: no rate or scale is
                need(not isinstance(value, float) or math.isfinite(value), key, "must be finite")

        for key in (
            "load_in_8bit",
            "load_in_4bit",
            "peft_use_rslora",
            "train_on_inputs",
            "gradient_checkpointing",
            "group_by_length",
        ):
            kind(key, (bool,))
        for key in (
            "lora_r",
            "num_epochs",
            "micro_batch_size",
            "gradient_accumulation_steps",
            "warmup_steps",
            "sequence_len",
            "seed",
        ):
            kind(key, (int,))
        for key in (
            "lora_alpha",
            "lora_dropout",
            "val_set_size",
            "learning_rate",
            "weight_decay",
            "cause_loss_weight",
        ):
            kind(key, (int, float))
        kind("base_model", (str,))
        kind("output_dir", (str,))
        need(self.adapter in ("lora", "qlora"), "adapter", "must be 'lora' or 'qlora'")
        need(
            not (self.load_in_8bit and self.load_in_4bit),
            "load_in_4bit",
            "load_in_8bit and load_in_4bit exclude each other",
        )
        need(
            self.adapter != "qlora" or self.load_in_4bit,
            "adapter",
            "qlora needs load_in_4bit: true",
        )
        need(self.lora_r >= 1, "lora_r", "must be >= 1")
        need(self.lora_alpha > 0, "lora_alpha", "must be > 0")
        need(0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)")
        need(
            isinstance(self.lora_target_modules, list) and bool(self.lora_target_modules),
            "lora_target_modules",
            "must be a non-empty list",
        )
        unknown = [m for m in self.lora_target_modules if m not in KNOWN_TARGETS]
        need(
            not unknown,
            "lora_target_modules",
            f"unknown modules {_short(unknown)}; known: {', '.join(KNOWN_TARGETS)}",
        )
        need(bool(self.datasets), "datasets", "needs at least one dataset")
        need(
            self.val_set_size >= 0
            and (
                self.val_set_size < 1
                or isinstance(self.val_set_size, int)
                or float(self.val_set_size).is_integer()
            ),
            "val_set_size",
            "a fraction in [0, 1) or a whole count",
        )
        for key in ("num_epochs", "micro_batch_size", "gradient_accumulation_steps"):
            need(getattr(self, key) >= 1, key, "must be >= 1")
        need(
            0 < self.learning_rate < 1 and math.isfinite(self.learning_rate),
            "learning_rate",
            "must be in (0, 1)",
        )
        need(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        need(
            self.lr_scheduler in ("cosine", "constant"),
            "lr_scheduler",
            "must be 'cosine' or 'constant'",
        )
        need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        need(64 <= self.sequence_len <= 131072, "sequence_len", "must be in [64, 131072]")
        need(self.cause_loss_weight >= 1, "cause_loss_weight", "must be >= 1")
        need(
            isinstance(self.bf16, bool) or self.bf16 == "auto",  # 1 == True: not `in`
            "bf16",
            "must be true, false or 'auto'",
        )

    @property
    def scale(self) -> float:
        """The LoRA scale applied to B·A."""
        return self.lora_alpha / (math.sqrt(self.lora_r) if self.peft_use_rslora else self.lora_r)


def _short(value: Any) -> str:
    """A bounded repr: YAML aliases can nest one value 9**9 times over (a billion laughs),
    and the whole repr of that would never finish."""
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 3, 80, 80
    short.maxlist = short.maxdict = short.maxtuple = short.maxset = 5
    return short.repr(value)


def _datasets(raw: Any) -> list[DatasetSpec]:
    if not isinstance(raw, list):
        raise ConfigError(f"datasets={_short(raw)}: must be a list of {{path, type}}")
    specs = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise ConfigError(f"datasets[{index}]={_short(item)}: needs a 'path'")
        kind = item.get("type", "chat_template")
        if kind != "chat_template":
            raise ConfigError(f"datasets[{index}].type={_short(kind)}: only 'chat_template'")
        specs.append(DatasetSpec(item["path"], kind))
    return specs
