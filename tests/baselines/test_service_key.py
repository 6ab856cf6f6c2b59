"""A service that requires API keys, and the consumer's key: real processes, the real broker.

Without WHYSLOW_SERVICE_API_KEY the service answers every report with a 401. That refuses
the consumer's key, not the report: the reports must wait in the outbox (checkpointed, so
they survive the consumer's restart), nothing may be counted dropped, and the operator is
told once what to set. Restarted with the key, the consumer delivers every one of them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from baselines.demo import free_port
from baselines.snapshot import ConsumerRecord
from baselines.synthetic import telemetry
from service.model.loader import ModelLoader
from service.settings import Settings as ServiceSettings
from service.store import AnalysisStore
from tests.baselines.test_chaos import _ready, applied, consumer_record, two_days_two_incidents
from tests.helpers import declare, publish, sample_value, wait_for

KEY = "consumer-key-7f3a"
REFUSED_LOG = "the service refused the key (401): set WHYSLOW_SERVICE_API_KEY"


def scrape(port: int) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.TransportError:
        return ""


def counted(exposition: str, name: str) -> int:
    value = sample_value(exposition, name)
    return -1 if value is None else int(value)


def analysed(url: str) -> int:
    """Reports the service analysed and keeps, one row per report id: a report delivered
    twice (as after a consumer restart) is the same analysis."""
    store = AnalysisStore(url)
    try:
        return store.count()
    finally:
        store.close()


@pytest.mark.slow
def test_a_refused_key_keeps_every_report_and_the_key_delivers_them_all(
    amqp_settings, service_settings: ServiceSettings, tmp_path: Path
) -> None:
    model = ModelLoader(service_settings).model_path()  # prepared once for the session
    port, metrics_port = free_port(), free_port()
    baselines_url = f"sqlite:///{tmp_path / 'baselines.db'}"
    analyses_url = f"sqlite:///{tmp_path / 'analyses.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHYSLOW_")}
    env["WHYSLOW_DATA_DIR"] = str(tmp_path / "data")
    service_env = env | {
        "WHYSLOW_API_KEYS": f"someone-else,{KEY}",
        "WHYSLOW_ANALYSES_URL": analyses_url,
        "WHYSLOW_MODEL_PATH": str(model),
        "WHYSLOW_N_THREADS": "2",
    }
    consumer_env = env | {
        "WHYSLOW_BASELINES_URL": baselines_url,
        "WHYSLOW_EXCHANGE": amqp_settings.exchange,
        "WHYSLOW_QUEUE": amqp_settings.queue,
        "WHYSLOW_DEAD_LETTER_EXCHANGE": amqp_settings.dead_letter_exchange,
        "WHYSLOW_DEAD_LETTER_QUEUE": amqp_settings.dead_letter_queue,
        "WHYSLOW_SERVICE_URL": f"http://127.0.0.1:{port}",
        "WHYSLOW_CHECKPOINT_SECONDS": "0.5",
        "WHYSLOW_METRICS_PORT": str(metrics_port),
    }
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (logs / f"{name}.log").open("wb") as out:
            return subprocess.Popen(
                [sys.executable, "-m", *args], env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def stop(process: subprocess.Popen[bytes], name: str) -> None:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, (logs / f"{name}.log").read_text()[-2000:]

    def record() -> ConsumerRecord | None:
        return consumer_record(baselines_url, amqp_settings.queue)

    def waiting() -> int:
        """Reports in the checkpointed outbox; -1 before the first checkpoint."""
        found = record()
        return -1 if found is None else len(found.outbox)

    week, incidents, events = two_days_two_incidents()
    messages = [events[i : i + 500] for i in range(0, len(events), 500)]

    declare(amqp_settings)
    service = start("service", ["service", "serve", "--port", str(port)], service_env)
    consumer = start("consumer-without-key", ["baselines", "consume"], consumer_env)
    try:
        wait_for(lambda: _ready(port), 120, "the service")
        publish(amqp_settings, messages)
        wait_for(lambda: applied(record()) == len(events), 180, "every event to be applied")
        wait_for(
            lambda: counted(scrape(metrics_port), "whyslow_forwarder_key_refused_total") >= 3,
            60,
            "deliveries refused for the key, retried",
        )
        refused_scrape = scrape(metrics_port)
        stop(consumer, "consumer-without-key")
        without_key = record()
        assert without_key is not None
        analysed_without_key = analysed(analyses_url)

        with_key = consumer_env | {"WHYSLOW_SERVICE_API_KEY": KEY, "WHYSLOW_METRICS_PORT": "0"}
        consumer = start("consumer-with-key", ["baselines", "consume"], with_key)
        wait_for(
            lambda: analysed(analyses_url) >= len(without_key.outbox),
            300,
            "the kept reports to be analysed with the key",
        )
        # a consumer checkpoints once it receives telemetry (a standby never does): then
        # its record no longer holds the delivered reports
        publish(amqp_settings, list(telemetry(week + timedelta(days=2), [], minutes=5)))
        wait_for(lambda: waiting() == 0, 60, "the checkpointed outbox to be empty")
        stop(consumer, "consumer-with-key")
    finally:
        for process in (consumer, service):
            if process.poll() is None:
                process.kill()
                process.wait()

    flagged = without_key.stream["stats"]["flagged"]
    kept = len(without_key.outbox)
    key_refusals = counted(refused_scrape, "whyslow_forwarder_key_refused_total")
    dropped = counted(refused_scrape, "whyslow_forwarder_refused_total")
    blocked = counted(refused_scrape, "whyslow_forwarder_blocked_by_key")
    told = (logs / "consumer-without-key.log").read_text().count(REFUSED_LOG)
    analysed_with_key = analysed(analyses_url)
    lost = flagged - analysed_with_key
    print(
        f"\nservice key: {len(events)} events, {flagged} anomalies flagged; without the key "
        f"{key_refusals} deliveries refused (401, told {told} time), {dropped} dropped, "
        f"{kept} kept in the outbox, {analysed_without_key} analysed; with the key "
        f"{analysed_with_key} analysed, lost {lost}"
    )
    assert flagged >= len(incidents)
    assert key_refusals >= 3 and blocked == 1 and told == 1
    assert dropped == 0 and kept == flagged and analysed_without_key == 0
    assert analysed_with_key == flagged and lost == 0
