"""One GGUF model loaded once, shared by all requests, one generation at a time."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import llama_cpp
from llama_cpp import Llama, LlamaGrammar

from service.contract import ModelInfo
from service.model.adapters import Adapters
from service.model.gguf_files import loaded_identity


class ModelBackend(Protocol):
    """What an Analyzer needs of a model: the local runtime below, or a remote server
    (service/model/remote.py)."""

    info: ModelInfo
    adapters: AdapterSelector
    tokens: dict[str, int]
    generating_s: float

    def complete(
        self,
        messages: list[dict[str, str]],
        grammar: LlamaGrammar,
        max_tokens: int,
        deadline: float,
        temperature: float = 0.0,
        seed: int | None = None,
        adapter: str | None = None,
    ) -> Completion: ...


class AdapterSelector(Protocol):
    current: str | None

    def names(self) -> list[str]: ...

    def check(self, name: str) -> None:
        """Raise if ``name`` cannot be used: unknown (UnknownAdapter, a KeyError) or made
        for another base (AdapterMismatch, InvalidManifest: ValueErrors)."""
        ...

    def use(self, name: str | None) -> None: ...


class ModelBusy(RuntimeError):
    """The model could not take the request before its deadline."""


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def _quantization_name(file_type: str | None) -> str:
    """'7' -> 'Q8_0', from llama.cpp's own LLAMA_FTYPE_* table."""
    names = {
        str(getattr(llama_cpp, attr)): attr.removeprefix("LLAMA_FTYPE_").removeprefix("MOSTLY_")
        for attr in dir(llama_cpp)
        if attr.startswith("LLAMA_FTYPE_") and attr != "LLAMA_FTYPE_GUESSED"
    }
    return names.get(file_type or "", "unknown")


class ModelRuntime:
    def __init__(
        self,
        path: Path,
        n_ctx: int,
        n_threads: int,
        seed: int,
        repeat_penalty: float,
        adapters_dir: Path | None = None,
    ) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        self._llm = Llama(
            model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, seed=seed, verbose=False
        )
        self._lock = threading.Lock()
        self._repeat_penalty = repeat_penalty
        self.tokens = {"prompt": 0, "completion": 0}
        """Tokens read and written since start (for /metrics: tokens per second)."""
        self.generating_s = 0.0
        self.identity = loaded_identity(self._llm, path)
        """Which base this is; adapters whose manifest names another one are refused."""
        self.adapters = Adapters(adapters_dir, self._llm, self.identity)
        self.info = ModelInfo(
            base=path.name,
            quantization=_quantization_name(self._llm.metadata.get("general.file_type")),
        )

    def complete(
        self,
        messages: list[dict[str, str]],
        grammar: LlamaGrammar,
        max_tokens: int,
        deadline: float,
        temperature: float = 0.0,
        seed: int | None = None,
        adapter: str | None = None,
    ) -> Completion:
        """Grammar-constrained chat completion, finished by ``deadline`` (monotonic time):
        waiting for the model past it, or generating past it (streamed, so it can stop
        between two tokens), raises ModelBusy."""
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise ModelBusy("the model was busy until the request's deadline")
        try:
            self.adapters.use(adapter)
            stream = self._llm.create_chat_completion(
                messages=messages,  # type: ignore[arg-type]
                grammar=grammar,
                temperature=temperature,
                seed=seed,
                max_tokens=max_tokens,
                repeat_penalty=self._repeat_penalty,
                stream=True,
            )
            parts: list[str] = []
            finish = ""
            started = time.monotonic()
            for chunk in stream:  # type: ignore[union-attr]
                choice = chunk["choices"][0]
                if content := choice["delta"].get("content"):
                    parts.append(content)
                finish = choice.get("finish_reason") or finish
                if time.monotonic() > deadline:
                    stream.close()  # type: ignore[union-attr]
                    raise ModelBusy("generation ran past the request's deadline")
            prompt_tokens = self._llm.n_tokens - len(parts)
            self.tokens["prompt"] += prompt_tokens
            self.tokens["completion"] += len(parts)
            self.generating_s += time.monotonic() - started
        finally:
            self._lock.release()
        return Completion(
            text="".join(parts),
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(parts),
        )
