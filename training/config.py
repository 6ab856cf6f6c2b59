"""The training configuration: axolotl's YAML keys, so a config moves between the two tools.

``TrainConfig`` is a pydantic model: each field carries its help text and its constraints,
and the rules between fields live in one validator. Values are strict (YAML's ``yes``, a
``1`` for a flag or ``"16"`` for a rank are refused, not coerced), and an invalid value is
refused as a ``ConfigError`` naming its key; an unknown key is reported as a warning and
ignored, as axolotl does with keys of its other features.
"""

from __future__ import annotations

import math
import reprlib
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

TargetModule = Literal["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
KNOWN_TARGETS: tuple[str, ...] = get_args(TargetModule)
ATTENTION_TARGETS: tuple[TargetModule, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


Number = int | float
"""Either, kept as written: YAML's ``32`` stays an int, ``.inf`` and ``.nan`` are refused
(``allow_inf_nan``), and a count larger than any float stays a count."""


def _fraction_or_count(value: Number) -> Number:
    """A held-out size is a fraction below 1 or a whole count (``10`` or ``10.0``)."""
    if value >= 1 and not (isinstance(value, int) or value.is_integer()):
        raise PydanticCustomError("fraction_or_count", "must be a fraction in [0, 1) or a count")
    return value


FractionOrCount = Annotated[Number, Field(ge=0), AfterValidator(_fraction_or_count)]

_STRICT = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")


class DatasetSpec(BaseModel):
    """One training file; axolotl's other dataset keys are ignored."""

    model_config = _STRICT

    path: str = Field(description="Chat JSONL file, one {'messages': [...]} per line.")
    type: Literal["chat_template"] = Field(
        "chat_template",
        description="Only 'chat_template': the base's own template formats the chat.",
    )


class TrainConfig(BaseModel):
    """One training run, as axolotl's keys name it; ``from_dict`` and ``load`` refuse a bad
    value with a ``ConfigError`` naming its key."""

    model_config = _STRICT

    base_model: str = Field(
        "embedded",
        description="'embedded' (SmolLM2-135M-Instruct shipped with whyslow), a GGUF file, a "
        "transformers folder, or a hub name already in the local cache (no downloads).",
    )
    load_in_8bit: bool = Field(
        False, description="Load the frozen base in 8 bits (bitsandbytes, CUDA)."
    )
    load_in_4bit: bool = Field(
        False, description="Load the base in 4-bit NF4 with double quantisation (QLoRA, CUDA)."
    )
    adapter: Literal["lora", "qlora"] = Field("lora", description="'lora' or 'qlora' (4-bit base).")
    lora_r: int = Field(16, ge=1, description="LoRA rank r.")
    lora_alpha: Number = Field(32, gt=0, description="LoRA scale numerator: alpha / r.")
    lora_dropout: Number = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    lora_target_modules: list[TargetModule] = Field(
        default_factory=lambda: list(ATTENTION_TARGETS),
        min_length=1,
        description=f"Linear layers that get an adapter, among {', '.join(KNOWN_TARGETS)}.",
    )
    peft_use_rslora: bool = Field(
        False, description="Scale by alpha / sqrt(r) instead of alpha / r."
    )
    datasets: list[DatasetSpec] = Field(
        default_factory=lambda: [DatasetSpec(path="training/data/training-data-combined.jsonl")],
        min_length=1,
        description="Training files (chat JSONL).",
    )
    val_set_size: FractionOrCount = Field(
        0.05, description="Held-out fraction (0..1) or count (>= 1) for the eval loss."
    )
    num_epochs: int = Field(3, ge=1, description="Passes over the training split.")
    micro_batch_size: int = Field(4, ge=1, description="Samples per forward pass.")
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="Micro-batches per optimiser step."
    )
    learning_rate: Number = Field(8e-4, gt=0, lt=1, description="Peak AdamW learning rate.")
    warmup_steps: int = Field(5, ge=0, description="Linear warm-up steps.")
    lr_scheduler: Literal["cosine", "constant"] = Field(
        "cosine", description="'cosine' or 'constant'."
    )
    weight_decay: Number = Field(0.0, ge=0, description="AdamW weight decay.")
    sequence_len: int = Field(
        1024,
        ge=64,
        le=131072,
        description="Longest tokenised sample; a longer one is refused.",
    )
    train_on_inputs: bool = Field(
        False, description="Also learn the system and user turns (default: the answer only)."
    )
    cause_loss_weight: Number = Field(
        5.0,
        ge=1,
        description="whyslow: loss weight of the probable_cause value's tokens; the decision "
        "is a few tokens among ~150 and a tiny model learns it only when it weighs more.",
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations: less memory, ~20% slower."
    )
    group_by_length: bool = Field(
        False,
        description="Batch samples of similar length together, the batches in random order: "
        "less padding (11% of the shipped run's tokens without it).",
    )
    bf16: bool | Literal["auto"] = Field(
        "auto",
        description="bf16 compute ('auto': when the hardware has it). CUDA holds the base in "
        "bf16; a CPU keeps fp32 weights and runs the matmuls in bf16 autocast, ~1.8x "
        "faster on AVX512-BF16/AMX cores. False: fp32 throughout.",
    )
    seed: int = Field(42, description="Seed of the split, init and shuffling.")
    output_dir: str = Field(
        "training/output/whyslow-smollm2", description="Where the adapter goes."
    )

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        """The rules between fields, each naming the key to change."""
        if self.load_in_8bit and self.load_in_4bit:
            raise PydanticCustomError(
                "conflict", "load_in_4bit=True: load_in_8bit and load_in_4bit exclude each other"
            )
        if self.adapter == "qlora" and not self.load_in_4bit:
            raise PydanticCustomError("conflict", "adapter='qlora': qlora needs load_in_4bit: true")
        return self

    @classmethod
    def from_dict(cls, raw: dict[Any, Any], source: str = "config") -> TrainConfig:
        """A config from a YAML mapping; unknown keys are warned about and ignored."""
        known = cls.model_fields
        for key in sorted(set(raw) - set(known), key=str):  # YAML keys may be ints, null, dates
            warnings.warn(f"{source}: unknown key {key!r} ignored", UserWarning, stacklevel=2)
        values = {key: value for key, value in raw.items() if key in known}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(f"{source}: {_reasons(exc)}") from None

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

    @property
    def scale(self) -> float:
        """The LoRA scale applied to B·A."""
        return self.lora_alpha / (math.sqrt(self.lora_r) if self.peft_use_rslora else self.lora_r)


_FIELD_NAMES = frozenset({*TrainConfig.model_fields, *DatasetSpec.model_fields})
_SHOULD = "Input should be "


def _reasons(exc: ValidationError) -> str:
    """One ``key=value: why`` per wrong key, as ``datasets[0].type`` for a nested one.

    pydantic reports a value that fits no member of a union (``int | float``, ``bool |
    'auto'``) once per member, under the member's name: those become one reason per key."""
    reasons: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False):
        key = ""
        for part in error["loc"]:
            if isinstance(part, int):
                key += f"[{part}]"
            elif part in _FIELD_NAMES:
                key += f".{part}" if key else str(part)
        if not key:  # a rule between fields: its message names the key
            reasons.setdefault(error["msg"], [])
            continue
        if error["type"] != "missing":
            key = f"{key}={_short(error['input'])}"
        reasons.setdefault(key, []).append(error["msg"])
    parts = []
    for key, messages in reasons.items():
        if len(messages) > 1 and all(m.startswith(_SHOULD) for m in messages):
            messages = [_SHOULD + " or ".join(dict.fromkeys(m[len(_SHOULD) :] for m in messages))]
        parts.append(f"{key}: {'; '.join(messages)}" if messages else key)
    return "; ".join(parts)


def _short(value: Any) -> str:
    """A bounded repr: YAML aliases can nest one value 9**9 times over (a billion laughs),
    and the whole repr of that would never finish."""
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 3, 80, 80
    short.maxlist = short.maxdict = short.maxtuple = short.maxset = 5
    return short.repr(value)
