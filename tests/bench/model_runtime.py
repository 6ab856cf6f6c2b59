"""Two choices of ModelRuntime, each against its alternative in the same run, on raw
llama-cpp-python decoding after the eval's prompts (system prompt cached):

- the thread that first ran the model against a second thread of the same process (why
  the runtime keeps one thread for the model: ggml's CPU backend parallelises with
  OpenMP, whose worker team belongs to the calling thread, so a server calling the model
  from its thread pool runs it on several teams);
- flash attention on (the default) against off.

    .venv/bin/python tests/bench/model_runtime.py [--reports 8] [--tokens 70]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

from llama_cpp import Llama

from service.contract import AnomalyReport
from service.model.runtime import chat_formatter
from service.model.tuned import prepare_tuned
from service.prompt import build_messages
from service.settings import Settings
from training.dataset import samples


def decode_times(llm: Llama, prompts: list[list[int]], tokens: int, keep: int) -> list[float]:
    """Seconds to decode ``tokens`` after each prompt, its first ``keep`` tokens cached."""
    times = []
    for prompt in prompts:
        llm.n_tokens = min(keep, llm.n_tokens)
        started = time.perf_counter()
        for count, _ in enumerate(llm.generate(prompt, temp=0.0), 1):
            if count >= tokens:
                break
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=70)
    args = parser.parse_args()
    settings = Settings()
    path = str(prepare_tuned(settings.data_dir))

    def load(flash_attn: bool) -> Llama:
        return Llama(
            model_path=path,
            n_ctx=settings.n_ctx,
            n_threads=settings.n_threads,
            flash_attn=flash_attn,
            verbose=False,
        )

    llm = load(flash_attn=True)
    chat = chat_formatter(llm)
    rows = samples.read_jsonl(samples.HELDOUT)[: args.reports]
    prompts = [
        llm.tokenize(
            chat(
                messages=build_messages(AnomalyReport.model_validate(r["meta"]["report"]))
            ).prompt.encode(),
            add_bos=True,
            special=True,
        )
        for r in rows
    ]
    keep = 0
    while all(len(p) > keep and p[keep] == prompts[0][keep] for p in prompts):
        keep += 1  # the system prompt: cached, as in the service
    decode_times(llm, prompts[:1], args.tokens, keep)  # warm up on this thread
    first = decode_times(llm, prompts, args.tokens, keep)
    second: list[float] = []
    worker = threading.Thread(
        target=lambda: second.extend(decode_times(llm, prompts, args.tokens, keep))
    )
    worker.start()
    worker.join()
    again = decode_times(llm, prompts, args.tokens, keep)
    one, two = statistics.median(first + again), statistics.median(second)
    print(
        f"{args.reports} prompts, {args.tokens} tokens each: first thread p50 {one * 1000:.0f} "
        f"ms (before and after), second thread p50 {two * 1000:.0f} ms -> "
        f"second / first {two / one:.2f}"
    )
    plain = load(flash_attn=False)
    decode_times(plain, prompts[:1], args.tokens, keep)
    times: dict[bool, list[float]] = {True: [], False: []}
    for order in ((False, True), (True, False), (False, True)):  # alternated: drift cancels
        for flash in order:
            times[flash] += decode_times(llm if flash else plain, prompts, args.tokens, keep)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(
        f"flash attention (alternated, 3 rounds) off: p50 {off * 1000:.0f} ms, on: "
        f"{on * 1000:.0f} ms -> off / on {off / on:.2f}"
    )


if __name__ == "__main__":
    main()
