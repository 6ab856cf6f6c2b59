"""The base model for training: a GGUF file turned into a plain transformers folder, once.

transformers can load a GGUF directly (dequantising it, ~16 s for the 135M model) but such a
model refuses ``save_pretrained`` and is slow to load every time. Converted once into an
fp32 safetensors folder it reloads in under a second and trains like any HF checkpoint
(NOTES-model-pipeline.md, "transformers on the GGUF").
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from service.model.gguf_files import BaseIdentity, base_identity, fingerprint, text_sha256

SOURCE_FILE = "whyslow-base.json"
"""Written into a converted folder: the GGUF it came from and that GGUF's identity."""


def _source(gguf_path: Path) -> dict[str, object]:
    stat = gguf_path.stat()
    return {"file": gguf_path.name, "bytes": stat.st_size}


def _recorded_source(folder: Path) -> object:
    """The source a converted folder records; None if there is no such (complete) folder."""
    try:
        return json.loads((folder / SOURCE_FILE).read_text())["source"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def hf_folder(gguf_path: Path, cache_dir: Path) -> Path:
    """A transformers folder (config, fp32 safetensors, tokenizer) with the weights of
    ``gguf_path`` dequantised, cached under ``cache_dir/<fingerprint[:16]>``.

    The cache key is the base's fingerprint, which is the same for every quantisation of a
    base; the folder records which file it was made from (name and size), and another file
    of the same base replaces it rather than being silently served the first one's weights.
    Writing goes to a temporary folder renamed into place, so an interrupted conversion
    leaves no half folder behind.
    """
    gguf_path = Path(gguf_path)
    identity = base_identity(gguf_path)
    target = Path(cache_dir) / identity.fingerprint[:16]
    source = _source(gguf_path)
    if _recorded_source(target) == source:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        # The GGUF loader marks the model as quantised and not serialisable; its weights are
        # plain fp32 by now, so forgetting the quantizer lets it save as a normal checkpoint.
        model.hf_quantizer = None  # type: ignore[assignment]  # torch types module attributes as tensors or modules
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        (work / SOURCE_FILE).write_text(
            json.dumps({"source": source, "identity": identity.model_dump()}, indent=2) + "\n"
        )
        work.chmod(0o755)  # mkdtemp's 0700 would hide the folder from other users
        if target.exists():  # made from another file of the same base: replace it
            stale = Path(tempfile.mkdtemp(prefix=f".{target.name}.stale.", dir=target.parent))
            target.rename(stale / "old")
            work.rename(target)
            shutil.rmtree(stale, ignore_errors=True)
        else:
            work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _tokens(tokenizer: PreTrainedTokenizerBase, vocab_size: int | None) -> list[str]:
    """Every token's text by id, as a GGUF lists them (``tokenizer.ggml.tokens``): the
    tokenizer's own strings (byte-level BPE keeps "Ġ" and the like on both sides), and, where
    the config's vocab_size is larger than the tokenizer (an embedding padded for speed),
    "[PADn]" for the ids in between, as llama.cpp's converter writes them."""
    size = max(len(tokenizer), vocab_size or 0)
    known = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    assert isinstance(known, list)  # a list of ids gives a list of tokens
    return known + [f"[PAD{i}]" for i in range(len(known), size)]


def hf_identity(folder: Path) -> BaseIdentity:
    """The identity of a transformers folder, computed from its config and tokenizer the way
    ``base_identity`` computes a GGUF's, so an adapter trained from a folder converted from
    a GGUF names the same base as that GGUF. The name comes from the GGUF the folder was
    converted from when it records one (hf_folder does), else from the folder.

    Measured for SmolLM2-135M: the folder hf_folder makes from the Q4_1 GGUF gives the GGUF's
    fingerprint exactly (transformers rebuilds the tokenizer from the GGUF's token strings,
    and convert_ids_to_tokens gives them back unchanged). A folder from elsewhere matches a
    GGUF converted from it as far as llama.cpp's converter keeps the tokenizer's strings; a
    converter that rewrites tokens would make the two differ, which refuses the adapter
    rather than risking a wrong one.
    """
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    # llama.cpp files Mistral-style checkpoints under "llama"; other families keep their name.
    architecture = {"mistral": "llama"}.get(config["model_type"], config["model_type"])
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    marker = folder / SOURCE_FILE
    name = json.loads(marker.read_text())["identity"]["name"] if marker.is_file() else folder.name
    return BaseIdentity(
        name=name,
        architecture=architecture,
        fingerprint=fingerprint(
            architecture,
            config.get("num_hidden_layers"),
            config.get("hidden_size"),
            config.get("intermediate_size"),
            config.get("num_attention_heads"),
            config.get("num_key_value_heads", config.get("num_attention_heads")),
            _tokens(tokenizer, config.get("vocab_size")),
        ),
        chat_template_sha256=text_sha256(template) if template else None,
    )
