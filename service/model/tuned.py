"""The fine-tuned default model: the embedded base with whyslow's LoRA adapter merged in.

The adapter (a few MB, committed in ``weights/``, built by ``whyslow train``) is merged into
the dequantised base and quantised to Q8_0 once, into the data directory, named after the
adapter's digest: a new adapter makes a new file, never a stale one served. The digest
leaves the manifest out, so recalibrating (``whyslow train calibrate``) merges nothing anew.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path

from service.model.embedded import ModelUnavailable, shipped_gguf
from service.model.gguf_files import (
    base_identity,
    check_manifest,
    merge_lora,
    quantize_gguf,
    read_manifest,
)

log = logging.getLogger(__name__)

ADAPTER = Path(__file__).resolve().parent / "weights" / "whyslow-smollm2.gguf"
"""The shipped adapter; its manifest is the ``.json`` beside it."""


def cause_bias(adapter: Path = ADAPTER) -> dict[str, float]:
    """The adapter's calibration (its manifest's ``cause_bias``), which the merged model is
    served with."""
    bias = read_manifest(adapter.with_suffix(".json")).cause_bias
    return {cause.value: value for cause, value in bias.items()}


def adapter_digest(adapter: Path = ADAPTER) -> str:
    return hashlib.sha256(adapter.read_bytes()).hexdigest()[:12]


def prepare_tuned(data_dir: Path, adapter: Path = ADAPTER) -> Path:
    """Path of the merged Q8_0, built on first use (a few seconds, atomically)."""
    if not adapter.is_file():
        raise ModelUnavailable(f"the tuned adapter {adapter} is missing (set WHYSLOW_TUNED=false)")
    target = data_dir / "models" / f"{adapter.stem}-{adapter_digest(adapter)}.Q8_0.gguf"
    if target.is_file():
        return target
    base = shipped_gguf()
    check_manifest(read_manifest(adapter.with_suffix(".json")), base_identity(base))
    log.info("merging %s into %s -> %s", adapter.name, base.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        merged = merge_lora(base, adapter, Path(work) / "merged.F16.gguf", "F16")
        return quantize_gguf(merged, target, "Q8_0")
