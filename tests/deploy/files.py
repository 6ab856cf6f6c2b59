"""The deploy configs as the tests read them, and the facts several tests compare."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def compose() -> dict[str, Any]:
    """docker-compose.yml with its YAML anchors and merge keys resolved, as Compose reads it."""
    return load_yaml(DEPLOY / "docker-compose.yml")


def definitions() -> dict[str, Any]:
    return json.loads((DEPLOY / "rabbitmq" / "definitions.json").read_text(encoding="utf-8"))


def collector_config() -> dict[str, Any]:
    return load_yaml(DEPLOY / "otel" / "collector.yaml")


def k8s_manifests() -> list[tuple[str, dict[str, Any]]]:
    """(file name, object) for every Kubernetes object under deploy/k8s."""
    return [
        (path.name, doc)
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if doc
    ]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    matches = [o for _, o in k8s_manifests() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name} in deploy/k8s, found {len(matches)}"
    return matches[0]


def argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def option(command: list[str], name: str) -> str | None:
    """The value of ``--name VALUE`` (or ``--name=VALUE``) in an argv, None if absent."""
    for i, word in enumerate(command):
        if word == name and i + 1 < len(command):
            return command[i + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    return None


def setting_env_names() -> set[str]:
    """Every WHYSLOW_* variable the consumer or the service reads: their pydantic-settings
    fields, and the few read from os.environ directly (WHYSLOW_LOG_FORMAT)."""
    from baselines.settings import Settings as ConsumerSettings
    from service.settings import Settings as ServiceSettings

    direct = {
        match
        for package in ("baselines", "service")
        for source in (ROOT / package).rglob("*.py")
        for match in re.findall(r"environ(?:\.get)?[(\[]\s*[\"'](WHYSLOW_\w+)", source.read_text())
    }
    return direct | {
        f"WHYSLOW_{name.upper()}"
        for settings in (ConsumerSettings, ServiceSettings)
        for name in settings.model_fields
    }


def app_statuses(*paths: str) -> dict[str, int]:
    """What the real service app answers on each path, before its model is loaded (the
    lifespan is not run): a probe or healthcheck on a path it does not route gets 404."""
    import tempfile

    from fastapi.testclient import TestClient

    from service.main import create_app
    from service.settings import Settings

    with tempfile.TemporaryDirectory() as data:
        app = create_app(Settings(data_dir=Path(data)))
        try:
            client = TestClient(app)
            return {path: client.get(path).status_code for path in paths}
        finally:
            app.state.store.close()
