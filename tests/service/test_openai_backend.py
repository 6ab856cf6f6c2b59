"""The OpenAI-compatible backend against a real server: llama-cpp-python's own
(``python -m llama_cpp.server``), started here with the embedded model. It holds to the
facts as the local decoder does: a settled cause is written as given, and a cause chosen
among several carries the model's own share of them as its confidence."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from baselines.demo import free_port
from service.contract import Analysis, AnomalyReport, Diagnosis, ProbableCause, Severity
from service.grounding import report_numbers, ungrounded
from service.model.embedded import prepare_embedded
from service.model.fields import MAX_SHARE, generation_schema
from service.model.remote import OpenAIRuntime, choice_share, step
from service.prompt import build_messages, settled
from tests.service.serving import serving
from tests.service.test_adapters import MIXED_REPORT
from tests.service.test_api import FULL_REPORT


@pytest.mark.slow
def test_answers_come_from_an_openai_compatible_server(service_settings, tmp_path) -> None:
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(prepare_embedded(service_settings.data_dir)),
            "--model_alias",
            "smol",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_threads",
            "2",
            "--n_ctx",
            "2048",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, "llama_cpp.server exited (is its [server] extra in?)"
            assert time.monotonic() < deadline, "llama_cpp.server did not start in 120 s"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        settings = service_settings.model_copy(
            update={
                "data_dir": tmp_path,
                "backend": "openai",
                "openai_model": "smol",
                "openai_base_url": f"http://127.0.0.1:{port}/v1",
                "openai_response_format": "json_object",
            }
        )
        with serving(settings) as client:
            assert client.get("/readyz").status_code == 200, client.get("/readyz").text
            assert client.get("/v1/models").json()["base"]["base"] == "openai:smol"
            response = client.post("/v1/analyze", json=FULL_REPORT | {"id": "remote-1"})
        chosen, share = _choose(f"http://127.0.0.1:{port}/v1", settings.max_tokens)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert response.status_code == 200, response.text
    analysis = Analysis.model_validate_json(response.content)
    assert analysis.model.base == "openai:smol"  # the server answered, not the rule engine
    assert analysis.grounding in ("grounded", "regenerated", "degraded")
    assert analysis.severity == Severity.warning  # settled (758 / 200 ms) by the response format
    # The evidence (thread pool exhausted) settles the cause: the schema allows it alone.
    assert analysis.probable_cause == ProbableCause.local_cpu_saturation
    assert analysis.confidence == 0.9
    allowed = settled(AnomalyReport.model_validate(MIXED_REPORT)).causes
    assert len(allowed) == 3 and chosen.probable_cause in allowed
    assert share is not None, "llama_cpp.server returned no log-probabilities"
    assert chosen.confidence == step(share) <= MAX_SHARE

    prose = f"{analysis.summary} {analysis.explanation}"
    assert ungrounded(prose, report_numbers(AnomalyReport.model_validate(FULL_REPORT))) == []


def _choose(url: str, max_tokens: int) -> tuple[Diagnosis, float | None]:
    """A report whose facts support three causes, answered through the backend, and the
    model's share of them read off the server's own log-probabilities for the same request
    (decoding is greedy and seeded, so both answers are one)."""
    report = AnomalyReport.model_validate(MIXED_REPORT)
    given = settled(report)
    messages = build_messages(report)
    runtime = OpenAIRuntime(url, "smol", generation_schema(), "json_object")
    body = runtime.request(messages, max_tokens, 0.0, 0, given)
    raw = httpx.post(f"{url}/chat/completions", json=body, timeout=300).json()["choices"][0]
    tokens = (raw.get("logprobs") or {}).get("content")
    share = choice_share(raw["message"]["content"], tokens, given.causes)
    completion = runtime.complete(messages, max_tokens, time.monotonic() + 300, 0.0, 0, None, given)
    return Diagnosis.model_validate_json(completion.text), share


def test_the_share_is_read_where_the_cause_begins_whatever_the_tokens() -> None:
    """Servers split the answer into tokens of their own: the cause may begin inside a token
    that also holds its opening quote, alternatives outside the allowed causes do not count,
    and tokens that do not spell the answer give no share (the model's written one stays)."""
    text = '{"probable_cause": "memory_pressure", "severity": "warning"}'
    allowed = (ProbableCause.downstream_dependency, ProbableCause.memory_pressure)
    tail = {"token": '_pressure", "severity": "warning"}', "logprob": 0.0}
    split = [
        {"token": '{"probable_cause": "', "logprob": 0.0},
        {
            "token": "memory",
            "logprob": -1.0,
            "top_logprobs": [
                {"token": "local", "logprob": -0.1},  # not allowed: ignored
                {"token": "memory", "logprob": -1.0},
                {"token": "down", "logprob": -1.0},
            ],
        },
        tail,
    ]
    assert choice_share(text, split, allowed) == 0.5
    joined = [
        {"token": '{"probable_cause": ', "logprob": 0.0},
        {"token": '"memory', "logprob": -1.0, "top_logprobs": [{"token": '"d', "logprob": -5.0}]},
        tail,
    ]
    assert choice_share(text, joined, allowed) == MAX_SHARE  # 98% of the two, capped
    assert choice_share(text, split[:2], allowed) is None
    assert choice_share(text, None, allowed) is None
