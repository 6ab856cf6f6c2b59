"""schemathesis against the live OpenAPI schema of a running service: generated requests,
valid and invalid, to every operation get no 5xx and responses that conform to the schema.
The model file is missing, so the rule engine answers and the run takes seconds."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from baselines.demo import free_port
from service.main import create_app
from service.settings import Settings


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_nor_schema_violation(tmp_path: Path) -> None:
    port = free_port()
    app = create_app(Settings(data_dir=tmp_path, model_path=tmp_path / "none.gguf"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz").json().get("status") == "failed":
                break  # the loader has given up: the rule engine answers
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    try:
        done = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"{url}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                "30",
                "--workers",
                "1",
                "--no-color",
                # the API, not the probes: /readyz answers 503 by design here (no model file)
                "--include-path-regex",
                "^/v1/",
                # a rule the schema cannot state (window.end after window.start) refuses
                # some schema-valid bodies, by design; every other check runs
                "--exclude-checks",
                "positive_data_acceptance",
                # the same generated requests every run: a finding reproduces, CI does not
                # flip on a rare draw
                "--seed",
                "20261206",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,  # its run cache (.schemathesis/) stays out of the checkout
        )
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    print(done.stdout[-3000:])
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
