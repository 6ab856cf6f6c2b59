import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from baselines.detect import Detector, DetectorConfig
from baselines.synthetic import demo_incidents, last_full_week_start, telemetry
from service.contract import TELEMETRY_EVENT, AnomalyReport, LogRecord, SpanEvent

WEEK_START = last_full_week_start(datetime(2026, 11, 23, tzinfo=UTC))


def run_week(detector: Detector, incidents, minutes: int = 7 * 24 * 60) -> list[AnomalyReport]:
    reports = []
    for events in telemetry(WEEK_START, incidents, minutes=minutes):
        reports += detector.observe([TELEMETRY_EVENT.validate_python(e) for e in events])
    return reports + detector.flush()


def test_each_injected_incident_gives_one_report_with_its_context_and_nothing_else() -> None:
    incidents = demo_incidents(WEEK_START)
    detector = Detector(DetectorConfig())
    reports = run_week(detector, incidents)
    # one report per incident, from its first or second window (two in a row, unless a spike)
    assert [r.service for r in reports] == [i.service for i in incidents]
    for report, incident in zip(reports, incidents, strict=True):
        assert incident.covers(report.window.start)
        assert report.window.start - incident.start <= timedelta(minutes=1)
    cpu, downstream = reports
    assert cpu.context.cpu_pct > 90 and cpu.context.cpu_baseline_pct < 60
    assert cpu.deviation.ratio >= 2 and 0 < cpu.deviation.score <= 1
    assert cpu.baseline.level in ("hour_of_week", "hour_of_day")
    (dep,) = downstream.context.downstream
    assert dep.service == "fx-provider" and dep.p95_ms > 4 * dep.baseline_p95_ms
    assert downstream.context.cpu_pct < downstream.context.cpu_baseline_pct
    assert any("ReadTimeout" in text for text in downstream.evidence)
    assert len(downstream.trace_ids) == 5
    assert detector.stats.late == 0 and detector.stats.windows_closed == 7 * 24 * 60


def test_a_quiet_week_raises_no_alert() -> None:
    assert run_week(Detector(DetectorConfig()), incidents=[]) == []


def test_late_and_far_future_events_are_counted_not_applied() -> None:
    detector = Detector(DetectorConfig(window_seconds=60, allowed_lateness_seconds=0))
    t0 = datetime(2026, 11, 16, 9, tzinfo=UTC)

    def span(at: datetime) -> SpanEvent:
        return SpanEvent(service="a", operation="op", duration_ms=10, timestamp=at)

    detector.observe([span(t0), span(t0 + timedelta(minutes=2))])
    detector.observe([span(t0)])  # its window has closed
    detector.observe([span(datetime.now(UTC) + timedelta(days=30))])
    assert (detector.stats.late, detector.stats.future, detector.stats.spans) == (1, 1, 2)


def test_unknown_series_by_the_thousand_are_capped_and_counted() -> None:
    detector = Detector(DetectorConfig(max_series=100))
    t0 = datetime(2026, 11, 16, 9, tzinfo=UTC)
    events = [
        SpanEvent(service=f"svc-{i}", operation="op", duration_ms=5, timestamp=t0)
        for i in range(5000)
    ]
    detector.observe(events)
    detector.observe(events[:50])  # known series keep being applied
    series, _ = detector.memory()
    assert series == 100
    assert detector.stats.overflow == 4900
    assert detector.stats.spans == 150


def test_operations_of_one_service_flagged_together_give_one_report() -> None:
    import numpy as np

    from service.prompt import build_messages

    rng = np.random.default_rng(5)
    start = datetime(2026, 11, 9, tzinfo=UTC)
    slow_from, slow_to = 2 * 1440 + 600, 2 * 1440 + 620  # day 3, 10:00 to 10:20
    detector = Detector(DetectorConfig())
    reports = []
    for minute in range(3 * 1440):
        factor = 5.0 if slow_from <= minute < slow_to else 1.0
        batch = [
            SpanEvent(
                service="shop",
                operation=op,
                duration_ms=base * factor * d,
                timestamp=start + timedelta(minutes=minute, seconds=float(s)),
            )
            for op, base in (("GET /a", 40.0), ("GET /b", 90.0))
            for d, s in zip(rng.lognormal(0, 0.2, 20), np.sort(rng.uniform(0, 59, 20)), strict=True)
        ]
        reports += detector.observe(batch)
    ((report,),) = [reports]
    assert report.window.start >= start + timedelta(minutes=slow_from)
    assert [r.operation for r in report.related] == [
        "GET /b" if report.operation == "GET /a" else "GET /a"
    ]
    assert report.related[0].p95_ms > 3 * report.related[0].baseline_p95_ms
    assert detector.stats.flagged == 1
    assert "also slow: GET /" in build_messages(report)[1]["content"]


def traffic(
    days: int, per_minute: int, slow: tuple[datetime, datetime, float] | None, seed: int = 0
) -> list[list[SpanEvent]]:
    """Minutes of a caller ``web`` (server spans) calling ``db`` (web's client spans, db's
    server spans); inside ``slow`` (from, to, factor) the calls slow on the wire only: web's
    client spans, and so its own time, grow while db's server spans stay flat."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t0 = datetime(2026, 11, 16, tzinfo=UTC)
    minutes = []
    for m in range(days * 24 * 60):
        at = t0 + timedelta(minutes=m)
        factor = slow[2] if slow and slow[0] <= at < slow[1] else 1.0
        events = []
        for i in range(per_minute):
            moment = at + timedelta(seconds=60 * i / per_minute)
            db = float(rng.lognormal(np.log(8), 0.2))
            wire = float(rng.lognormal(np.log(2), 0.2)) * factor
            own = float(rng.lognormal(np.log(20), 0.2))
            events += [
                SpanEvent(service="db", operation="SELECT", duration_ms=db, timestamp=moment),
                SpanEvent(
                    service="web",
                    operation="SELECT",
                    kind="client",
                    peer_service="db",
                    duration_ms=db + wire,
                    timestamp=moment,
                ),
                SpanEvent(
                    service="web", operation="GET /", duration_ms=own + db + wire, timestamp=moment
                ),
            ]
        minutes.append(events)
    return minutes


def replay_minutes(minutes: list[list[SpanEvent]]) -> list[AnomalyReport]:
    detector = Detector(DetectorConfig())
    reports = []
    for events in minutes:
        reports += detector.observe(events, now=events[-1].timestamp.timestamp())
    return reports + detector.flush()


def test_a_sparse_operation_is_judged_over_pooled_windows() -> None:
    """Two spans a minute, fewer than a window needs: windows are pooled until they hold
    enough, and a slowdown of an hour is reported once, over the pooled windows."""
    start = datetime(2026, 11, 19, 14, tzinfo=UTC)
    reports = replay_minutes(traffic(4, 2, (start, start + timedelta(hours=1), 40.0)))
    assert len(reports) == 1
    (report,) = reports
    assert report.service == "web"
    assert start <= report.window.start <= start + timedelta(minutes=15)
    assert report.window.end - report.window.start > timedelta(minutes=1)  # pooled


def test_a_sparse_operations_error_spans_count_once_in_the_window_they_came_in() -> None:
    """Four spans a minute, one of them an error: the windows are pooled for latency, but
    the service's usual error spans are one a window, not the pool's errors again when it
    is judged; and a steady error rate raises nothing."""
    detector = Detector(DetectorConfig())
    start = datetime(2026, 11, 19, 14, tzinfo=UTC)
    reports = []
    for m in range(3 * 60):
        at = start + timedelta(minutes=m)
        spans = [
            SpanEvent(
                service="api",
                operation="GET /orders",
                duration_ms=20.0 + i,
                timestamp=at + timedelta(seconds=15 * i),
                status="error" if i == 0 else "ok",
            )
            for i in range(4)
        ]
        reports += detector.observe(spans, now=at.timestamp() + 60)
    usual = detector.export("api")[2]["errors"]["spans"]["usual"]
    assert usual == pytest.approx(1.0, abs=0.05)
    assert reports == []


@pytest.mark.parametrize(("slow_calls", "reported"), [(1, False), (3, True)])
def test_one_slow_call_among_a_few_is_no_slowdown_and_several_are(
    slow_calls: int, reported: bool
) -> None:
    """Eight calls a minute for two days, then ten minutes in which ``slow_calls`` of each
    minute's calls take 30 times as long. With eight calls the window's p95 lies between
    its two slowest: one slow call (a pause, a retry) decides it, and is no slowdown of the
    operation; three are."""
    detector = Detector(DetectorConfig(min_window_count=5))
    rng = np.random.default_rng(3)
    start = datetime(2026, 11, 16, tzinfo=UTC)
    reports = []
    for m in range(2 * 24 * 60 + 10):
        at = start + timedelta(minutes=m)
        slow = slow_calls if m >= 2 * 24 * 60 else 0
        spans = [
            SpanEvent(
                service="api",
                operation="GET /orders",
                duration_ms=float(rng.lognormal(np.log(20), 0.2)) * (30 if i < slow else 1),
                timestamp=at + timedelta(seconds=7 * i),
            )
            for i in range(8)
        ]
        reports += detector.observe(spans, now=at.timestamp() + 60)
    assert bool(reports) == reported, [r.latency_ms for r in reports]


def test_network_delay_in_front_of_a_callee_is_reported_by_its_caller() -> None:
    """The wire to db slows 30x while db's own spans stay flat: only web, whose client
    spans see the delay, is reported, and its calls to db carry the evidence."""
    start = datetime(2026, 11, 19, 14, tzinfo=UTC)
    reports = replay_minutes(traffic(4, 12, (start, start + timedelta(minutes=30), 30.0)))
    assert [r.service for r in reports] == ["web"]
    (dep,) = reports[0].context.downstream
    assert dep.service == "db" and dep.p95_ms > 2 * dep.baseline_p95_ms


def test_quiet_sparse_and_busy_traffic_raises_no_alert_for_days() -> None:
    assert replay_minutes(traffic(5, 2, None, seed=1)) == []
    assert replay_minutes(traffic(5, 12, None, seed=2)) == []


def test_an_open_window_keeps_its_error_lines_trace_ids_across_a_restart() -> None:
    """Whether a caller failed in the requests its callee failed in is read from the trace
    ids of their error lines, and when an incident began from their times; a window open
    at a checkpoint must not forget them."""
    at = datetime(2026, 11, 16, 12, 0, 30, tzinfo=UTC)
    detector = Detector(DetectorConfig())
    line = LogRecord(service="a", timestamp=at, severity="error", body="boom", trace_id="ab" * 16)
    detector.observe([line])
    saved = json.loads(json.dumps(detector.stream_state()))
    again = Detector(DetectorConfig())
    again.load_stream_state(saved)
    assert again.stream_state() == saved
    assert '"' + "ab" * 16 + '"' in json.dumps(saved)
    assert str(at.timestamp()) in json.dumps(saved)
