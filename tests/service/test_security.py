"""API keys, body limits and CORS, on the real app (the rule engine answers: no model file,
so these run in milliseconds)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.settings import Settings
from tests.service.serving import serving

REPORT = {"service": "api", "operation": "GET /x", "latency_ms": {"p95": 900}}


@pytest.fixture
def client(tmp_path):
    settings = Settings(
        data_dir=tmp_path,
        model_path=tmp_path / "none.gguf",
        api_keys="k1, k2",
        max_body_bytes=2048,
        cors_origins="https://ops.example",
    )
    with serving(settings) as client:
        yield client


def test_health_is_open_and_everything_else_needs_a_key(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    for method, path in (("GET", "/docs"), ("GET", "/openapi.json"), ("POST", "/v1/analyze")):
        response = client.request(method, path, json=REPORT)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert (
        client.post("/v1/analyze", json=REPORT, headers={"Authorization": "Bearer k1"}).status_code
        == 200
    )
    assert client.post("/v1/analyze", json=REPORT, headers={"X-API-Key": "k2"}).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer k3"},
        {"Authorization": "Basic k1"},
        {"Authorization": "Bearer k1x"},
        {"Authorization": "Bearer "},
        {"X-API-Key": ""},
        {"X-API-Key": "K1"},
        {"Authorization": "k1"},
    ],
)
def test_wrong_keys_and_bypass_attempts_are_refused(client: TestClient, headers) -> None:
    assert client.post("/v1/analyze", json=REPORT, headers=headers).status_code == 401


@pytest.mark.parametrize(
    "path", ["/healthz/../v1/analyze", "/v1/analyze?next=/healthz", "//v1/analyze", "/v1/analyze/"]
)
def test_paths_dressed_as_health_are_refused(client: TestClient, path: str) -> None:
    assert client.post(path, json=REPORT).status_code in (401, 404)
    assert client.post(path, json=REPORT).status_code != 200


def test_the_dashboard_page_is_open_but_its_data_needs_a_key(client: TestClient) -> None:
    """The page holds no data and asks for a key; what it shows comes from the API."""
    page = client.get("/dashboard/")
    assert page.status_code == 200 and "<title>whyslow</title>" in page.text
    assert client.get("/dashboard/app.js").status_code == 200
    for path in ("/v1/anomalies", "/v1/baselines", "/v1/baselines/checkout"):
        assert client.get(path).status_code == 401, path
    assert client.get("/v1/baselines", headers={"X-API-Key": "k1"}).json() == {"services": []}


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/../v1/anomalies",
        "/dashboard/%2e%2e/v1/anomalies",
        "/dashboard/..%2Fv1%2Fanomalies",
        "/dashboardx/../v1/anomalies",
        "/dashboard-v1/anomalies",
    ],
)
def test_paths_dressed_as_the_dashboard_get_no_data(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code in (401, 404), (path, response.status_code)


def test_an_oversized_body_is_a_413_by_header_or_while_streaming(client: TestClient) -> None:
    key = {"X-API-Key": "k1"}
    big = REPORT | {"evidence": ["x" * 400] * 8}
    assert client.post("/v1/analyze", json=big, headers=key).status_code == 413

    def chunks():
        yield b'{"service": "api", "operation": "GET /x", "latency_ms": {"p95": 9}, "e": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    response = client.post(
        "/v1/analyze", content=chunks(), headers=key | {"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_cors_preflight_for_a_configured_origin(client: TestClient) -> None:
    response = client.options(
        "/v1/analyze",
        headers={
            "Origin": "https://ops.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key, content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://ops.example"
    other = client.options(
        "/v1/analyze",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in other.headers
