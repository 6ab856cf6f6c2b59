"""The stores' variables, named for what they point at, and the old WHYSLOW_STORE_URL.

WHYSLOW_STORE_URL meant the consumer's baselines to the consumer and the analyses to the
service. A deployment that still sets it must keep working, each process reading it as it
did, and be told the new name; where both are set the new one wins."""

from __future__ import annotations

import logging
import warnings

import pytest

from baselines.settings import Settings as ConsumerSettings
from service.settings import Settings as ServiceSettings

OLD = "WHYSLOW_STORE_URL"
STORE_VARIABLES = (OLD, "WHYSLOW_BASELINES_URL", "WHYSLOW_ANALYSES_URL")


@pytest.fixture(autouse=True)
def no_store_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*STORE_VARIABLES, "WHYSLOW_SERVICE_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def test_the_new_names_are_read_without_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHYSLOW_BASELINES_URL", "sqlite:///b.db")
    monkeypatch.setenv("WHYSLOW_ANALYSES_URL", "sqlite:///a.db")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        consumer, service = ConsumerSettings(), ServiceSettings()
    assert consumer.resolved_baselines_url() == "sqlite:///b.db"
    assert service.resolved_analyses_url() == "sqlite:///a.db"
    assert service.resolved_baselines_url() == "sqlite:///b.db"  # the same store, one name


def test_the_old_name_still_means_the_consumers_baselines(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(OLD, "postgresql://db/baselines")
    with pytest.warns(DeprecationWarning, match="set WHYSLOW_BASELINES_URL instead"):
        settings = ConsumerSettings()
    assert settings.resolved_baselines_url() == "postgresql://db/baselines"
    assert any("WHYSLOW_BASELINES_URL" in r.getMessage() for r in caplog.records)
    assert all(r.levelno == logging.WARNING for r in caplog.records if OLD in r.getMessage())


def test_the_old_name_still_means_the_services_analyses(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(OLD, "postgresql://db/analyses")
    with pytest.warns(DeprecationWarning, match="set WHYSLOW_ANALYSES_URL instead"):
        settings = ServiceSettings()
    assert settings.resolved_analyses_url() == "postgresql://db/analyses"
    assert settings.baselines_url is None  # the service never read its baselines from it
    assert any("WHYSLOW_ANALYSES_URL" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("settings_class", "new", "resolved"),
    [
        (ConsumerSettings, "WHYSLOW_BASELINES_URL", "resolved_baselines_url"),
        (ServiceSettings, "WHYSLOW_ANALYSES_URL", "resolved_analyses_url"),
    ],
)
def test_with_both_names_set_the_new_one_wins_and_the_warning_says_so(
    monkeypatch: pytest.MonkeyPatch, settings_class: type, new: str, resolved: str
) -> None:
    monkeypatch.setenv(OLD, "sqlite:///old.db")
    monkeypatch.setenv(new, "sqlite:///new.db")
    with pytest.warns(DeprecationWarning, match=f"{OLD} is ignored: {new} is set and wins"):
        settings = settings_class()
    assert getattr(settings, resolved)() == "sqlite:///new.db"


def test_the_consumers_service_key_is_read_and_kept_out_of_its_repr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert ConsumerSettings().api_key() is None
    monkeypatch.setenv("WHYSLOW_SERVICE_API_KEY", "")
    assert ConsumerSettings().api_key() is None  # an empty variable sends no header
    monkeypatch.setenv("WHYSLOW_SERVICE_API_KEY", "s3cret-key")
    settings = ConsumerSettings()
    assert settings.api_key() == "s3cret-key"
    assert "s3cret-key" not in repr(settings)
