"""deploy/kong/kong.yml (DB-less declarative config): what Kong would refuse to load, and
what would load but expose or break the service."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from tests.deploy.files import DEPLOY, app_statuses, collector_config, compose, load_yaml

BUNDLED = {
    # Kong 3.9's bundled plugins (kong/constants.lua), the ones a gateway for whyslow may use
    "key-auth",
    "basic-auth",
    "jwt",
    "acl",
    "cors",
    "ip-restriction",
    "rate-limiting",
    "request-size-limiting",
    "request-termination",
    "correlation-id",
    "opentelemetry",
    "prometheus",
    "proxy-cache",
}
REQUIRED = {
    # each plugin's config fields without a default (its schema.lua)
    "key-auth": set(),
    "rate-limiting": set(),
    "opentelemetry": {"traces_endpoint"},
}
LIMIT_PERIODS = {"second", "minute", "hour", "day", "month", "year"}


def kong() -> dict[str, Any]:
    return load_yaml(DEPLOY / "kong" / "kong.yml")


def plugins() -> list[tuple[str, dict[str, Any]]]:
    """(where, plugin) for every plugin: global, on a service, or on a route."""
    config = kong()
    found = [("global", p) for p in config.get("plugins", [])]
    for service in config["services"]:
        found += [(service["name"], p) for p in service.get("plugins", [])]
        for route in service.get("routes", []):
            found += [(route["name"], p) for p in route.get("plugins", [])]
    return found


def routes() -> list[dict[str, Any]]:
    return [r for s in kong()["services"] for r in s.get("routes", [])]


def test_it_is_a_declarative_config_of_the_3_format() -> None:
    assert kong()["_format_version"] == "3.0"


def test_plugins_are_bundled_and_have_their_required_config() -> None:
    for where, plugin in plugins():
        assert plugin["name"] in BUNDLED, f"{where}: {plugin['name']} is not a bundled plugin"
        missing = REQUIRED.get(plugin["name"], set()) - set(plugin.get("config", {}))
        assert not missing, f"{where}: {plugin['name']} needs {missing}"
        if plugin["name"] == "rate-limiting":
            config = plugin["config"]
            assert LIMIT_PERIODS & set(config), f"{where}: rate-limiting without a limit"
            # DB-less Kong has no database for the cluster policy's counters
            assert config.get("policy", "local") != "cluster", where


def test_the_api_needs_a_key_that_kong_checks_in_the_header_the_service_reads() -> None:
    api = next(r for r in routes() if "/v1" in r["paths"])
    auth = [p for p in api.get("plugins", []) if p["name"] == "key-auth"]
    assert auth and auth[0]["config"]["key_names"] == ["X-API-Key"]
    assert all(c["keyauth_credentials"] for c in kong()["consumers"])


def test_routes_reach_the_service_unstripped_and_expose_nothing_else() -> None:
    """Kong matches path prefixes: a "/" route would expose /metrics and /docs. Paths are
    passed as they are (strip_path false), and each is one the app serves."""
    service = kong()["services"][0]
    url = urlsplit(service["url"])
    assert url.port == 8000 and url.path in ("", "/")
    paths = [path for r in routes() for path in r["paths"]]
    assert sorted(paths) == ["/dashboard", "/v1"]
    assert all(r.get("strip_path") is False for r in routes())
    for hidden in ("/metrics", "/healthz", "/readyz", "/docs", "/openapi.json"):
        assert not any(hidden.startswith(p) for p in paths), hidden
    statuses = app_statuses("/dashboard/", "/v1/anomalies")
    assert statuses == {"/dashboard/": 200, "/v1/anomalies": 200}, statuses


def test_traces_go_to_the_collector_otlp_http_receiver() -> None:
    otel = next(p for where, p in plugins() if p["name"] == "opentelemetry")
    url = urlsplit(otel["config"]["traces_endpoint"])
    http = collector_config()["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert url.hostname in compose()["services"] and url.hostname == "otel-collector"
    assert url.port == int(http.rsplit(":", 1)[1]) and url.path == "/v1/traces"
