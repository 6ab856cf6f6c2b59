"""deploy/docker-compose.yml: no container engine runs here, so what `docker compose up`
would refuse or get wrong is checked from the file itself."""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
from typing import Any
from urllib.parse import urlsplit

from tests.deploy.files import (
    DEPLOY,
    app_statuses,
    argv,
    compose,
    definitions,
    option,
    setting_env_names,
)

WHYSLOW_SERVICES = ("service", "router", "consumer-0", "consumer-1", "consumer-2")


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def healthcheck_port(service: dict[str, Any]) -> int:
    """The loopback port a whyslow container's healthcheck command connects to."""
    found = re.search(r"127\.0\.0\.1:(\d+)", " ".join(service["healthcheck"]["test"]))
    assert found, service["healthcheck"]["test"]
    return int(found.group(1))


def container_ports(service: dict[str, Any]) -> set[int]:
    return {int(str(mapping).split(":")[-1]) for mapping in service.get("ports", [])}


def test_the_file_is_valid_for_the_compose_specification() -> None:
    """The compose specification's JSON schema (vendored by check-jsonschema): a misspelt
    key, a wrong type or a healthcheck in the wrong place is what `compose up` refuses."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(DEPLOY / "docker-compose.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_service_is_health_checked_and_waited_for() -> None:
    """`depends_on: condition: service_healthy` on a service without a healthcheck never
    starts the dependant; every service has one, so every dependency can be waited for."""
    for name, service in services().items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert not service["healthcheck"].get("disable"), name
        for dependency, how in service.get("depends_on", {}).items():
            assert dependency in services(), f"{name} depends on unknown {dependency}"
            assert how["condition"] == "service_healthy", (name, dependency)


def test_the_service_serves_where_it_is_checked_and_published() -> None:
    """The API listens on its --port on all interfaces, its healthcheck asks readiness on
    that port, and the host port maps to it."""
    service = services()["service"]
    command = argv(service["command"])
    assert command[:2] == ["whyslow", "serve"] and option(command, "--host") == "0.0.0.0"
    port = int(option(command, "--port") or 0)
    assert healthcheck_port(service) == port and port in container_ports(service)
    path = re.search(r"127\.0\.0\.1:\d+(/\w+)", " ".join(service["healthcheck"]["test"]))
    # /readyz: 503 until the model is loaded, so the consumers wait for a ready service
    assert path and app_statuses(path.group(1)) == {path.group(1): 503}


def test_each_consumer_and_the_router_is_checked_on_its_metrics_port() -> None:
    """A consumer and the router have no HTTP endpoint but /metrics (WHYSLOW_METRICS_PORT,
    default 9464): the healthcheck must ask that port, and the port must be published."""
    from baselines.settings import Settings

    default = Settings.model_fields["metrics_port"].default
    checked = []
    for name, service in services().items():
        if not (name.startswith("consumer-") or name == "router"):
            continue
        port = int(service["environment"].get("WHYSLOW_METRICS_PORT", default))
        assert healthcheck_port(service) == port and port in container_ports(service), name
        checked.append(name)
    assert "router" in checked and len(checked) > 1


def test_the_router_the_consumers_and_the_broker_agree_on_the_shards() -> None:
    """`route --shards N` publishes to shards 0..N-1: each needs exactly one consumer
    (`consume --shard K`) and a shard queue bound with key K in the definitions, or its
    telemetry piles up unread."""
    shards = int(option(argv(services()["router"]["command"]), "--shards") or 0)
    consumed = sorted(
        int(option(argv(s["command"]), "--shard") or -1)
        for name, s in services().items()
        if name.startswith("consumer-")
    )
    assert shards > 0 and consumed == list(range(shards))
    bound = sorted(
        int(b["routing_key"]) for b in definitions()["bindings"] if b["source"] == "whyslow.shards"
    )
    assert bound == list(range(shards))


def test_every_whyslow_variable_is_one_the_code_reads() -> None:
    """pydantic-settings ignores unknown variables: a misspelt WHYSLOW_BASELINES_URL would
    silently leave the consumers on a local SQLite file each. The deprecated
    WHYSLOW_STORE_URL is still read, but means a different store in each process."""
    known = setting_env_names()
    for name in WHYSLOW_SERVICES:
        for variable in services()[name]["environment"]:
            if variable.startswith("WHYSLOW_"):
                assert variable in known, f"{name}: {variable} is not a setting"


def test_the_consumers_checkpoint_where_the_service_reads_their_profiles() -> None:
    """One variable names the baselines store on both sides: the service's profiles come
    from the database the consumers checkpoint to."""
    profiles = services()["service"]["environment"]["WHYSLOW_BASELINES_URL"]
    for name in WHYSLOW_SERVICES:
        if name.startswith("consumer-"):
            assert services()[name]["environment"]["WHYSLOW_BASELINES_URL"] == profiles, name


def test_the_consumers_can_send_a_key_wherever_the_service_requires_one() -> None:
    """With WHYSLOW_API_KEYS set the service refuses a consumer without a key (its reports
    wait in the outbox): every consumer must be able to send WHYSLOW_SERVICE_API_KEY."""
    assert "WHYSLOW_API_KEYS" in services()["service"]["environment"]
    for name in WHYSLOW_SERVICES:
        if name.startswith("consumer-"):
            assert "WHYSLOW_SERVICE_API_KEY" in services()[name]["environment"], name


def sha256_password_matches(password: str, password_hash: str) -> bool:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt(4) + sha256(salt + password))."""
    raw = base64.b64decode(password_hash)
    salt, digest = raw[:4], raw[4:]
    return hashlib.sha256(salt + password.encode()).digest() == digest


def test_the_broker_and_database_credentials_are_the_ones_defined() -> None:
    """The definitions create the only broker user (no guest when definitions load on
    boot): the whyslow processes and the Collector must log in as it, with its password,
    and the store URLs must name the database and user PostgreSQL creates."""
    users = {u["name"]: u for u in definitions()["users"]}
    logins = {
        (
            urlsplit(services()[n]["environment"]["WHYSLOW_AMQP_URL"]).username or "",
            urlsplit(services()[n]["environment"]["WHYSLOW_AMQP_URL"]).password or "",
        )
        for n in WHYSLOW_SERVICES
        if "WHYSLOW_AMQP_URL" in services()[n]["environment"]
    }
    collector = services()["otel-collector"]["environment"]
    logins.add((collector["RABBITMQ_USERNAME"], collector["RABBITMQ_PASSWORD"]))
    for user, password in logins:
        assert user in users, f"{user} is not a user in the definitions"
        assert users[user]["hashing_algorithm"] == "rabbit_password_hashing_sha256"
        assert sha256_password_matches(password, users[user]["password_hash"]), user
    postgres = services()["postgres"]["environment"]
    for name in WHYSLOW_SERVICES:
        environment = services()[name]["environment"]
        for variable in ("WHYSLOW_ANALYSES_URL", "WHYSLOW_BASELINES_URL"):
            if variable in environment:
                url = urlsplit(environment[variable])
                assert (url.scheme, url.hostname, url.port) == ("postgresql", "postgres", 5432)
                assert url.username == postgres["POSTGRES_USER"], (name, variable)
                assert url.password == postgres["POSTGRES_PASSWORD"], (name, variable)
                assert url.path == f"/{postgres['POSTGRES_DB']}", (name, variable)


def test_mounted_files_exist_where_the_broker_and_collector_read_them() -> None:
    """A bind mount of a missing file makes an empty directory in its place; the broker
    reads its definitions from the path rabbitmq.conf names, the Collector its config from
    the path its --config names."""
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).is_file(), f"{name}: {source} does not exist"
    rabbitmq_targets = {v.split(":")[1] for v in services()["rabbitmq"]["volumes"]}
    conf = (DEPLOY / "rabbitmq" / "rabbitmq.conf").read_text()
    path = re.search(r"^definitions\.local\.path\s*=\s*(\S+)", conf, re.M)
    assert path and path.group(1) in rabbitmq_targets
    collector = services()["otel-collector"]
    config = option(argv(collector["command"]), "--config")
    assert config in {v.split(":")[1] for v in collector["volumes"]}


def test_the_whyslow_services_build_the_one_dockerfile() -> None:
    for name in WHYSLOW_SERVICES:
        build = services()[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == (
            DEPLOY / "Dockerfile"
        ), name
