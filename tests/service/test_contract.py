import subprocess
import sys
from datetime import UTC

import pytest
from pydantic import ValidationError

from service.contract import AnomalyReport, Diagnosis, SpanEvent, Window


def test_the_contract_imports_without_fastapi() -> None:
    code = "import sys, service.contract; sys.exit('fastapi' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_timestamps_are_utc_whatever_the_wire_form() -> None:
    naive = SpanEvent(service="a", operation="b", duration_ms=1, timestamp="2026-11-16T09:00:00")
    offset = SpanEvent(
        service="a", operation="b", duration_ms=1, timestamp="2026-11-16T10:00:00+01:00"
    )
    epoch = SpanEvent(service="a", operation="b", duration_ms=1, timestamp=1_794_819_600)
    assert naive.timestamp.tzinfo is UTC and naive.timestamp == offset.timestamp
    assert epoch.timestamp.tzinfo is not None


def test_window_end_before_start_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"window\.end is before window\.start"):
        Window(start="2026-11-16T09:01:00Z", end="2026-11-16T09:00:00Z", count=1)


def test_diagnosis_fields_come_cause_first() -> None:
    assert list(Diagnosis.model_fields)[:2] == ["probable_cause", "severity"]


def test_report_id_is_kept_when_given() -> None:
    report = AnomalyReport(id="abc", service="a", operation="b", latency_ms={"p95": 1})
    assert report.anomaly_id == "abc"
