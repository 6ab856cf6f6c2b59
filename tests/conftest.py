"""Real parts: RabbitMQ on 127.0.0.1:5672 and the embedded GGUF model, nothing mocked."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pika
import pika.exceptions
import pytest
import uvicorn
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from baselines.demo import free_port
from baselines.settings import Settings as ConsumerSettings
from baselines.topology import delete_topology
from service.main import create_app
from service.settings import Settings as ServiceSettings
from tests.helpers import own_topology


@pytest.fixture(scope="session", autouse=True)
def spans() -> InMemorySpanExporter:
    """Every span of the session (the global provider can be set once per process)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


@pytest.fixture(scope="session")
def service_settings(tmp_path_factory: pytest.TempPathFactory) -> ServiceSettings:
    """A fresh data dir, so each run prepares the embedded model as a first run does."""
    return ServiceSettings(data_dir=tmp_path_factory.mktemp("data"), model_path=None)


@pytest.fixture(scope="session")
def live_service(service_settings: ServiceSettings) -> Iterator[str]:
    """The real app under uvicorn on a free loopback port, model loaded; yields its URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(service_settings), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/readyz", timeout=2)
            if response.status_code == 200:
                break
            assert response.json()["status"] != "failed", response.text
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    else:
        pytest.fail("the service did not become ready within 120s")
    yield url
    server.should_exit = True
    thread.join(timeout=10)


MAX_TEST_SHARDS = 4
"""Shard queues a test may declare (``{queue}.shard.K``); the fixture removes them."""


@pytest.fixture
def amqp_settings() -> Iterator[ConsumerSettings]:
    """Consumer settings with queue and exchange names of this test only; removed after."""
    settings = own_topology("test")
    try:
        connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    except pika.exceptions.AMQPConnectionError as exc:
        pytest.fail(f"RabbitMQ must run on 127.0.0.1:5672 (make rabbitmq): {exc!r}")
    connection.close()
    yield settings
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    delete_topology(connection.channel(), settings, MAX_TEST_SHARDS)
    connection.close()
