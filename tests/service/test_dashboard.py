"""The dashboard in a real browser (headless Chromium) against the real demo: the service,
the consumer, RabbitMQ and the model, with the analyses the demo's incidents produced.

Needs Debian's chromium and chromium-driver; `.ci/run` installs them. Elsewhere the test
is skipped with the command to install them, unless CI is set, where it fails.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.browser import chromium, require_chromium


@pytest.fixture(scope="module")
def browser_paths() -> None:
    require_chromium()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    """`whyslow demo --keep-serving` on a free port, run to the end of its week; yields
    the dashboard URL and what the demo printed. Stopped with Ctrl-C, which must exit 0."""
    data, temp = tmp_path_factory.mktemp("demo-data"), tmp_path_factory.mktemp("demo-tmp")
    env = os.environ | {"XDG_DATA_HOME": str(data), "TMPDIR": str(temp), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "baselines", "demo", "--port", "0", "--keep-serving"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:  # the demo gives up by itself (readiness, drain timeouts)
        lines.append(line.rstrip())
        if "keeps serving" in line:
            break
    else:
        pytest.fail("the demo ended early:\n" + "\n".join(lines))
    url = re.search(r"dashboard at (\S+)", lines[0])
    assert url, lines[0]
    yield url.group(1), lines
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0, "\n".join(lines)


@pytest.mark.slow
def test_the_dashboard_shows_the_feed_and_the_band(browser_paths, demo, tmp_path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, printed = demo
    # both injected incidents diagnosed by the model itself, with the injected cause
    right = [line for line in printed if line.endswith("diagnosed by the model, right cause")]
    assert len(right) == 2, printed
    driver = chromium(tmp_path / "profile")
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#feed .anomaly")) == 2)
        cards = driver.find_elements(By.CSS_SELECTOR, "#feed .anomaly")
        titles = [card.find_element(By.CSS_SELECTOR, ".title").text for card in cards]
        assert any("checkout" in t for t in titles) and any("exchange-api" in t for t in titles)
        for card in cards:  # each diagnosis: its numbers, cause and summary
            assert re.search(r"p95 \d+ ms vs usual", card.text), card.text
            assert card.find_element(By.CSS_SELECTOR, ".cause").text.strip()
            assert card.find_element(By.CSS_SELECTOR, ".summary").text.strip()

        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".chart .band polygon"))
        chart = driver.find_element(By.CSS_SELECTOR, ".chart")
        assert chart.get_attribute("data-operation") == "POST /checkout"
        for part in (".band polygon", ".usual polyline", ".above polyline", ".observed polyline"):
            assert chart.find_elements(By.CSS_SELECTOR, part), part
        # the observed week spans the whole band: every hour of the synthetic week was seen
        observed = chart.find_element(By.CSS_SELECTOR, ".observed polyline")
        assert len(observed.get_attribute("points").split()) == 168
        assert len(chart.find_elements(By.CSS_SELECTOR, ".flag")) == 1  # Thursday's incident

        exchange = next(c for c in cards if "exchange-api" in c.text)
        exchange.find_element(By.CSS_SELECTOR, ".title").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".chart .flag.selected"))
        assert Select(driver.find_element(By.ID, "service")).first_selected_option.text == (
            "exchange-api"
        )
        shot = Path(os.environ.get("WHYSLOW_DASHBOARD_SCREENSHOT", tmp_path / "dashboard.png"))
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()
