"""The OpenAI-compatible backend against a real server: llama-cpp-python's own
(``python -m llama_cpp.server``), started here with the embedded model."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from baselines.demo import free_port
from service.contract import Analysis, AnomalyReport, Severity
from service.grounding import report_numbers, ungrounded
from service.model.embedded import prepare_embedded
from tests.service.serving import serving
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
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert response.status_code == 200, response.text
    analysis = Analysis.model_validate_json(response.content)
    assert analysis.model.base == "openai:smol"  # the server answered, not the rule engine
    assert analysis.grounding in ("grounded", "regenerated", "degraded")
    assert analysis.severity == Severity.warning  # settled (758 / 200 ms) by the response format

    prose = f"{analysis.summary} {analysis.explanation}"
    assert ungrounded(prose, report_numbers(AnomalyReport.model_validate(FULL_REPORT))) == []
