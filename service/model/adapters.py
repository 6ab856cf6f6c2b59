"""LoRA adapters in GGUF form (one per team or tenant), swapped on the one loaded base.

An adapter is a ``NAME.gguf`` file in the adapters directory, loaded on first use (a few
ms) and kept; switching is setting it on the context (microseconds) and clearing the KV
cache, so the next answer is exactly what that adapter alone gives.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import llama_cpp
from llama_cpp import Llama


class UnknownAdapter(KeyError):
    pass


class Adapters:
    def __init__(self, directory: Path | None, llm: Llama) -> None:
        self._directory = directory
        self._llm = llm
        self._loaded: dict[str, llama_cpp.llama_adapter_lora_p] = {}
        self.current: str | None = None

    def names(self) -> list[str]:
        if self._directory is None or not self._directory.is_dir():
            return []
        return sorted(path.stem for path in self._directory.glob("*.gguf"))

    def use(self, name: str | None) -> None:
        """Put ``name`` (None: the bare base) on the context; call with the model held."""
        if name == self.current:
            return
        ctx = self._llm._ctx.ctx
        if name is None:
            llama_cpp.llama_set_adapters_lora(ctx, None, 0, None)
        else:
            handles = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self._handle(name))
            scales = (ctypes.c_float * 1)(1.0)
            llama_cpp.llama_set_adapters_lora(ctx, handles, 1, scales)
        self._llm.reset()  # the KV cache holds the previous adapter's keys and values
        self.current = name

    def _handle(self, name: str) -> llama_cpp.llama_adapter_lora_p:
        if name not in self._loaded:
            if name not in self.names():
                raise UnknownAdapter(name)
            path = self._directory / f"{name}.gguf"  # type: ignore[operator]
            handle = llama_cpp.llama_adapter_lora_init(self._llm._model.model, str(path).encode())
            if not handle:
                raise UnknownAdapter(f"{name} ({path} is not a LoRA adapter for this base)")
            self._loaded[name] = handle
        return self._loaded[name]
