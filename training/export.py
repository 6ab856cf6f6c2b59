"""From a trained PEFT LoRA to what llama.cpp and Ollama load: a GGUF LoRA adapter for runtime
swap, and an Ollama ``Modelfile`` for a merged GGUF.

llama.cpp's own converter (convert_lora_to_gguf.py) needs the HF base checkpoint and the
llama.cpp source tree; this needs only the base GGUF, which is what is deployed. The format
(NOTES-model-pipeline.md, "LoRA adapters as GGUF"): ``blk.N.<tensor>.weight.lora_a`` [r, in]
and ``.lora_b`` [out, r], general.type "adapter", adapter.type "lora", adapter.lora.alpha.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import gguf
import numpy as np
from safetensors.torch import load_file

HF_TO_GGUF: Mapping[str, str] = MappingProxyType(
    {
        "q_proj": "attn_q",
        "k_proj": "attn_k",
        "v_proj": "attn_v",
        "o_proj": "attn_output",
        "gate_proj": "ffn_gate",
        "up_proj": "ffn_up",
        "down_proj": "ffn_down",
    }
)
"""Module names peft targets in a Llama-family model -> llama.cpp tensor names (read only)."""

PEFT_KEY = re.compile(
    r"base_model\.model\.model\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight"
)

END_TOKENS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "chatml": ("<|im_start|>", "<|im_end|>"),
        "llama3": ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    }
)

TEMPLATES: Mapping[str, str] = MappingProxyType(
    {
        # Ollama's Go templates; .Messages includes the Modelfile's SYSTEM as a system message.
        "chatml": (
            "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
            "{{ .Content }}<|im_end|>\n"
            "{{ end }}<|im_start|>assistant\n"
        ),
        "llama3": (
            "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
            "{{ .Content }}<|eot_id|>\n"
            "{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
        ),
    }
)


def _rotary_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's row order for a q or k projection (transformers undoes it on load), so a
    lora_b computed in HF layout must be permuted the same way to land on the right rows."""
    rows, cols = w.shape
    return w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def _field(reader: gguf.GGUFReader, key: str) -> object:
    field = reader.get_field(key)
    return None if field is None else field.contents()


def _count(reader: gguf.GGUFReader, key: str) -> int:
    value = _field(reader, key)
    if not isinstance(value, int):
        raise ValueError(f"the base has no count {key} (got {value!r})")
    return value


def _lora_scale_alpha(config: dict[str, Any]) -> tuple[int, float]:
    """(r, alpha as llama.cpp must read it). llama.cpp scales by alpha / r; rsLoRA scales
    by alpha / sqrt(r), which is the same as an alpha of alpha * sqrt(r)."""
    r, alpha = int(config["r"]), float(config["lora_alpha"])
    return r, alpha * math.sqrt(r) if config.get("use_rslora") else alpha


def _refusals(config: dict[str, Any]) -> list[str]:
    """What in a LoraConfig this exporter cannot express as a llama.cpp LoRA."""
    faults = []
    targets = config.get("target_modules") or []
    if isinstance(targets, str):
        targets = []  # a regex: the tensors themselves are checked below
    unmappable = sorted(set(targets) - set(HF_TO_GGUF))
    if unmappable:
        faults.append(f"target modules {unmappable} have no llama.cpp LoRA tensor")
    if config.get("modules_to_save"):
        faults.append(f"modules_to_save {config['modules_to_save']} are full weights, not LoRA")
    if config.get("use_dora"):
        faults.append("DoRA (use_dora) is not a plain LoRA")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        faults.append("per-module rank_pattern/alpha_pattern: llama.cpp takes one alpha")
    if config.get("lora_bias") or config.get("bias", "none") != "none":
        faults.append("trained biases: a llama.cpp LoRA has only lora_a and lora_b")
    if config.get("trainable_token_indices") or config.get("layer_replication"):
        faults.append("trainable tokens or layer replication change more than LoRA weights")
    if config.get("fan_in_fan_out"):
        faults.append("fan_in_fan_out (Conv1D weights) is not a Llama layout")
    return faults


def peft_to_gguf_adapter(
    adapter_dir: Path,
    base_gguf: Path,
    out_path: Path,
    out_type: Literal["F16", "F32"] = "F16",
) -> Path:
    """Write the PEFT LoRA in ``adapter_dir`` (adapter_config.json and
    adapter_model.safetensors) as a llama.cpp GGUF LoRA adapter for ``base_gguf``.

    The lora_b of q and k is permuted like llama.cpp permutes those weights (head_count rows
    for q, head_count_kv for k); rsLoRA is folded into alpha. A config or tensor this cannot
    map (``lm_head``, ``embed_tokens``, DoRA, ...) is refused, naming it, rather than
    silently dropped; so is one whose shapes do not fit the base.
    """
    if out_type not in ("F16", "F32"):
        raise ValueError(f"adapter tensors are written as F16 or F32, not {out_type!r}")
    adapter_dir, base_gguf, out_path = Path(adapter_dir), Path(base_gguf), Path(out_path)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{adapter_dir} is a {config['peft_type']} adapter, not a LoRA")
    if faults := _refusals(config):
        raise ValueError(f"cannot export {adapter_dir}: " + "; ".join(faults))
    r, alpha = _lora_scale_alpha(config)

    base = gguf.GGUFReader(str(base_gguf))
    arch = _field(base, gguf.Keys.General.ARCHITECTURE)
    if not isinstance(arch, str):
        raise ValueError(f"{base_gguf} has no general.architecture")
    heads = {
        "attn_q": _count(base, f"{arch}.attention.head_count"),
        "attn_k": _count(base, f"{arch}.attention.head_count_kv"),
    }
    shapes = {t.name: tuple(reversed(t.shape.tolist())) for t in base.tensors}

    pairs: dict[str, dict[str, np.ndarray]] = {}
    unmapped = []
    for key, value in load_file(str(adapter_dir / "adapter_model.safetensors")).items():
        match = PEFT_KEY.fullmatch(key)
        if match is None or match[2] not in HF_TO_GGUF:
            unmapped.append(key)
            continue
        layer, module, half = match.groups()
        pairs.setdefault(f"blk.{layer}.{HF_TO_GGUF[module]}.weight", {})[half] = (
            value.float().numpy()
        )
    if unmapped:
        raise ValueError(f"cannot export {adapter_dir}: no llama.cpp tensor for {unmapped}")

    dtype = np.float16 if out_type == "F16" else np.float32
    partial = out_path.with_name(f"{out_path.name}.{os.getpid()}.partial")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(partial), arch)
    try:
        writer.add_string(gguf.Keys.General.TYPE, "adapter")
        writer.add_string("adapter.type", "lora")
        writer.add_float32("adapter.lora.alpha", alpha)
        if name := _field(base, gguf.Keys.General.NAME):
            writer.add_string(gguf.Keys.General.NAME, f"{name} LoRA {adapter_dir.name}")
        for name, pair in sorted(pairs.items(), key=lambda item: _order(item[0])):
            if set(pair) != {"A", "B"}:
                raise ValueError(f"{adapter_dir}: {name} has only lora_{''.join(pair)}")
            a, b = pair["A"], pair["B"]
            if name not in shapes or shapes[name] != (b.shape[0], a.shape[1]):
                raise ValueError(
                    f"{adapter_dir} does not fit {base_gguf}: {name} would be "
                    f"{(b.shape[0], a.shape[1])}, the base has {shapes.get(name, 'no such tensor')}"
                )
            if a.shape[0] != r:
                raise ValueError(f"{name}: rank {a.shape[0]} is not the config's r={r}")
            module = name.split(".")[2]
            if module in heads:
                b = _rotary_rows(b, heads[module])
            writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a, dtype=dtype))
            writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b, dtype=dtype))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    partial.replace(out_path)
    return out_path


def _order(name: str) -> tuple[int, str]:
    """blk.2 before blk.10: the base's tensor order, for a readable dump."""
    return int(name.split(".")[1]), name


def chat_family(gguf_path: Path) -> Literal["chatml", "llama3"]:
    """Which Ollama template reproduces the GGUF's own chat template."""
    template = _field(gguf.GGUFReader(str(gguf_path)), gguf.Keys.Tokenizer.CHAT_TEMPLATE)
    if not isinstance(template, str):
        raise ValueError(f"{gguf_path} has no chat template (tokenizer.chat_template)")
    if "<|im_start|>" in template:
        return "chatml"
    if "<|start_header_id|>" in template:
        return "llama3"
    raise ValueError(
        f"{gguf_path}: its chat template is neither ChatML (<|im_start|>) nor Llama 3 "
        "(<|start_header_id|>); write the Modelfile's TEMPLATE by hand"
    )


def write_modelfile(gguf_path: Path, system_prompt: str) -> Path:
    """Write an Ollama ``<stem>.Modelfile`` beside ``gguf_path``: FROM the file, its chat
    template in Ollama's syntax, the end tokens as stops, greedy decoding (temperature 0,
    as the service decodes) and ``system_prompt`` (callers pass service.prompt.SYSTEM_PROMPT,
    so Ollama answers as the service would)."""
    gguf_path = Path(gguf_path)
    family = chat_family(gguf_path)
    if '"""' in system_prompt:
        raise ValueError('the system prompt cannot contain """ (the Modelfile quote)')
    lines = [
        f"FROM ./{gguf_path.name}",
        f'TEMPLATE """{TEMPLATES[family]}"""',
        *(f'PARAMETER stop "{token}"' for token in END_TOKENS[family]),
        "PARAMETER temperature 0",
        f'SYSTEM """{system_prompt}"""',
    ]
    path = gguf_path.with_name(f"{gguf_path.stem}.Modelfile")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
