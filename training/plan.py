"""What a LoRA run costs before it starts: trainable parameters, adapter size, memory.

Parameter counts are exact (they follow from the architecture: a LoRA on a d_in x d_out
layer adds r * (d_in + d_out) weights). Memory is an estimate: weights, gradients and AdamW
state are exact byte counts, activations follow the usual per-layer formula for a decoder
(Korthikanti et al., 2022) at the config's micro-batch and sequence length.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from training.config import TrainConfig

GIB = 1024**3


@dataclass(frozen=True)
class Architecture:
    """A Llama-family decoder's shape: all the planner needs."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each adapted linear layer of one block, by transformers name."""
        q_out, kv_out = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {
            "q_proj": (self.hidden, q_out),
            "k_proj": (self.hidden, kv_out),
            "v_proj": (self.hidden, kv_out),
            "o_proj": (q_out, self.hidden),
            "gate_proj": (self.hidden, self.intermediate),
            "up_proj": (self.hidden, self.intermediate),
            "down_proj": (self.intermediate, self.hidden),
        }

    @property
    def parameters(self) -> int:
        block = sum(i * o for i, o in self.linear_shapes().values()) + 2 * self.hidden
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.layers * block + embeddings + self.hidden

    @property
    def linear_parameters(self) -> int:
        return self.layers * sum(i * o for i, o in self.linear_shapes().values())


KNOWN = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": Architecture(
        "SmolLM2-135M-Instruct", 576, 1536, 30, 9, 3, 64, 49152, True
    ),
    "meta-llama/Llama-3.2-1B-Instruct": Architecture(
        "Llama-3.2-1B-Instruct", 2048, 8192, 16, 32, 8, 64, 128256, True
    ),
}
ALIASES = {"embedded": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def architecture_of(base: str) -> Architecture:
    """From a GGUF file, a transformers folder or a known name."""
    name = ALIASES.get(base, base)
    if name in KNOWN:
        return KNOWN[name]
    path = Path(base)
    if path.suffix == ".gguf" and path.is_file():
        return _from_gguf(path)
    if (path / "config.json").is_file():
        return _from_hf_config(path)
    known = ", ".join([*ALIASES, *KNOWN])
    raise ValueError(f"base {base!r}: not a GGUF file, a transformers folder or one of {known}")


def _from_gguf(path: Path) -> Architecture:
    import gguf  # the planner needs it only for GGUF bases

    reader = gguf.GGUFReader(str(path))
    arch = str(reader.fields["general.architecture"].contents())

    def meta(key: str) -> int:
        return int(reader.fields[f"{arch}.{key}"].contents())

    hidden, heads = meta("embedding_length"), meta("attention.head_count")
    tensors = {t.name for t in reader.tensors}
    name_field = reader.fields.get("general.name")
    return Architecture(
        name=str(name_field.contents()) if name_field else path.stem,
        hidden=hidden,
        intermediate=meta("feed_forward_length"),
        layers=meta("block_count"),
        heads=heads,
        kv_heads=meta("attention.head_count_kv"),
        head_dim=hidden // heads,
        vocab=len(reader.fields["tokenizer.ggml.tokens"].data),
        tied_embeddings="output.weight" not in tensors,
    )


def _from_hf_config(folder: Path) -> Architecture:
    config = json.loads((folder / "config.json").read_text())
    heads = config["num_attention_heads"]
    return Architecture(
        name=folder.name,
        hidden=config["hidden_size"],
        intermediate=config["intermediate_size"],
        layers=config["num_hidden_layers"],
        heads=heads,
        kv_heads=config.get("num_key_value_heads", heads),
        head_dim=config.get("head_dim") or config["hidden_size"] // heads,
        vocab=config["vocab_size"],
        tied_embeddings=config.get("tie_word_embeddings", False),
    )


@dataclass(frozen=True)
class Plan:
    arch: Architecture
    trainable: int
    adapter_bytes_fp32: int
    adapter_bytes_gguf_f16: int
    memory_gib: dict[str, float]

    @property
    def trainable_pct(self) -> float:
        """As peft prints it: trainable / (base + adapter)."""
        return 100 * self.trainable / (self.arch.parameters + self.trainable)


def plan(arch: Architecture, config: TrainConfig) -> Plan:
    shapes = arch.linear_shapes()
    trainable = arch.layers * sum(
        config.lora_r * sum(shapes[module]) for module in config.lora_target_modules
    )
    tokens = config.micro_batch_size * config.sequence_len
    # Per layer: ~34 values per token and hidden unit plus attention scores (16-bit);
    # the logits (and their gradient) in fp32 on top.
    per_layer = tokens * arch.hidden * 34 + 5 * config.micro_batch_size * arch.heads * (
        config.sequence_len**2
    )
    activations = arch.layers * per_layer + 2 * tokens * arch.vocab * 4
    if config.gradient_checkpointing:
        activations = arch.layers * tokens * arch.hidden * 2 + 2 * tokens * arch.vocab * 4
    params = arch.parameters
    other = params - arch.linear_parameters
    adam = 16  # fp32 weight + gradient + two AdamW moments, per trainable parameter
    memory = {
        "full fine-tune (fp32 AdamW)": params * adam + 2 * activations,
        "LoRA, fp32 base (CPU)": params * 4 + trainable * adam + 2 * activations,
        "LoRA, bf16 base (CUDA)": params * 2 + trainable * adam + activations,
        # NF4 with double quantisation: 4.127 bits per linear weight; the rest stays bf16.
        "QLoRA, 4-bit NF4 base": arch.linear_parameters * 4.127 / 8
        + other * 2
        + trainable * adam
        + activations,
    }
    return Plan(
        arch=arch,
        trainable=trainable,
        adapter_bytes_fp32=trainable * 4,
        adapter_bytes_gguf_f16=trainable * 2,
        memory_gib={key: value / GIB for key, value in memory.items()},
    )


def render(p: Plan, config: TrainConfig) -> str:
    a = p.arch
    lines = [
        f"base: {a.name} ({a.parameters:,} parameters; {a.layers} layers, hidden {a.hidden}, "
        f"{a.heads} heads / {a.kv_heads} kv, vocab {a.vocab})",
        f"LoRA: r={config.lora_r}, alpha={config.lora_alpha:g} on "
        f"{', '.join(config.lora_target_modules)}",
        f"trainable parameters: {p.trainable:,} ({p.trainable_pct:.2f}% of "
        f"{a.parameters + p.trainable:,})",
        f"adapter on disk: {p.adapter_bytes_fp32 / 1e6:.1f} MB (safetensors fp32), "
        f"{p.adapter_bytes_gguf_f16 / 1e6:.1f} MB (GGUF F16)",
        f"memory to train (estimate; micro-batch {config.micro_batch_size} x "
        f"{config.sequence_len} tokens):",
    ]
    lines += [f"  {key:<30} {gib:8.2f} GiB" for key, gib in p.memory_gib.items()]
    return "\n".join(lines)
