"""Latency and memory of the service with the embedded model, each against a reference
measured in the same run.

    .venv/bin/python tests/bench/service_speed.py [--reports 12]

- ``POST /v1/analyze`` (in-process HTTP) on fresh reports, against raw llama-cpp-python
  decoding as many tokens from the same prompt, prefix reused (target <= 1.05x; printed
  for the tokens the service decodes and for all the tokens of its answer), and
  against the naive path of a first version: the whole prompt evaluated afresh and the whole
  answer decoded a token at a time under the JSON grammar (target <= 0.4x);
- a cache hit (the same id again; target p95 <= 10 ms);
- adapter load and switch (target <= 20 ms and <= 1 ms), with two random rank-8 adapters;
- resident memory of ``whyslow serve`` in a process of its own, after it has answered the
  same reports (target <= 400 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from llama_cpp import LlamaGrammar
from llama_cpp.llama_grammar import json_schema_to_gbnf

from service.contract import AnomalyReport, Diagnosis
from service.main import create_app
from service.model.adapters import Adapters
from service.model.fields import generation_schema
from service.prompt import build_messages
from service.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo: test helpers
from tests.service.test_adapters import write_adapter


def reports(count: int) -> list[dict]:
    """Distinct reports in the shape the consumer sends (numbers vary, tags too)."""
    out = []
    for i in range(count):
        out.append(
            {
                "id": f"bench-{i}",
                "service": ["checkout", "exchange-api", "search"][i % 3],
                "operation": "POST /checkout",
                "window": {
                    "start": "2026-11-12T14:00:00Z",
                    "end": "2026-11-12T14:01:00Z",
                    "count": 40 + i,
                },
                "latency_ms": {"p50": 300 + i, "p95": 700 + 13 * i, "p99": 990 + i},
                "baseline": {
                    "hour_of_week": 86,
                    "p50": 110,
                    "p95": 200 + i,
                    "samples": 180,
                    "level": "hour_of_day",
                },
                "context": {
                    "cpu_pct": 60 + (i * 7) % 40,
                    "cpu_baseline_pct": 45,
                    "request_rate": 10 + i,
                    "request_rate_baseline": 12,
                    "downstream": [
                        {
                            "service": "payments",
                            "operation": "POST /charge",
                            "p95_ms": 60 + 30 * (i % 4),
                            "baseline_p95_ms": 53,
                        }
                    ],
                },
            }
        )
    return out


def json_grammar() -> LlamaGrammar:
    """The whole Diagnosis as one grammar, as a first version decodes it."""
    return LlamaGrammar.from_string(
        json_schema_to_gbnf(json.dumps(generation_schema())), verbose=False
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (resident now) and VmHWM (the peak) of a process, in MB."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if line.startswith(("VmRSS", "VmHWM")))
    return {key: int(value.split()[0]) / 1024 for key, value in fields.items()}


def served_memory(data_dir: Path, count: int) -> dict[str, float]:
    """Memory of ``whyslow serve`` (its own process, as deployed) after ``count`` reports."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    env = {**os.environ, "WHYSLOW_DATA_DIR": str(data_dir), "WHYSLOW_CACHE_TTL_S": "0"}
    command = [sys.executable, "-m", "service", "serve", "--port", str(port)]
    server = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            for _ in range(600):
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            for report in reports(count):
                client.post("/v1/analyze", json={**report, "id": report["id"] + "-rss"})
        return memory_mb(server.pid)
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), cache_ttl_s=0)
        with TestClient(create_app(settings)) as client:
            while client.get("/readyz").status_code != 200:
                time.sleep(0.05)
            runtime = client.app.state.loader.runtime
            llm = runtime._llm
            grammar = json_grammar()
            served, raw, raw_whole, naive, regenerated = [], [], [], [], 0
            tokens, written, naive_tokens = [], [], []
            chats = [build_messages(AnomalyReport.model_validate(r)) for r in reports(args.reports)]
            prompts = [runtime.prompt_tokens(messages) for messages in chats]

            def other_prompt_cached(i: int) -> None:
                """Each timing starts as a request does: another report's prompt in the KV
                cache, so the system prompt is reused and this report's lines are not."""
                runtime.run(lambda: next(llm.generate(prompts[i - 1], temp=0.0)))

            def raw_decode(prompt: list[int], count: int) -> None:
                for done, _ in enumerate(llm.generate(prompt, temp=0.0), 1):
                    if done >= count:
                        break

            def naive_answer(messages: list[dict[str, str]]) -> dict:
                llm.reset()  # the first version's path: nothing reused
                return llm.create_chat_completion(
                    messages=messages,
                    grammar=grammar,
                    temperature=0.0,
                    max_tokens=400,
                    repeat_penalty=settings.repeat_penalty,
                )

            for i, report in enumerate(reports(args.reports)):
                other_prompt_cached(i)
                before = runtime.tokens["completion"]
                started = time.perf_counter()
                answer = client.post("/v1/analyze", json=report).json()
                served.append(time.perf_counter() - started)
                sampled = runtime.tokens["completion"] - before
                tokens.append(sampled)
                regenerated += answer["grounding"] in ("regenerated", "degraded")
                fields = {name: answer[name] for name in Diagnosis.model_fields}
                text = Diagnosis.model_validate(fields).model_dump_json()  # the model's JSON
                written.append(len(llm.tokenize(text.encode(), add_bos=False)))
                other_prompt_cached(i)
                started = time.perf_counter()
                runtime.run(lambda: raw_decode(prompts[i], sampled))  # noqa: B023
                raw.append(time.perf_counter() - started)
                other_prompt_cached(i)
                started = time.perf_counter()
                runtime.run(lambda: raw_decode(prompts[i], written[-1]))  # noqa: B023
                raw_whole.append(time.perf_counter() - started)
                started = time.perf_counter()
                out = runtime.run(lambda: naive_answer(chats[i]))  # noqa: B023
                naive.append(time.perf_counter() - started)
                naive_tokens.append(out["usage"]["completion_tokens"])
            hits = []
            for report in reports(args.reports):
                started = time.perf_counter()
                assert client.post("/v1/analyze", json=report).json()["cached"]
                hits.append(time.perf_counter() - started)
            adapters = Path(tmp) / "adapters"
            adapters.mkdir()
            for name, seed in (("team-a", 1), ("team-b", 2)):
                write_adapter(adapters / f"{name}.gguf", seed)
            runtime.adapters = Adapters(adapters, llm, runtime.identity)
            loads, switches = [], []
            for name in ("team-a", "team-b"):
                started = time.perf_counter()
                runtime.adapters.use(name)  # first use: load from disk, then set
                loads.append(time.perf_counter() - started)
            for _ in range(50):
                for name in ("team-a", "team-b", None):
                    started = time.perf_counter()
                    runtime.adapters.use(name)
                    switches.append(time.perf_counter() - started)
        memory = served_memory(Path(tmp), args.reports)

    ratio = statistics.median(served) / statistics.median(raw)
    print(
        f"/v1/analyze over HTTP: p50 {statistics.median(served) * 1000:.0f} ms, "
        f"p95 {percentile(served, 0.95) * 1000:.0f} ms ({args.reports} reports, "
        f"{regenerated} needed a second generation for grounding)"
    )
    print(
        f"raw llama-cpp-python, same prompt, prefix reused, as many decoded tokens (median "
        f"{statistics.median(tokens):.0f}): p50 {statistics.median(raw) * 1000:.0f} ms -> ratio "
        f"{ratio:.2f} (target <= 1.05)"
    )
    print(
        f"raw llama-cpp-python, same prompt, prefix reused, decoding as many tokens as the "
        f"answer has (median {statistics.median(written):.0f}): p50 "
        f"{statistics.median(raw_whole) * 1000:.0f} ms -> ratio "
        f"{statistics.median(served) / statistics.median(raw_whole):.2f}"
    )
    print(
        f"naive (prompt afresh, whole answer decoded under the JSON grammar, median "
        f"{statistics.median(naive_tokens):.0f} tokens): p50 "
        f"{statistics.median(naive) * 1000:.0f} ms -> the service is "
        f"{statistics.median(served) / statistics.median(naive):.2f}x of it (target <= 0.4)"
    )
    print(
        f"cache hit: p50 {statistics.median(hits) * 1000:.1f} ms, p95 "
        f"{percentile(hits, 0.95) * 1000:.1f} ms (target p95 <= 10 ms)"
    )
    print(
        f"whyslow serve after {args.reports} reports: resident {memory['VmRSS']:.0f} MB, peak "
        f"{memory['VmHWM']:.0f} MB (target <= 400 MB)"
    )
    print(
        f"adapter (2 x 30 layers of rank-8 q and v): load and set {max(loads) * 1000:.1f} ms "
        f"(target <= 20 ms); switch when loaded p95 {percentile(switches, 0.95) * 1000:.3f} ms"
        f" (target <= 1 ms)"
    )
    timings = {"served_s": served, "raw_s": raw, "raw_whole_s": raw_whole, "naive_s": naive}
    print(json.dumps(timings))


if __name__ == "__main__":
    main()
