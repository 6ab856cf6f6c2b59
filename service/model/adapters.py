"""LoRA adapters in GGUF form (one per team or tenant), swapped on the one loaded base.

An adapter is a ``NAME.gguf`` file in the adapters directory, loaded on first use (a few
ms) and kept; switching is setting it on the context (microseconds) and clearing the KV
cache, so the next answer is exactly what that adapter alone gives.

An adapter may have a manifest ``NAME.json`` beside it (service/model/gguf_files.py) saying
which base it was trained for. llama.cpp only checks that tensor shapes fit, so an adapter
trained on another base of the same shape would load and answer nonsense; with a manifest it
is refused instead (AdapterMismatch), naming both bases. An adapter without a manifest is
used as before. A manifest may also carry the adapter's ``cause_bias`` (its calibration,
``training/calibrate.py``), applied while the adapter is in use.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import llama_cpp
from llama_cpp import Llama

from service.model.gguf_files import BaseIdentity, check_manifest, read_manifest


class UnknownAdapter(KeyError):
    pass


class Adapters:
    def __init__(self, directory: Path | None, llm: Llama, base: BaseIdentity) -> None:
        self._directory = directory
        self._llm = llm
        self._base = base
        self._loaded: dict[str, llama_cpp.llama_adapter_lora_p] = {}
        self._bias: dict[str, dict[str, float]] = {}
        self.current: str | None = None

    def names(self) -> list[str]:
        if self._directory is None or not self._directory.is_dir():
            return []
        return sorted(path.stem for path in self._directory.glob("*.gguf"))

    def check(self, name: str) -> None:
        """Raise UnknownAdapter if there is no such adapter, AdapterMismatch if its manifest
        names another base, InvalidManifest if its manifest cannot be read. Reads the
        manifest each time (a small file), so a replaced adapter is judged afresh."""
        if name not in self.names():
            raise UnknownAdapter(name)
        manifest = self._file(name).with_suffix(".json")
        if manifest.is_file():
            check_manifest(read_manifest(manifest), self._base)

    def cause_bias(self, name: str) -> dict[str, float]:
        """The calibration of a loaded adapter, read with it (none without a manifest)."""
        return self._bias.get(name, {})

    def use(self, name: str | None) -> None:
        """Put ``name`` (None: the bare base) on the context; call with the model held."""
        if name == self.current:
            return
        ctx = self._llm._ctx.ctx
        if name is None:
            llama_cpp.llama_set_adapters_lora(ctx, None, 0, None)
        else:
            handle = self._handle(name)
            handles = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(handle)  # type: ignore[misc]  # llama_cpp says c_void_p, its restype is POINTER(c_void_p)
            scales = (ctypes.c_float * 1)(1.0)
            llama_cpp.llama_set_adapters_lora(ctx, handles, 1, scales)
        self._llm.reset()  # the KV cache holds the previous adapter's keys and values
        self.current = name

    def _handle(self, name: str) -> llama_cpp.llama_adapter_lora_p:
        if name not in self._loaded:
            self.check(name)
            path = self._file(name)
            handle = llama_cpp.llama_adapter_lora_init(self._llm._model.model, str(path).encode())
            if not handle:
                raise UnknownAdapter(f"{name} ({path} is not a LoRA adapter for this base)")
            manifest = path.with_suffix(".json")
            if manifest.is_file():
                bias = read_manifest(manifest).cause_bias
                self._bias[name] = {cause.value: value for cause, value in bias.items()}
            self._loaded[name] = handle
        return self._loaded[name]

    def _file(self, name: str) -> Path:
        """``name``'s GGUF file (UnknownAdapter without an adapters directory)."""
        if self._directory is None:
            raise UnknownAdapter(name)
        return self._directory / f"{name}.gguf"
