"""One GGUF model loaded once, shared by all requests, one generation at a time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import llama_cpp
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from service.contract import ModelInfo
from service.model.adapters import Adapters
from service.model.fields import DeadlinePassed, Decoded, FieldDecoder, FieldOutputError
from service.model.gguf_files import loaded_identity
from service.prompt import Settled

T = TypeVar("T")


class ModelBackend(Protocol):
    """What an Analyzer needs of a model: the local runtime below, or a remote server
    (service/model/remote.py)."""

    info: ModelInfo
    tokens: dict[str, int]
    generating_s: float

    @property
    def adapters(self) -> AdapterSelector:
        """Read-only here, so that each backend may hold its own kind of selector."""
        ...

    def complete(
        self,
        messages: list[dict[str, str]],
        max_tokens: int,
        deadline: float,
        temperature: float = 0.0,
        seed: int | None = None,
        adapter: str | None = None,
        settled: Settled | None = None,
    ) -> Completion:
        """The Diagnosis JSON for ``messages``, with what ``settled`` gives (``prompt.settled``)
        as given."""
        ...


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


def chat_formatter(llm: Llama) -> Jinja2ChatFormatter:
    """The GGUF's own chat template, as llama-cpp-python's chat completion applies it."""
    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise ValueError("the model file has no chat template (tokenizer.chat_template)")
    eos, bos = llm.token_eos(), llm.token_bos()
    return Jinja2ChatFormatter(
        template=template,
        eos_token=llm.detokenize([eos], special=True).decode() if eos >= 0 else "",
        bos_token=llm.detokenize([bos], special=True).decode() if bos >= 0 else "",
        stop_token_ids=[eos],
    )


def _quantization_name(file_type: str | None) -> str:
    """'7' -> 'Q8_0', from llama.cpp's own LLAMA_FTYPE_* table."""
    names = {
        str(getattr(llama_cpp, attr)): attr.removeprefix("LLAMA_FTYPE_").removeprefix("MOSTLY_")
        for attr in dir(llama_cpp)
        if attr.startswith("LLAMA_FTYPE_") and attr != "LLAMA_FTYPE_GUESSED"
    }
    return names.get(file_type or "", "unknown")


class ModelRuntime:
    """The model and the one thread that runs it.

    Every llama.cpp call that computes runs on that thread: ggml's CPU backend parallelises
    with OpenMP, whose worker team belongs to the calling thread. A model driven from
    several threads (a web server's pool) runs on several teams, and a second team decoded
    1.6x-1.8x slower than the first here (``tests/bench/model_runtime.py``)."""

    def __init__(
        self,
        path: Path,
        n_ctx: int,
        n_threads: int,
        seed: int,
        repeat_penalty: float,
        adapters_dir: Path | None = None,
        flash_attn: bool = True,
        cause_bias: dict[str, float] | None = None,
    ) -> None:
        """``cause_bias``: the calibration of the model at ``path`` (its adapter manifest's
        ``cause_bias``); an adapter put on it per request brings its own."""
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whyslow-model")
        self._llm = self.run(
            lambda: Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=n_threads,
                seed=seed,
                flash_attn=flash_attn,
                verbose=False,
            )
        )
        self._lock = threading.Lock()
        self.tokens = {"prompt": 0, "completion": 0}
        """Tokens read and written since start (for /metrics: tokens per second)."""
        self.generating_s = 0.0
        self.identity = loaded_identity(self._llm, path)
        """Which base this is; adapters whose manifest names another one are refused."""
        self.adapters = Adapters(adapters_dir, self._llm, self.identity)
        self._chat = chat_formatter(self._llm)
        self._decoder = FieldDecoder(self._llm, repeat_penalty)
        self.cause_bias = cause_bias or {}
        """Added to each cause's first token when no adapter is asked for: the calibration
        of the adapter merged into this model (``whyslow train calibrate``)."""
        self.info = ModelInfo(
            base=path.name,
            quantization=_quantization_name(self._llm.metadata.get("general.file_type")),
        )

    def close(self) -> None:
        """End the model's thread (and with it its OpenMP team, which would otherwise slow a
        model loaded after this one in the same process)."""
        self._thread.shutdown(wait=True)

    def run(self, work: Callable[[], T]) -> T:
        """``work()`` on the model's thread (benches measure raw llama-cpp-python there)."""
        return self._thread.submit(work).result()

    def prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """The chat as the model reads it: its own template, special tokens parsed (the
        prompt has neutralised every one in untrusted text)."""
        prompt = self._chat(messages=messages).prompt  # type: ignore[arg-type]  # llama_cpp types each role's dict apart
        return self._llm.tokenize(prompt.encode(), add_bos=True, special=True)

    def complete(
        self,
        messages: list[dict[str, str]],
        max_tokens: int,
        deadline: float,
        temperature: float = 0.0,
        seed: int | None = None,
        adapter: str | None = None,
        settled: Settled | None = None,
    ) -> Completion:
        """A Diagnosis's JSON decoded field by field (``fields.py``), finished by
        ``deadline`` (monotonic time): waiting for the model past it, or generating past it
        (checked between two tokens), raises ModelBusy."""
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise ModelBusy("the model was busy until the request's deadline")
        started = time.monotonic()
        try:
            self.adapters.use(adapter)
            prompt = self.prompt_tokens(messages)
            bias = self.adapters.cause_bias(adapter) if adapter else self.cause_bias
            try:
                decoded = self.run(
                    lambda: self._decoder.decode(
                        prompt, max_tokens, deadline, temperature, seed, settled, bias
                    )
                )
                finish = "stop"
            except DeadlinePassed as exc:
                raise ModelBusy(str(exc)) from exc
            except FieldOutputError as exc:
                decoded, finish = Decoded(str(exc), len(prompt), exc.sampled), "length"
            self.tokens["prompt"] += decoded.prompt_tokens
            self.tokens["completion"] += decoded.completion_tokens
            self.generating_s += time.monotonic() - started
        finally:
            self._lock.release()
        return Completion(
            text=decoded.text,
            finish_reason=finish,
            prompt_tokens=decoded.prompt_tokens,
            completion_tokens=decoded.completion_tokens,
        )

    def cause_scores(self, messages: list[dict[str, str]]) -> dict[str, float]:
        """Each cause's score where the bare model (no adapter, no bias) names the cause
        (``FieldDecoder.cause_scores``): what ``whyslow train calibrate`` fits a bias on."""
        with self._lock:
            self.adapters.use(None)
            prompt = self.prompt_tokens(messages)
            return self.run(lambda: self._decoder.cause_scores(prompt))
