"""deploy/prometheus/whyslow-rules.yml: an alert on a series nobody exports never fires and
never says so, so every series a rule reads must be one the code exports; and the file
must be rules Prometheus loads (``promtool check rules`` where promtool is installed).

The exported names are read from the code, as text: each ``"whyslow_..."`` literal, and
the suffixes the collectors that build ``f"whyslow_{name}"`` pass as literals. Prometheus
exposes a counter ``whyslow_x`` as ``whyslow_x_total`` and a histogram's as ``_bucket``,
``_sum`` and ``_count``, so a rule may name those."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.files import DEPLOY

ROOT = Path(__file__).resolve().parents[2]
RULES = DEPLOY / "prometheus" / "whyslow-rules.yml"
SERIES = re.compile(r"\bwhyslow_[a-z0-9_]+\b")
LITERAL = re.compile(r"[\"'](whyslow_[a-z0-9_]+)[\"']")
SUFFIX_LITERAL = re.compile(r"[\"']([a-z][a-z0-9]*(?:_[a-z0-9]+)+)[\"']")
BUILT_NAME = 'f"whyslow_{name}"'
EXPOSED_SUFFIXES = ("", "_total", "_bucket", "_sum", "_count")


def exported_in_code() -> set[str]:
    names: set[str] = set()
    for package in ("service", "baselines"):
        for source in (ROOT / package).rglob("*.py"):
            text = source.read_text()
            names.update(LITERAL.findall(text))
            if BUILT_NAME in text:
                names.update(f"whyslow_{name}" for name in SUFFIX_LITERAL.findall(text))
    return names


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_every_rule_reads_series_the_code_exports() -> None:
    exported = exported_in_code()
    assert "whyslow_consumer_lag_messages" in exported  # the grep finds built names
    assert "whyslow_analyses" in exported  # and literal ones
    for rule in rules():
        used = SERIES.findall(rule["expr"])
        assert used, f"{rule['alert']}: reads no whyslow series"
        for name in used:
            assert any(
                name.removesuffix(suffix) in exported
                for suffix in EXPOSED_SUFFIXES
                if name.endswith(suffix)
            ), f"{rule['alert']}: {name} is not exported by the code"


def test_the_rules_cover_what_runs_whyslow_needs_to_hear_of() -> None:
    read = " ".join(rule["expr"] for rule in rules())
    for series in (
        "whyslow_consumer_lag_messages",
        "whyslow_consumer_dead_lettered_total",
        "whyslow_consumer_store_errors_total",
        'whyslow_analyses_total{outcome="rules"}',
        "whyslow_model_ready",
        "whyslow_notification_failures_total",
        "whyslow_forwarder_blocked_by_key",
    ):
        assert series in read, series


def test_every_rule_is_routable_and_explained() -> None:
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names))
    for rule in rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["labels"]["component"] == "whyslow", rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_promtool_loads_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("needs promtool: apt-get install prometheus")
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout
