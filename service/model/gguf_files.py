"""GGUF files without llama.cpp's converters: which base a file is, requantising, merging a
LoRA into a base, and the manifest that says which base an adapter was trained for.

The service uses this at run time (it checks adapters against the loaded base), so it needs
only numpy, gguf and llama-cpp-python, never torch. Facts it relies on are in
NOTES-model-pipeline.md ("Writing GGUF without llama.cpp's converter").
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

import gguf
import llama_cpp
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tqdm import tqdm

from service.contract import ProbableCause

MANIFEST_FORMAT: Final = "whyslow-adapter/1"

OutType = Literal["F32", "F16"]


class BaseIdentity(BaseModel):
    """Which base model a file is, in a form an adapter can be checked against.

    ``fingerprint`` covers what an adapter depends on: the architecture, its shapes and the
    tokenizer. It leaves the weights out on purpose, so it is the same for every
    quantisation of a base (Q4_1, its Q8_0 requantisation, a dequantised F32 copy, the
    transformers folder converted from it) and for a merge of an adapter into it. Two
    different fine-tunes of one architecture and tokenizer share it too: it tells
    *incompatible* bases apart, not checkpoints.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    architecture: str
    fingerprint: str
    chat_template_sha256: str | None


class AdapterMismatch(ValueError):
    """An adapter was trained for another base than the one it is put on."""


class InvalidManifest(ValueError):
    """An adapter manifest that cannot be read; the message names the file and the fault."""


class LoraSettings(BaseModel):
    """The peft LoraConfig an adapter was trained with (what reproduces it)."""

    model_config = ConfigDict(frozen=True)

    r: int = Field(gt=0)
    alpha: float = Field(gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str]
    rslora: bool = False


class AdapterManifest(BaseModel):
    """``NAME.json`` beside an adapter ``NAME.gguf``: its base, how it was trained, on what
    data, and how well it scored. The service refuses an adapter whose base differs."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["whyslow-adapter/1"] = MANIFEST_FORMAT
    name: str
    base: BaseIdentity
    lora: LoraSettings
    schema_version: str
    data_sha256: str
    seed: int
    metrics: dict[str, float] = Field(default_factory=dict)
    created: datetime
    cause_bias: dict[ProbableCause, float] = Field(
        default_factory=dict,
        description="Added to the scores of the tokens that begin each cause when the answer "
        "names its cause: the model's calibration, fitted on generated cases by `whyslow "
        "train calibrate` (training/calibrate.py). Causes left out get 0.",
    )


def text_sha256(text: str) -> str:
    """sha256 hex of UTF-8 text (a chat template, a canonical JSON)."""
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint(
    architecture: str,
    block_count: int | None,
    embedding_length: int | None,
    feed_forward_length: int | None,
    head_count: int | None,
    head_count_kv: int | None,
    tokens: list[str],
) -> str:
    """sha256 of a canonical JSON of the shapes and the token list; one function, so the GGUF
    side and the transformers side (training/base.py) cannot drift apart."""
    facts = {
        "architecture": architecture,
        "block_count": block_count,
        "embedding_length": embedding_length,
        "feed_forward_length": feed_forward_length,
        "attention.head_count": head_count,
        "attention.head_count_kv": head_count_kv,
        "vocab_size": len(tokens),
        "tokens_sha256": text_sha256(json.dumps(tokens, ensure_ascii=False)),
    }
    return text_sha256(json.dumps(facts, sort_keys=True, separators=(",", ":")))


def _field(reader: gguf.GGUFReader, key: str) -> Any:
    field = reader.get_field(key)
    return None if field is None else field.contents()


def _architecture(reader: gguf.GGUFReader, path: Path) -> str:
    architecture = _field(reader, gguf.Keys.General.ARCHITECTURE)
    if not isinstance(architecture, str):
        raise ValueError(f"{path} has no general.architecture: not a model GGUF")
    return architecture


def _identity(reader: gguf.GGUFReader, path: Path) -> BaseIdentity:
    arch = _architecture(reader, path)
    tokens = _field(reader, gguf.Keys.Tokenizer.LIST)
    if not tokens:
        raise ValueError(f"{path} has no tokenizer.ggml.tokens: cannot identify its base")
    template = _field(reader, gguf.Keys.Tokenizer.CHAT_TEMPLATE)
    return BaseIdentity(
        name=_field(reader, gguf.Keys.General.NAME) or path.stem,
        architecture=arch,
        fingerprint=fingerprint(
            arch,
            _field(reader, f"{arch}.block_count"),
            _field(reader, f"{arch}.embedding_length"),
            _field(reader, f"{arch}.feed_forward_length"),
            _field(reader, f"{arch}.attention.head_count"),
            _field(reader, f"{arch}.attention.head_count_kv"),
            tokens,
        ),
        chat_template_sha256=text_sha256(template) if template else None,
    )


def base_identity(gguf_path: Path) -> BaseIdentity:
    """The identity of a model GGUF (a base, a requantisation or a merge of one)."""
    return _identity(gguf.GGUFReader(str(gguf_path)), Path(gguf_path))


def loaded_identity(llm: llama_cpp.Llama, path: Path) -> BaseIdentity:
    """The identity of a model llama.cpp has loaded, as ``base_identity`` gives for its
    file, from what llama.cpp already holds: ~30 ms instead of the ~1.7 s gguf's reader
    takes to parse the file's 100k tokenizer strings (the service pays this at start)."""
    meta = llm.metadata
    arch = meta.get(gguf.Keys.General.ARCHITECTURE)
    if not arch:
        raise ValueError(f"{path} has no general.architecture: not a model GGUF")

    def number(key: str) -> int | None:
        value = meta.get(f"{arch}.{key}")
        return None if value is None else int(value)

    vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
    tokens = [
        llama_cpp.llama_vocab_get_text(vocab, i).decode("utf-8")
        for i in range(llama_cpp.llama_vocab_n_tokens(vocab))
    ]
    template = meta.get(gguf.Keys.Tokenizer.CHAT_TEMPLATE)
    return BaseIdentity(
        name=meta.get(gguf.Keys.General.NAME) or Path(path).stem,
        architecture=arch,
        fingerprint=fingerprint(
            arch,
            number("block_count"),
            number("embedding_length"),
            number("feed_forward_length"),
            number("attention.head_count"),
            number("attention.head_count_kv"),
            tokens,
        ),
        chat_template_sha256=text_sha256(template) if template else None,
    )


def _ftypes() -> dict[str, int]:
    """'Q8_0' -> LLAMA_FTYPE_MOSTLY_Q8_0, from llama.cpp's own table (what it can write)."""
    names = {"F32": llama_cpp.LLAMA_FTYPE_ALL_F32}
    for attr in dir(llama_cpp):
        if attr.startswith("LLAMA_FTYPE_MOSTLY_"):
            names[attr.removeprefix("LLAMA_FTYPE_MOSTLY_")] = getattr(llama_cpp, attr)
    return names


def _partial(path: Path) -> Path:
    """A sibling to write first and rename over ``path``: no reader sees half a file."""
    return path.with_name(f"{path.name}.{os.getpid()}.partial")


def quantize_gguf(src: Path, dst: Path, ftype: str) -> Path:
    """Quantise (or requantise, or dequantise to F16/F32) ``src`` into ``dst`` with
    llama.cpp's quantiser, on every core. ``ftype`` is a llama.cpp type name: "Q8_0",
    "Q4_K_M", "Q4_0", "Q5_K_M", "F16", ... Raises ValueError for an unknown type and
    RuntimeError, naming the type, when llama.cpp fails."""
    ftypes = _ftypes()
    if ftype not in ftypes:
        raise ValueError(f"unknown GGUF type {ftype!r}; llama.cpp writes: {sorted(ftypes)}")
    if not Path(src).is_file():
        raise FileNotFoundError(f"no GGUF file at {src}")
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial(dst)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftypes[ftype]
    params.allow_requantize = True
    params.nthread = os.cpu_count() or 1
    status = llama_cpp.llama_model_quantize(
        str(src).encode(), str(partial).encode(), ctypes.byref(params)
    )
    if status != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"quantising {src} to {ftype} failed (llama.cpp status {status})")
    partial.replace(dst)
    return dst


def _array(tensor: Any) -> np.ndarray:
    """A reader tensor as float32 in numpy order ([rows, columns]: [out, in] for a weight)."""
    data = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    return np.asarray(data, dtype=np.float32).reshape(tuple(reversed(tensor.shape.tolist())))


def _lora_deltas(
    adapter_path: Path, base: gguf.GGUFReader, base_path: Path
) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Base tensor name -> (lora_a [r, in], lora_b [out, r], alpha / r), checked against the
    base: a wrong architecture, a tensor the base lacks or a shape that does not fit is
    refused before anything is written."""
    adapter = gguf.GGUFReader(str(adapter_path))
    kind = (_field(adapter, gguf.Keys.General.TYPE), _field(adapter, "adapter.type"))
    if kind != ("adapter", "lora"):
        raise ValueError(f"{adapter_path} is not a LoRA adapter GGUF (general.type/adapter.type)")
    arch, base_arch = _architecture(adapter, adapter_path), _architecture(base, base_path)
    if arch != base_arch:
        raise ValueError(
            f"{adapter_path} is an adapter for architecture {arch!r}, "
            f"but {base_path} is {base_arch!r}"
        )
    alpha = _field(adapter, "adapter.lora.alpha")
    if alpha is None:
        raise ValueError(f"{adapter_path} has no adapter.lora.alpha")
    halves: dict[str, dict[str, np.ndarray]] = {}
    for tensor in adapter.tensors:
        stem, _, half = tensor.name.rpartition(".lora_")
        if half not in ("a", "b"):
            raise ValueError(f"{adapter_path}: {tensor.name} is not a lora_a/lora_b tensor")
        halves.setdefault(stem, {})[half] = _array(tensor)
    shapes = {t.name: tuple(reversed(t.shape.tolist())) for t in base.tensors}
    faults: list[str] = []
    deltas: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
    for stem, pair in sorted(halves.items()):
        if set(pair) != {"a", "b"}:
            faults.append(f"{stem} has only lora_{''.join(pair)}")
            continue
        a, b = pair["a"], pair["b"]
        if stem not in shapes:
            faults.append(f"{stem} is not a tensor of the base")
        elif a.shape[0] != b.shape[1] or shapes[stem] != (b.shape[0], a.shape[1]):
            faults.append(f"{stem}: lora_b {b.shape} @ lora_a {a.shape} is not {shapes[stem]}")
        else:
            deltas[stem] = (a, b, float(alpha) / a.shape[0])
    if faults:
        raise ValueError(f"{adapter_path} does not fit {base_path}: " + "; ".join(faults))
    return deltas


def merge_lora(
    base_gguf: Path,
    adapter_gguf: Path | None,
    out_path: Path,
    out_type: OutType = "F16",
    progress: bool = False,
) -> Path:
    """Write ``base + (alpha / r) * lora_b @ lora_a`` as a new GGUF: every metadata field of
    the base (``general.file_type`` set to ``out_type``), every tensor dequantised, 2-D ones
    as ``out_type`` and 1-D ones (norms) as F32. With no adapter it is a plain dequantised
    copy (an F32 base to compare against, or to quantise from).

    The adapter is already in GGUF layout (the rotary permutation was applied to lora_b on
    export), so the product is added as it is. Tensors are streamed one at a time: memory
    stays at about one tensor, not the whole F32 model.
    """
    if out_type not in ("F32", "F16"):
        raise ValueError(f"merge writes F32 or F16, not {out_type!r}")
    base_gguf, out_path = Path(base_gguf), Path(out_path)
    base = gguf.GGUFReader(str(base_gguf))
    arch = _architecture(base, base_gguf)
    deltas = {} if adapter_gguf is None else _lora_deltas(Path(adapter_gguf), base, base_gguf)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial(out_path)
    writer = gguf.GGUFWriter(str(partial), arch)
    try:
        for field in base.fields.values():
            if field.name.startswith("GGUF.") or field.name in (
                gguf.Keys.General.ARCHITECTURE,  # the writer's own
                gguf.Keys.General.FILE_TYPE,  # set below
                gguf.Keys.General.ALIGNMENT,  # the writer pads to its default
            ):
                continue
            kind = field.types[0]
            sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
        writer.add_file_type(
            gguf.LlamaFileType.ALL_F32 if out_type == "F32" else gguf.LlamaFileType.MOSTLY_F16
        )
        wide = np.float32 if out_type == "F32" else np.float16
        dtypes = []
        for tensor in base.tensors:
            shape = tuple(reversed(tensor.shape.tolist()))
            dtype = np.dtype(wide if len(shape) == 2 else np.float32)
            dtypes.append(dtype)
            writer.add_tensor_info(tensor.name, shape, dtype, int(np.prod(shape)) * dtype.itemsize)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tensor, dtype in tqdm(
            list(zip(base.tensors, dtypes, strict=True)),
            desc="merging" if deltas else "dequantising",
            unit="tensor",
            disable=not progress,
        ):
            weight = _array(tensor)
            if tensor.name in deltas:
                a, b, scale = deltas[tensor.name]
                weight = weight + scale * (b @ a)
            writer.write_tensor_data(np.ascontiguousarray(weight, dtype=dtype))
    finally:
        writer.close()
    if not partial.is_file():
        raise RuntimeError(f"writing {out_path} failed")
    partial.replace(out_path)
    return out_path


def read_manifest(path: Path) -> AdapterManifest:
    """An adapter's manifest, or InvalidManifest naming the file and what is wrong with it."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidManifest(f"cannot read adapter manifest {path}: {exc.strerror}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidManifest(f"adapter manifest {path} is not valid JSON: {exc}") from exc
    try:
        return AdapterManifest.model_validate(raw)
    except ValidationError as exc:
        faults = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(root)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise InvalidManifest(
            f"adapter manifest {path} is not a {MANIFEST_FORMAT} manifest: {faults}"
        ) from exc


def write_manifest(manifest: AdapterManifest, path: Path) -> Path:
    """Write ``manifest`` as JSON at ``path``, atomically."""
    path = Path(path)
    partial = _partial(path)
    partial.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    partial.replace(path)
    return path


def check_manifest(manifest: AdapterManifest, base: BaseIdentity) -> None:
    """Raise AdapterMismatch, naming both bases, unless the adapter was trained for ``base``
    (same fingerprint: the same architecture, shapes and tokenizer)."""
    if manifest.base.fingerprint != base.fingerprint:
        trained, loaded = manifest.base, base
        raise AdapterMismatch(
            f"adapter {manifest.name!r} was trained for base {trained.name!r} "
            f"({trained.architecture}, fingerprint {trained.fingerprint[:16]}), but the loaded "
            f"base is {loaded.name!r} ({loaded.architecture}, fingerprint "
            f"{loaded.fingerprint[:16]})"
        )
