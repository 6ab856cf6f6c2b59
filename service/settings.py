"""Configuration of the service, read once from ``WHYSLOW_*`` environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.renamed import read_renamed


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "whyslow"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WHYSLOW_", extra="ignore")

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Where the prepared embedded model and local state are kept.",
    )
    model_path: Path | None = Field(
        None, description="A GGUF file to serve instead of the embedded SmolLM2 model."
    )
    catalogue: Path | None = Field(
        None,
        description='TOML file of notes on services (exchange-api = "CPU-bound"): the '
        "note of a report's service is quoted in its prompt.",
    )
    tuned: bool = Field(
        True,
        description="Serve the embedded model with whyslow's fine-tuned adapter merged in "
        "(false: the bare base, e.g. to compare).",
    )
    backend: Literal["local", "openai"] = Field(
        "local",
        description="local: llama.cpp in this process; openai: an OpenAI-compatible "
        "server (WHYSLOW_OPENAI_BASE_URL).",
    )
    openai_base_url: str = Field(
        "http://127.0.0.1:8080/v1", description="Base URL of the OpenAI-compatible API."
    )
    openai_model: str = Field("whyslow", description="Model name to ask that server for.")
    openai_api_key: str | None = Field(None, description="Bearer token for that server.")
    openai_response_format: Literal["json_schema", "json_object"] = Field(
        "json_schema",
        description="json_schema (OpenAI, vLLM) or json_object with a schema "
        "(llama.cpp server, llama-cpp-python's server).",
    )
    n_ctx: int = Field(2048, ge=512, description="Context window of the model, in tokens.")
    n_threads: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, description="CPU threads for decoding."
    )
    flash_attn: bool = Field(
        True, description="llama.cpp's flash attention (decodes ~1.05x faster on this CPU)."
    )
    max_tokens: int = Field(
        1400,
        ge=64,
        description="Token budget of one diagnosis; the default covers the longest answer "
        "the schema allows, so no answer is cut off.",
    )
    repeat_penalty: float = Field(
        1.0,
        ge=1.0,
        description="Penalty on the tokens a field repeats (1.0: none). The tuned model "
        "copies the facts' digits, which a penalty turns into other numbers; an untuned "
        "base may need ~1.3 against loops.",
    )
    seed: int = Field(0, description="Sampling seed; decoding is greedy, so answers repeat.")
    queue_limit: int = Field(
        8, ge=1, description="Requests waiting for the model before new ones get a 503."
    )
    request_timeout_s: float = Field(
        60.0, gt=0, description="Deadline of one analysis; past it the rule engine answers."
    )
    cache_ttl_s: float = Field(
        600.0, ge=0, description="A report like one analysed this recently gets its diagnosis."
    )
    api_keys: str = Field(
        "",
        description="Comma-separated API keys; when set, every endpoint but /healthz and "
        "/readyz needs one (Authorization: Bearer KEY or X-API-Key: KEY).",
    )
    max_body_bytes: int = Field(65_536, ge=1024, description="Larger request bodies get a 413.")
    cors_origins: str = Field(
        "", description="Comma-separated origins allowed to call the API from a browser."
    )
    webhook_url: str | None = Field(
        None, description="POST each incident opened and resolved here, as JSON."
    )
    webhook_secret: SecretStr | None = Field(
        None,
        description="Sign webhook posts: X-Whyslow-Signature: sha256=<HMAC-SHA256 of the "
        "body>, with X-Whyslow-Timestamp.",
    )
    slack_webhook_url: SecretStr | None = Field(
        None, description="A Slack incoming webhook: a message per incident opened and resolved."
    )
    alertmanager_url: str | None = Field(
        None, description="Alertmanager (http://alertmanager:9093): an alert per incident."
    )
    alertmanager_resend_seconds: float = Field(
        60.0, gt=0, description="Post an open incident's alert to Alertmanager again this often."
    )
    alertmanager_resend_for_seconds: float = Field(
        21_600.0,
        gt=0,
        description="Re-sends stop this long after the incident's latest report if it is "
        "never resolved (Alertmanager then resolves the alert itself).",
    )
    grafana_url: str | None = Field(
        None,
        description="Grafana (http://grafana:3000): an annotation per incident, a region "
        "once it is resolved.",
    )
    grafana_token: SecretStr | None = Field(
        None,
        description="A Grafana service-account token (Editor), sent as Authorization: Bearer.",
    )
    grafana_dashboard_uid: str | None = Field(
        None,
        description="Annotate this dashboard only; unset: organisation annotations, shown "
        "where an annotation query matches their tags.",
    )
    notify_retry_max_seconds: float = Field(
        300.0, gt=0, description="Longest wait between two tries of a failed notification."
    )
    notify_rate_per_minute: int = Field(
        30, ge=1, description="Notifications each target gets per minute at most; more wait."
    )
    trace_url_template: str | None = Field(
        None,
        description="A trace's URL in the tracing UI, {trace_id} replaced: "
        "http://jaeger:16686/trace/{trace_id}.",
    )
    dashboard_url: str | None = Field(
        None,
        description="The service's URL as people reach it: notifications link the anomaly "
        "on its dashboard.",
    )
    adapters_dir: Path | None = Field(
        None,
        description="LoRA adapters (NAME.gguf) selectable per request; default: "
        "the data directory's adapters/ folder.",
    )
    analyses_url: str | None = Field(
        None,
        description="Where analyses are kept: sqlite:///path or postgresql://...; default: "
        "a SQLite file in the data directory. Formerly WHYSLOW_STORE_URL, still read.",
    )
    baselines_url: str | None = Field(
        None,
        description="The consumers' store, for baseline profiles; default: its default "
        "SQLite file in the data directory.",
    )

    incident_resolve_after_seconds: float = Field(
        900.0,
        gt=0,
        description="An incident of the consumers resolves itself when none of its reports "
        "arrived for this long.",
    )
    alert_service_labels: str = Field(
        "service,service_name,job",
        description="Comma-separated alert labels naming the service, the first present wins "
        "(POST /v1/alerts/alertmanager).",
    )
    alert_operation_labels: str = Field(
        "operation,span_name,route,handler",
        description="Comma-separated alert labels naming the operation, the first present wins.",
    )

    @model_validator(mode="before")
    @classmethod
    def _old_store_variable(cls, data: Any) -> Any:
        """The service read its analyses store from WHYSLOW_STORE_URL."""
        return read_renamed(data, "analyses_url", "WHYSLOW_STORE_URL", "WHYSLOW_ANALYSES_URL")

    def resolved_baselines_url(self) -> str:
        return self.baselines_url or f"sqlite:///{self.data_dir / 'baselines.db'}"

    def resolved_adapters_dir(self) -> Path:
        return self.adapters_dir or self.data_dir / "adapters"

    def service_labels(self) -> list[str]:
        return [label.strip() for label in self.alert_service_labels.split(",") if label.strip()]

    def operation_labels(self) -> list[str]:
        return [label.strip() for label in self.alert_operation_labels.split(",") if label.strip()]

    def keys(self) -> list[str]:
        return [key.strip() for key in self.api_keys.split(",") if key.strip()]

    def origins(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    def resolved_analyses_url(self) -> str:
        return self.analyses_url or f"sqlite:///{self.data_dir / 'analyses.db'}"
