"""deploy/rabbitmq: the definitions the broker imports on boot must be exactly what the
consumers and the router declare, or their own declarations fail with PRECONDITION_FAILED
(an argument differs) or the stack depends on a consumer having run first (one is missing).
Proved against the real broker: the definitions are imported by the broker itself
(`rabbitmqctl import_definitions`) under names of this test only."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pika.exceptions
import pytest

from baselines.settings import Settings
from baselines.topology import declare_shard, declare_topology
from tests.deploy.files import DEPLOY, compose, definitions

Listing = dict[str, Any]


def prefixed(name: str, prefix: str) -> str:
    return prefix + name if name.startswith("whyslow.") else name


def prefixed_definitions(prefix: str) -> dict[str, Any]:
    """The topology part of the definitions under this test's names. Users, vhosts and
    permissions are left out: the broker the tests share keeps its own."""
    d = definitions()
    return {
        "exchanges": [{**x, "name": prefixed(x["name"], prefix)} for x in d["exchanges"]],
        "queues": [
            {
                **q,
                "name": prefixed(q["name"], prefix),
                "arguments": {
                    k: prefixed(v, prefix) if isinstance(v, str) else v
                    for k, v in q["arguments"].items()
                },
            }
            for q in d["queues"]
        ],
        "bindings": [
            {
                **b,
                "source": prefixed(b["source"], prefix),
                "destination": prefixed(b["destination"], prefix),
            }
            for b in d["bindings"]
        ],
    }


def prefixed_settings(prefix: str, shard: int | None = None) -> Settings:
    """Consumer settings naming the prefixed objects (defaults: the definitions' names)."""
    s = Settings()
    return Settings(
        exchange=prefix + s.exchange,
        queue=prefix + s.queue,
        dead_letter_exchange=prefix + s.dead_letter_exchange,
        dead_letter_queue=prefix + s.dead_letter_queue,
        shard_exchange=prefix + s.shard_exchange,
        shard=shard,
    )


def rabbitmqctl(*args: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        ["rabbitmqctl", "-q", *args, "--formatter", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout) if result.stdout.strip() else []


def arguments(value: Any, prefix: str) -> dict[str, Any]:
    """Queue arguments as name -> value, whatever AMQP type each was declared with (the
    broker treats a long and a signed int of the same value as equivalent)."""
    pairs = value.items() if isinstance(value, dict) else ((a[0], a[-1]) for a in value)
    return {k: v.removeprefix(prefix) if isinstance(v, str) else v for k, v in pairs}


def broker_state(prefix: str) -> Listing:
    """Exchanges, queues and bindings named with ``prefix``, as the broker lists them,
    with the prefix taken off (so two prefixes can be compared)."""
    exchanges = {
        (x["name"].removeprefix(prefix), x["type"], x["durable"], x["auto_delete"])
        for x in rabbitmqctl("list_exchanges", "name", "type", "durable", "auto_delete")
        if x["name"].startswith(prefix)
    }
    queues = {
        q["name"].removeprefix(prefix): (
            q["durable"],
            q["auto_delete"],
            json.dumps(arguments(q["arguments"], prefix), sort_keys=True),
        )
        for q in rabbitmqctl("list_queues", "name", "durable", "auto_delete", "arguments")
        if q["name"].startswith(prefix)
    }
    bindings = {
        (
            b["source_name"].removeprefix(prefix),
            b["destination_name"].removeprefix(prefix),
            b["routing_key"].removeprefix(prefix),
        )
        for b in rabbitmqctl(
            "list_bindings", "source_name", "destination_name", "destination_kind", "routing_key"
        )
        if b["source_name"].startswith(prefix)  # not the default exchange's implicit ones
    }
    return {"exchanges": exchanges, "queues": queues, "bindings": bindings}


@pytest.fixture
def prefixes() -> Iterator[tuple[str, str]]:
    """Two name prefixes of this test only (imported, declared by the code); every object
    named with either is deleted afterwards."""
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is needed to import definitions (install rabbitmq-server)")
    run = uuid.uuid4().hex[:8]
    pair = (f"test.{run}.defs.", f"test.{run}.code.")
    yield pair
    connection = pika.BlockingConnection(pika.URLParameters(Settings().amqp_url))
    channel = connection.channel()
    for prefix in pair:
        for q in definitions()["queues"]:
            channel.queue_delete(prefixed(q["name"], prefix))
        for x in definitions()["exchanges"]:
            channel.exchange_delete(prefixed(x["name"], prefix))
    connection.close()


def import_definitions(topology: dict[str, Any], prefix: str) -> None:
    """Import as the broker does on boot. rabbitmqctl runs as the broker's user, who cannot
    read pytest's private temporary folders (and this version cannot read standard input),
    so the file is written world-readable in the system's temporary directory. The import
    is asynchronous: wait for its queues."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=tempfile.gettempdir()) as file:
        json.dump(topology, file)
        file.flush()
        os.chmod(file.name, 0o644)
        subprocess.run(
            ["rabbitmqctl", "-q", "import_definitions", file.name],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while len(broker_state(prefix)["queues"]) < len(topology["queues"]):
            if time.monotonic() > deadline:
                pytest.fail("the broker did not import the definitions within 30 s")
            time.sleep(0.3)


def test_the_definitions_are_exactly_what_the_consumers_and_router_declare(
    prefixes: tuple[str, str],
) -> None:
    imported, declared = prefixes
    shards = [
        int(q["name"].rsplit(".", 1)[1]) for q in definitions()["queues"] if ".shard." in q["name"]
    ]
    import_definitions(prefixed_definitions(imported), imported)
    from_definitions = broker_state(imported)

    connection = pika.BlockingConnection(pika.URLParameters(Settings().amqp_url))
    try:
        # what the router (every shard) and each shard's consumer declare, on fresh names
        channel = connection.channel()
        declare_topology(channel, prefixed_settings(declared))
        for shard in shards:
            declare_shard(channel, prefixed_settings(declared), shard)
        assert broker_state(declared) == from_definitions

        # and on the imported objects: the same arguments, so no PRECONDITION_FAILED
        for shard in shards:
            channel = connection.channel()
            try:
                declare_topology(channel, prefixed_settings(imported, shard))
            except pika.exceptions.ChannelClosedByBroker as exc:
                pytest.fail(f"shard {shard}'s consumer cannot declare the imported queues: {exc}")
    finally:
        connection.close()
    assert broker_state(imported) == from_definitions  # nothing the code had to add


def conf(name: str) -> dict[str, str]:
    text = (DEPLOY / "rabbitmq" / name).read_text()
    return dict(re.findall(r"^([\w.]+)\s*=\s*(\S+)", text, re.M))


def test_the_broker_loads_the_definitions_and_serves_the_management_ui() -> None:
    """On boot the broker imports the file rabbitmq.conf names (the one compose mounts),
    and the management plugin is enabled on the port compose publishes."""
    settings = conf("rabbitmq.conf")
    assert settings["definitions.import_backend"] == "local_filesystem"
    rabbitmq = compose()["services"]["rabbitmq"]
    mounts = dict(v.split(":")[:2] for v in rabbitmq["volumes"])
    assert mounts["./rabbitmq/definitions.json"] == settings["definitions.local.path"]
    assert mounts["./rabbitmq/enabled_plugins"] == "/etc/rabbitmq/enabled_plugins"
    plugins = (DEPLOY / "rabbitmq" / "enabled_plugins").read_text()
    assert re.fullmatch(r"\[[\w,\s]+\]\.\s*", plugins), "not an Erlang list term"
    assert "rabbitmq_management" in plugins
    published = {int(p.split(":")[-1]) for p in rabbitmq["ports"]}
    assert int(settings["management.tcp.port"]) in published
    assert int(settings["listeners.tcp.default"]) in published
