"""Configuration of the consumer, read once from ``WHYSLOW_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from baselines.detect import DetectorConfig
from baselines.judge import Thresholds
from baselines.store import default_store_url
from service.renamed import read_renamed
from service.settings import default_data_dir


def shard_queue(queue: str, shard: int) -> str:
    return f"{queue}.shard.{shard}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WHYSLOW_", extra="ignore")

    amqp_url: str = Field(
        "amqp://guest:guest@127.0.0.1:5672/%2F", description="RabbitMQ connection URL."
    )
    exchange: str = Field("whyslow.telemetry", description="Topic exchange telemetry is sent to.")
    queue: str = Field("whyslow.telemetry", description="Durable queue the consumer reads.")
    dead_letter_exchange: str = Field(
        "whyslow.dlx", description="Where unparseable messages go, with the reason in a header."
    )
    dead_letter_queue: str = Field(
        "whyslow.telemetry.dlq", description="Queue bound to the dead-letter exchange."
    )
    shard_exchange: str = Field(
        "whyslow.shards", description="Where `whyslow route` sends each shard's events."
    )
    shard: int | None = Field(
        None, ge=0, description="The shard this consumer reads, behind `whyslow route`."
    )
    prefetch: int = Field(200, ge=2, description="Unacknowledged messages held by the consumer.")
    queue_type: Literal["quorum", "classic"] = Field(
        "quorum", description="Quorum (replicated, delivery limit) or classic telemetry queue."
    )
    delivery_limit: int = Field(
        20, ge=1, description="Quorum queues: deliveries before the broker dead-letters a message."
    )
    service_url: str = Field(
        "http://127.0.0.1:8000", description="Base URL of the whyslow service (POST /v1/analyze)."
    )
    service_api_key: SecretStr | None = Field(
        None,
        description="Key sent to the service (X-API-Key) when its WHYSLOW_API_KEYS is set; "
        "without it the service refuses every report, which then waits in the outbox.",
    )
    forward_timeout_s: float = Field(120.0, gt=0, description="Timeout of one analyze call.")
    timezone: str = Field(
        "UTC", description="IANA zone in which hour-of-week is computed (business hours)."
    )
    window_seconds: int = Field(60, ge=1, description="Detection window length.")
    min_window_count: int = Field(10, ge=1, description="Spans a window needs to be judged.")
    min_baseline_windows: int = Field(
        30, ge=1, description="Windows of history a baseline needs before it may flag."
    )
    surprise: float = Field(
        1e-4,
        gt=0,
        lt=0.5,
        description="Alert when a series' recent windows are this improbable under its own "
        "learnt score distribution (tail probability)...",
    )
    flag_ratio: float = Field(2.0, ge=1, description="...and at least ratio x usual p95...")
    min_delta_ms: float = Field(20.0, ge=0, description="...and this many ms above usual...")
    z_clear: float = Field(
        2.5,
        gt=0,
        description="...and this many robust deviations above usual; an open incident "
        "closes below it...",
    )
    clear_ratio: float = Field(1.5, ge=1, description="...or below ratio x usual.")
    cooldown_seconds: int = Field(
        300, ge=0, description="No new alert for a series this soon after its last one closed."
    )
    allowed_lateness_seconds: float = Field(
        5.0, ge=0, description="How long a window waits for out-of-order events before closing."
    )
    max_series: int = Field(
        50_000, ge=1, description="Series kept in memory; events of further ones are counted."
    )
    learn_minutes: float = Field(
        0.0,
        ge=0,
        description="Minutes of telemetry (event time, from the first window) in which the "
        "consumer only learns: nothing alerts, and every error template seen becomes usual. "
        "For a first install beside a running system; 0 alerts as soon as baselines allow.",
    )

    data_dir: Path = Field(
        default_factory=default_data_dir, description="Where the default SQLite store lives."
    )
    baselines_url: str | None = Field(
        None,
        description="Where baselines are checkpointed: sqlite:///path or postgresql://...; "
        "default: a SQLite file in the data directory. The service reads its profiles from "
        "the same variable. Formerly WHYSLOW_STORE_URL, still read.",
    )
    metrics_port: int = Field(
        9464, ge=0, le=65535, description="Port of the consumer's /metrics; 0 turns it off."
    )
    checkpoint_seconds: float = Field(
        60.0, gt=0, description="How often changed baselines are checkpointed."
    )

    def consumed_queue(self) -> str:
        """The queue this consumer reads: the ingest queue, or its shard's."""
        return self.queue if self.shard is None else shard_queue(self.queue, self.shard)

    def resolved_baselines_url(self) -> str:
        return self.baselines_url or default_store_url(self.data_dir)

    def api_key(self) -> str | None:
        """The service key, or None when unset or empty (no header is sent)."""
        key = self.service_api_key.get_secret_value() if self.service_api_key else ""
        return key.strip() or None

    @model_validator(mode="before")
    @classmethod
    def _old_store_variable(cls, data: Any) -> Any:
        """The consumer read its baselines store from WHYSLOW_STORE_URL."""
        return read_renamed(data, "baselines_url", "WHYSLOW_STORE_URL", "WHYSLOW_BASELINES_URL")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    def detector_config(self) -> DetectorConfig:
        return DetectorConfig(
            window_seconds=self.window_seconds,
            min_window_count=self.min_window_count,
            allowed_lateness_seconds=self.allowed_lateness_seconds,
            timezone=self.timezone,
            max_series=self.max_series,
            learn_seconds=60.0 * self.learn_minutes,
            thresholds=Thresholds(
                surprise=self.surprise,
                z_clear=self.z_clear,
                flag_ratio=self.flag_ratio,
                clear_ratio=self.clear_ratio,
                min_delta=self.min_delta_ms,
                min_history=self.min_baseline_windows,
                cooldown_seconds=self.cooldown_seconds,
            ),
        )
