"""/docs and /redoc work with no internet access: the real service under uvicorn, loaded in
headless Chromium that can resolve no host name but the loopback address, so anything the
pages fetched from a CDN would fail. No model file: the pages need only the schema.

The browser tests need Debian's chromium and chromium-driver (`.ci/run` installs them);
elsewhere they are skipped with the command to install them, unless CI is set, where they
fail.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from baselines.demo import free_port
from service.main import create_app
from service.settings import Settings
from tests.service.browser import chromium, require_chromium
from tests.service.serving import serving

TITLE = "whyslow"
"""The API's title, which both pages show."""


def settings_without_model(data_dir: Path, **extra: str) -> Settings:
    return Settings(data_dir=data_dir, model_path=data_dir / "none.gguf", **extra)


def test_the_pages_and_their_assets_come_from_the_service_without_model(tmp_path) -> None:
    """Each page names only its own paths (no http(s):// URL at all), and every script,
    stylesheet and icon it names is served."""
    with serving(settings_without_model(tmp_path)) as client:
        for page, assets in (
            ("/docs", 3),  # Swagger UI's script and stylesheet, the icon
            ("/redoc", 2),  # ReDoc's script, the icon
        ):
            response = client.get(page)
            assert response.status_code == 200, page
            assert not re.findall(r"https?://", response.text), response.text
            named = re.findall(r'(?:src|href)="(/[^"]+)"', response.text)
            assert len(named) == assets, named
            for url in named:
                asset = client.get(url)
                assert asset.status_code == 200, url
                assert len(asset.content) > 1000, url
            assert "'/openapi.json'" in response.text or '"/openapi.json"' in response.text


def test_the_pages_let_the_browser_load_from_the_service_only_without_model(tmp_path) -> None:
    with serving(settings_without_model(tmp_path)) as client:
        for page in ("/docs", "/redoc"):
            policy = client.get(page).headers["content-security-policy"]
            directives = [d.split() for d in policy.split("; ")]
            assert ["default-src", "'self'"] in directives, policy
            # no other origin, nor a scheme that reaches one
            sources = {source for directive in directives for source in directive[1:]}
            assert sources <= {"'self'", "'unsafe-inline'", "data:", "blob:"}, policy


def test_the_pages_and_their_assets_need_a_key_as_the_schema_does_without_model(
    tmp_path,
) -> None:
    with serving(settings_without_model(tmp_path, api_keys="k1")) as client:
        for path in ("/docs", "/redoc", "/docs/oauth2-redirect", "/docs/assets/swagger-ui.css"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"X-API-Key": "k1"}).status_code == 200, path


def test_the_pages_honour_the_root_path_of_a_proxy_without_model(tmp_path) -> None:
    with serving(settings_without_model(tmp_path), root_path="/whyslow") as client:
        page = client.get("/docs").text
        assert "/whyslow/docs/assets/swagger-ui-bundle.js" in page
        assert "/whyslow/openapi.json" in page


@pytest.fixture(scope="module")
def browser_paths() -> None:
    require_chromium()


@pytest.fixture(scope="module")
def live_without_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service under uvicorn on a free loopback port, with no model; yields its URL."""
    port = free_port()
    app = create_app(settings_without_model(tmp_path_factory.mktemp("data")))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the service did not start within 60 s")
        time.sleep(0.1)
    assert httpx.get(f"{url}/healthz").status_code == 200
    yield url
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def offline_chromium(browser_paths, tmp_path) -> Iterator:
    """Headless Chromium for which no host name but 127.0.0.1 resolves (a CDN's fails with
    ERR_NAME_NOT_RESOLVED), logging each request it makes."""
    driver = chromium(
        tmp_path / "profile",
        "--no-proxy-server",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        capabilities={"goog:loggingPrefs": {"performance": "ALL", "browser": "ALL"}},
    )
    try:
        yield driver
    finally:
        driver.quit()


def sent_requests(performance_log: list[dict]) -> tuple[list[str], list[str]]:
    """The URLs the page asked for from Chrome's DevTools log, as (sent, refused by the
    Content Security Policy). Inline data, blobs and the browser's own pages (the new tab
    it starts with), which never touch the network, are left out."""
    asked: dict[str, str] = {}
    refused: set[str] = set()
    for entry in performance_log:
        message = json.loads(entry["message"])["message"]
        params = message["params"]
        if message["method"] == "Network.requestWillBeSent":
            asked[params["requestId"]] = params["request"]["url"]
        elif message["method"] == "Network.loadingFailed" and params.get("blockedReason"):
            assert params["blockedReason"] == "csp", params
            refused.add(params["requestId"])
    urls = {
        key: url for key, url in asked.items() if not url.startswith(("data:", "blob:", "chrome:"))
    }
    sent = [url for key, url in urls.items() if key not in refused]
    return sent, [url for key, url in urls.items() if key in refused]


def assert_offline(driver, url: str) -> list[str]:
    """The page sent requests to the service only, and logged no error but the policy's
    refusals; returns the URLs the policy refused."""
    sent, refused = sent_requests(driver.get_log("performance"))
    assert sent and all(u.startswith(url + "/") for u in sent), sent
    errors = [
        e
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and "Content Security Policy" not in e["message"]
    ]
    assert not errors, errors
    return refused


def operations(url: str) -> dict[str, tuple[str, str]]:
    """The schema's operations: operationId -> (method, path)."""
    schema = httpx.get(f"{url}/openapi.json").json()
    return {
        operation["operationId"]: (method.upper(), path)
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    }


@pytest.mark.slow
def test_swagger_ui_renders_the_operations_offline_without_model(
    live_without_model: str, offline_chromium
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = offline_chromium
    driver.get(f"{live_without_model}/docs")
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock"))
    assert driver.find_element(By.CSS_SELECTOR, ".info .title").text.startswith(TITLE)
    shown = sorted(
        (
            block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text,
            block.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute("data-path"),
        )
        for block in driver.find_elements(By.CSS_SELECTOR, ".opblock")
    )
    expected = sorted(operations(live_without_model).values())
    assert ("POST", "/v1/analyze") in shown and shown == expected, shown
    assert assert_offline(driver, live_without_model) == []


@pytest.mark.slow
def test_redoc_renders_the_operations_offline_without_model(
    live_without_model: str, offline_chromium
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = offline_chromium
    driver.get(f"{live_without_model}/redoc")
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".api-info h1"))
    assert driver.find_element(By.CSS_SELECTOR, ".api-info h1").text.startswith(TITLE)
    sections = {  # "operation/ID", or "tag/TAG/operation/ID" (each in the menu and the body)
        element.get_attribute("data-section-id").rpartition("operation/")[2]
        for element in driver.find_elements(By.CSS_SELECTOR, "[data-section-id*='operation/']")
    }
    expected = operations(live_without_model)
    assert "analyze_v1_analyze_post" in sections and sections == set(expected), sections
    # ReDoc's side menu shows Redocly's logo from its CDN: the policy keeps it unrequested
    refused = assert_offline(driver, live_without_model)
    assert refused in ([], ["https://cdn.redoc.ly/redoc/logo-mini.svg"]), refused
