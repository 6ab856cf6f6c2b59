from service.contract import AnomalyReport, Incident, Window
from service.grounding import (
    facts,
    misstated,
    report_numbers,
    unfinished,
    ungrounded,
    unsupported,
)

REPORT = AnomalyReport.model_validate(
    {
        "service": "exchange-api",
        "operation": "GET /rates",
        "latency_ms": {"p95": 554.9},
        "baseline": {
            "hour_of_week": 106,
            "p50": 60,
            "p95": 89.1,
            "samples": 180,
            "level": "hour_of_day",
        },
        "context": {
            "cpu_pct": 9.4,
            "cpu_baseline_pct": 40.3,
            "error_rate": 0.25,
            "downstream": [
                {
                    "service": "fx-provider",
                    "operation": "GET /quote",
                    "p95_ms": 535.6,
                    "baseline_p95_ms": 65.5,
                }
            ],
        },
    }
)


def test_numbers_from_the_report_and_derived_from_it_are_grounded() -> None:
    allowed = report_numbers(REPORT)
    text = (
        "p95 555 ms vs usual 89.1 ms (6.2x); fx-provider 535.6 ms vs 65.5 ms, 8.2x slower; "
        "CPU 9.4% vs 40.3%; errors 25%; 3 steps"
    )
    assert ungrounded(text, allowed) == []


def test_invented_numbers_are_caught() -> None:
    allowed = report_numbers(REPORT)
    text = "The p95 of 432ms vs usual 108 ms is a 7.6X rise; CPU at 97%."
    assert ungrounded(text, allowed) == ["432", "108", "7.6", "97"]


def test_precision_is_the_one_written() -> None:
    allowed = report_numbers(REPORT)
    assert ungrounded("about 550 ms", allowed) == ["550"]  # 554.9 is not 550
    assert ungrounded("554.9 ms, 554.90 ms", allowed) == []


def test_the_window_counts_as_written_and_identifiers_ground_nothing() -> None:
    report = REPORT.model_copy(
        update={
            "id": "deploy-4711",
            "trace_ids": ["3377a9f1c2d4e5f60718293a4b5c6d7e"],
            "window": Window.model_validate(
                {"start": "2026-11-12T14:05:00Z", "end": "2026-11-12T14:06:00Z", "count": 412}
            ),
        }
    )
    allowed = report_numbers(report)
    assert ungrounded("since 14:05 UTC on 2026-11-12, over 412 requests", allowed) == []
    assert ungrounded("p95 4711 ms, 3377 retries", allowed) == ["4711", "3377"]


def test_an_incidents_reasons_ground_their_numbers_and_its_id_grounds_nothing() -> None:
    report = REPORT.model_copy(
        update={
            "incident": Incident.model_validate(
                {
                    "id": "inc-8812",
                    "started": "2026-11-12T14:03:00Z",
                    "root_cause": {
                        "service": "fx-provider",
                        "kind": "own_time",
                        "score": 3.5,
                        "reasons": ["own time p95 840ms vs usual 42ms (20x)"],
                    },
                    "candidates": [
                        {
                            "service": "fx-db",
                            "kind": "errors",
                            "score": 1.25,
                            "reasons": ["error log lines: 12 vs usual 0"],
                        }
                    ],
                }
            )
        }
    )
    allowed = report_numbers(report)
    text = "fx-provider own time 840ms vs usual 42ms, 20x; fx-db 12 errors; since 14:03"
    assert ungrounded(text, allowed) == []
    assert ungrounded("score 3.5 and 1.25; 8812 requests", allowed) == ["8812"]


def _misstated(text: str, report: AnomalyReport = REPORT, note: str | None = None) -> list[str]:
    return misstated(text, facts(report, note))


def test_a_direction_the_numbers_do_not_have_is_misstated() -> None:
    """CPU 9.4% vs usual 40.3% is LOWER, fx-provider 7.2x slower, p95 6.2x higher."""
    assert _misstated("CPU rose to 9.4% while fx-provider latency fell.") == [
        "cpu rose",
        "fx-provider fell",
    ]
    assert _misstated("The dependency is normal; CPU is up.") == ["dependency normal", "cpu up"]
    assert _misstated("CPU dropped while fx-provider p95 rose 8.2x; latency is higher.") == []
    assert _misstated("cpu is 9.4% vs usual 40.3% (LOWER)") == []
    assert _misstated("CPU did not rise: fx-provider slowed down.") == []  # negation, particle
    assert _misstated("Memory rose and errors increased.") == []  # no usual value to hold to


def test_a_signal_at_its_usual_level_is_normal_not_rising() -> None:
    report = REPORT.model_copy(
        update={
            "context": REPORT.context.model_copy(update={"cpu_pct": 41.0, "cpu_baseline_pct": 40.0})
        }
    )
    assert _misstated("the cpu rise follows", report) == ["cpu rise"]
    assert _misstated("CPU is normal; the rise is in fx-provider calls", report) == []


def test_a_name_or_a_quote_the_report_does_not_hold_is_misstated() -> None:
    quoted = REPORT.model_copy(update={"evidence": ["ReadTimeout calling fx-provider: CPU up"]})
    assert _misstated("It waits on payments-db, not fx-provider.", quoted) == ["payments-db"]
    assert _misstated("The spans say 'ReadTimeout calling fx-provider: CPU up'.", quoted) == []
    assert _misstated("The spans say 'connection reset by peer'.", quoted) == [
        "'connection reset by peer'"
    ]
    # English compounds are words, and a catalogue note's names are the report's
    assert _misstated("an in-heap cache, a long-running job, a CPU-bound service") == []
    assert _misstated("it waits on rates-db", note="exchange-api waits on rates-db") == []


def test_a_fact_quoted_with_another_facts_number_or_unit_is_misstated() -> None:
    """Each number is the report's; the pair is not a fact the prompt prints."""
    assert _misstated("CPU is 9.4% vs usual 40.3% (LOWER).") == []
    assert _misstated("CPU is 9.4% vs usual 89.1ms.") == ["9.4% vs usual 89.1ms"]
    assert _misstated("CPU is 9.4MB vs usual 40.3MB.") == ["9.4MB vs usual 40.3MB"]


def test_unsupported_counts_invented_numbers_and_misstated_words_alike() -> None:
    assert unsupported("CPU rose to 97% while payments-db slowed.", REPORT) == [
        "97",
        "payments-db",
        "cpu rose",
    ]
    assert unsupported("CPU fell to 9.4% while fx-provider slowed to 535.6 ms.", REPORT) == []


def test_no_signal_standing_out_is_misstated_of_a_report_whose_incident_names_a_root() -> None:
    """A failing root stands out: "no signal or evidence stands out" of its report is false,
    and the answer falls back to the rule engine's chain; without an incident it may be so."""
    incident = Incident.model_validate(
        {
            "id": "inc-8812",
            "started": "2026-11-12T14:03:00Z",
            "root_cause": {
                "service": "fx-provider",
                "kind": "errors",
                "score": 1.5,
                "reasons": ["error log lines: 12 in the window (usual 0.3)"],
            },
        }
    )
    rooted = REPORT.model_copy(update={"incident": incident})
    claim = "Cause not identified. No signal or evidence stands out."
    assert _misstated(claim, rooted) == ["No signal or evidence stands out"]
    assert _misstated("A deploy and no other signal stands out.", rooted) == [
        "no other signal stands out"
    ]
    assert _misstated("No evidence stands out.", rooted) == ["No evidence stands out"]
    assert _misstated(claim) == []


def test_a_quote_still_open_is_held_as_it_is_written() -> None:
    """An explanation cut by its length bound, or a quote being decoded, is held to the
    report as far as it goes: a faithful start passes, a garbled copy does not."""
    quoted = REPORT.model_copy(update={"evidence": ["ERROR o.a.c.c.C.[.[.[.[dispatcherServlet]"]})
    assert _misstated("The log says 'ERROR o.a.c.c.C.[.[.[", quoted) == []
    assert _misstated("The log says 'ERROR o.a.c.c.C.[[![[![", quoted) == [
        "'ERROR o.a.c.c.C.[[![[!["
    ]
    assert _misstated("It's slow; the services' calls wait", quoted) == []  # apostrophes


def test_prose_that_stops_mid_sentence_or_loops_is_no_answer() -> None:
    """What a small model writes when a quote it began is taken back and it closes the
    string, or when it loops: true word by word, useless to the engineer reading it."""
    assert unfinished("The spans say ") == ["unfinished: The spans say"]
    assert unfinished("The evidence is: ") == ["unfinished: The evidence is:"]
    assert unfinished("It points at " + "[![" * 10) == [
        "repeated: [![[![[![[![[![[![[![[![",
        "unfinished: points at [![[![[![[![[![[![[![[![[![[![",
    ]
    for finished in (
        "fx-provider slowed.",
        "The log says 'ERROR pool exhausted.'",
        "It waits on fx-provider (535.6 ms vs usual 65.5 ms).",
        "A batch of 1000000 rows ran... and then it stopped!",
        "",
    ):
        assert unfinished(finished) == [], finished
    assert unfinished("The log line reads '-------- job done'.") == []  # short runs are text
    assert unsupported("CPU fell to 9.4% while fx-provider slowed to ", REPORT) == [
        "unfinished: fell to 9.4% while fx-provider slowed to"
    ]
