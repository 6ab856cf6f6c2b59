"""One GGUF model loaded once, shared by all requests, one generation at a time."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
from llama_cpp import Llama, LlamaGrammar

from service.contract import ModelInfo


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
        self, path: Path, n_ctx: int, n_threads: int, seed: int, repeat_penalty: float
    ) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        self._llm = Llama(
            model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, seed=seed, verbose=False
        )
        self._lock = threading.Lock()
        self._repeat_penalty = repeat_penalty
        self.info = ModelInfo(
            base=path.name,
            quantization=_quantization_name(self._llm.metadata.get("general.file_type")),
        )

    def complete(
        self, messages: list[dict[str, str]], grammar: LlamaGrammar, max_tokens: int
    ) -> Completion:
        """Greedy, grammar-constrained chat completion."""
        with self._lock:
            result = self._llm.create_chat_completion(
                messages=messages,  # type: ignore[arg-type]
                grammar=grammar,
                temperature=0.0,
                max_tokens=max_tokens,
                repeat_penalty=self._repeat_penalty,
            )
        choice = result["choices"][0]  # type: ignore[index]
        usage = result["usage"]  # type: ignore[index]
        return Completion(
            text=choice["message"]["content"] or "",
            finish_reason=choice["finish_reason"] or "",
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
        )
