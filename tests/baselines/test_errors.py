"""Errors as a judged signal: the Poisson tail behind "improbably many", what a service
learns is usual, and which other services its error lines name."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from baselines.errors import (
    ADOPT_WINDOWS,
    HABIT_MARGIN,
    HABIT_MEMORY_SLOTS,
    HABIT_SLOT_SECONDS,
    HABIT_SLOTS,
    MAX_TEMPLATES,
    MIN_WINDOWS,
    ROUTINE_MEMORY_SLOTS,
    ROUTINE_SLOTS,
    ErrorHabits,
    ErrorWindow,
    flags,
    named_services,
    poisson_tail,
)

SURPRISE = 1e-4
"""The detector's default surprise threshold (``Thresholds.surprise``)."""


def direct_tail(k: int, rate: float) -> float:
    """P(X >= k), X ~ Poisson(rate), as the sum of the upper terms (no cancellation)."""
    return math.fsum(
        math.exp(i * math.log(rate) - rate - math.lgamma(i + 1)) for i in range(k, k + 4000)
    )


@pytest.mark.parametrize("rate", [0.5, 1.0, 2.5, 7.0, 20.0, 49.0])
def test_poisson_tail_is_the_direct_sum(rate: float) -> None:
    for k in range(round(rate + 12 * math.sqrt(rate) + 10)):
        expected = direct_tail(k, rate)
        assert poisson_tail(k, rate) == pytest.approx(expected, rel=1e-9, abs=1e-13), k


def test_poisson_tail_of_nothing_is_certain() -> None:
    assert poisson_tail(0, 3.0) == 1.0 and poisson_tail(-2, 3.0) == 1.0


@pytest.mark.parametrize("rate", [49.9, 50.1, 60.0, 200.0, 900.0])
def test_poisson_tail_near_the_surprise_threshold_is_exact_for_busy_services(
    rate: float,
) -> None:
    for k in range(round(rate), round(rate + 6 * math.sqrt(rate))):
        expected = direct_tail(k, rate)
        if expected >= SURPRISE / 10:
            assert poisson_tail(k, rate) == pytest.approx(expected, rel=1e-6), k


def window(errors: dict[str, int], infos: int = 20) -> ErrorWindow:
    """A window of ``infos`` INFO lines and, per template, that many error lines."""
    w = ErrorWindow()
    for _ in range(infos):
        w.add(False)
    for template, count in errors.items():
        for i in range(count):
            w.add(True, template, template.replace("<*>", str(i)))
    return w


def habits_of(windows: int, errors: dict[str, int]) -> ErrorHabits:
    habits = ErrorHabits()
    for _ in range(windows):
        habits.learn(window(errors))
    return habits


def test_nothing_is_judged_before_the_service_has_a_history() -> None:
    habits = habits_of(MIN_WINDOWS - 1, {})
    assert not flags(habits.judge(window({"disk <*> full": 50}), SURPRISE))
    habits.learn(window({}))
    assert flags(habits.judge(window({"disk <*> full": 50}), SURPRISE))


def test_usual_errors_are_not_flagged_and_a_burst_of_them_is() -> None:
    habits = habits_of(40, {"cache miss for <*>": 4})
    assert habits.usual == pytest.approx(4.0, abs=0.05)
    assert not flags(habits.judge(window({"cache miss for <*>": 6}), SURPRISE))
    verdict = habits.judge(window({"cache miss for <*>": 30}), SURPRISE)
    assert verdict is not None
    assert (verdict.errors, verdict.novel) == (30, 0)
    assert verdict.surprise == pytest.approx(direct_tail(30, 4.0), rel=1e-9)
    assert verdict.samples == ["cache miss for 0"]
    assert "30 in the window (usual 4.0)" in verdict.reason("logs")


def test_lines_of_a_never_seen_error_template_are_flagged_and_quoted_first() -> None:
    habits = habits_of(10, {"cache miss for <*>": 2})
    for few in (1, 2):  # a rare error that recurred once is not yet a failure
        assert (
            habits.judge(window({"segfault in <*>": few, "cache miss for <*>": 2}), SURPRISE)
            is None
        )
    verdict = habits.judge(window({"cache miss for <*>": 2, "segfault in <*>": 3}), SURPRISE)
    assert verdict is not None and verdict.novel == 3
    assert verdict.samples == ["segfault in 0", "cache miss for 0"]
    assert "3 of templates not seen while it was healthy" in verdict.reason("logs")
    assert 0.5 <= verdict.strength <= 1.5
    stronger = habits.judge(window({"segfault in <*>": 40}), SURPRISE)
    assert stronger is not None and stronger.strength > verdict.strength


def test_a_service_that_never_logged_an_error_does_not_alert_on_its_first_two() -> None:
    habits = habits_of(30, {})
    assert habits.usual == 0.0
    assert not flags(habits.judge(window({"timeout after <*> ms": 1}), SURPRISE))
    assert not flags(habits.judge(window({"timeout after <*> ms": 2}), SURPRISE))
    assert flags(habits.judge(window({"timeout after <*> ms": 3}), SURPRISE))  # novel


def test_one_unflagged_burst_does_not_teach_the_service_that_bursts_are_usual() -> None:
    habits = habits_of(40, {"cache miss for <*>": 4})
    habits.learn(window({"cache miss for <*>": 500}))
    assert habits.usual == pytest.approx(4.0)  # an improbable window is not learnt from
    assert flags(habits.judge(window({"cache miss for <*>": 30}), SURPRISE))


def test_a_new_level_of_errors_that_lasts_becomes_the_usual() -> None:
    habits = habits_of(40, {"cache miss for <*>": 4})
    for _ in range(ADOPT_WINDOWS):
        habits.learn(window({"cache miss for <*>": 40}))
    assert habits.usual == pytest.approx(4.0)  # suspicious all along
    habits.learn(window({"cache miss for <*>": 40}))
    assert habits.usual > 5.0  # adopted: learning again
    for _ in range(100):
        habits.learn(window({"cache miss for <*>": 40}))
    assert not flags(habits.judge(window({"cache miss for <*>": 40}), SURPRISE))


def test_a_young_service_learns_what_it_logs_from_its_first_windows_only() -> None:
    """The windows before judging begins are what usual is; a fault right after them is
    judged, and not learnt even when it was not flagged, so its repeat is flagged too."""
    habits = habits_of(MIN_WINDOWS, {"cache miss for <*>": 2})
    assert habits.usual == pytest.approx(2.0)
    habits.learn(window({"cache miss for <*>": 9}))  # improbable (1 in 4,000), short of flagged
    assert habits.usual == pytest.approx(2.0)
    assert flags(habits.judge(window({"cache miss for <*>": 12}), SURPRISE))


def test_learnt_templates_are_known_and_the_oldest_are_forgotten_past_the_cap() -> None:
    habits = ErrorHabits()
    for n in range(MIN_WINDOWS):
        habits.learn(window({f"error {n}-a <*>": 1}))
    assert not flags(habits.judge(window({"error 0-a <*>": 3}), SURPRISE))  # known: not novel
    assert flags(habits.judge(window({"error 9-z <*>": 3}), SURPRISE))
    big = {f"template {i} <*>": 1 for i in range(MAX_TEMPLATES)}
    many = ErrorWindow()
    for template in big:
        many.templates[template] = 1
    habits.learn(many)
    assert len(habits.known) == MAX_TEMPLATES
    assert "error 0-a <*>" not in habits.known  # least recently seen, forgotten first
    assert "template 0 <*>" in habits.known


def test_bursts_of_familiar_errors_in_several_slots_are_a_habit_and_a_far_larger_one_is_not() -> (
    None
):
    """A service logs 20 familiar error lines now and then (usual 2): each burst flags, and
    a burst repeated within a slot flags again; once bursts that large came in
    ``HABIT_SLOTS`` different slots they are a habit, and so is one up to ``HABIT_MARGIN``
    times as large. A burst larger still, or lines of a template it never logged while
    healthy, still flag; a week later the habit is forgotten."""
    habits = habits_of(40, {"cache miss for <*>": 2})
    burst = window({"cache miss for <*>": 20})
    for slot in range(HABIT_SLOTS):
        at = slot * HABIT_SLOT_SECONDS
        assert flags(habits.judge(burst, SURPRISE, at=at))
        assert flags(habits.judge(burst, SURPRISE, at=at + 60))  # again within the slot
    now = HABIT_SLOTS * HABIT_SLOT_SECONDS
    habitual = habits.judge(burst, SURPRISE, at=now)
    assert habitual is not None and habitual.habitual  # a weak signal, flagging nothing
    largest = int(HABIT_MARGIN * 20)
    assert not flags(habits.judge(window({"cache miss for <*>": largest}), SURPRISE, at=now))
    assert flags(habits.judge(window({"cache miss for <*>": largest + 1}), SURPRISE, at=now))
    assert flags(habits.judge(window({"disk <*> full": 3}), SURPRISE, at=now))
    later = now + HABIT_MEMORY_SLOTS * HABIT_SLOT_SECONDS
    assert flags(habits.judge(burst, SURPRISE, at=later))
    slot = later // HABIT_SLOT_SECONDS
    assert all(kept > slot - HABIT_MEMORY_SLOTS for kept in habits.bursts)


def test_a_template_logged_every_hour_or_so_is_routine_and_a_faults_template_stays_new() -> None:
    """A burst of 8 lines of a template the service logs only in its bursts (never in a
    healthy window), every 40 minutes: each is new until it came in ``ROUTINE_SLOTS``
    slots, then routine (and 8 lines, its usual burst, no news). A fault's template in the
    same hours, a burst in each of three slots, stays new; eight quiet hours later the
    routine one is new again."""
    habits = habits_of(40, {})
    routine, fault = window({"retrying <*>": 8}), window({"payment declined <*>": 8})
    slots = range(0, 2 * (ROUTINE_SLOTS + 1), 2)  # every 40 minutes
    verdicts = [habits.judge(routine, SURPRISE, at=k * HABIT_SLOT_SECONDS) for k in slots]
    assert [v.novel if flags(v) else None for v in verdicts] == [8] * ROUTINE_SLOTS + [None]
    for k in range(2 * ROUTINE_SLOTS + 1, 2 * ROUTINE_SLOTS + 4):
        verdict = habits.judge(fault, SURPRISE, at=k * HABIT_SLOT_SECONDS)
        assert verdict is not None and verdict.novel == 8
    later = (2 * ROUTINE_SLOTS + ROUTINE_MEMORY_SLOTS + 1) * HABIT_SLOT_SECONDS
    verdict = habits.judge(routine, SURPRISE, at=later)
    assert verdict is not None and verdict.novel == 8


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_four_days_of_routine_error_bursts_flag_while_they_are_new_and_rarely_after(
    seed: int,
) -> None:
    """Real services log bursts of familiar errors healthy or not (TrainTicket's logged
    6-34 lines in about 1 minute in 10 of its fault-free minutes, against a usual 1-3):
    minutes of 1.5 lines on average, one in 12 a burst of 6 to 34. Judged by count alone,
    about 100 of them a day flag; as habits, they flag in their first hours (until bursts
    came in ``HABIT_SLOTS`` slots, and a few larger ones after), and never after that."""
    rng = np.random.default_rng(seed)
    habits = habits_of(MIN_WINDOWS, {"cache miss for <*>": 1})
    flagged: list[int] = []
    for minute in range(4 * 24 * 60):
        burst = rng.random() < 1 / 12
        errors = int(rng.integers(6, 35)) if burst else int(rng.poisson(1.5))
        lines = window({"cache miss for <*>": errors} if errors else {})
        if flags(habits.judge(lines, SURPRISE, at=minute * 60.0)):
            flagged.append(minute)
        else:
            habits.learn(lines)
    per_day = [sum(1 for m in flagged if m // 1440 == day) for day in range(4)]
    later = [m for m in flagged if m >= 3 * 60]
    print(f"seed {seed}: flagged windows per day {per_day}, {len(later)} after 3 hours")
    assert 0 < per_day[0] <= 12 and later == [], flagged
    assert per_day[1:] == [0, 0, 0], per_day


def test_habits_survive_a_checkpoint() -> None:
    habits = habits_of(12, {"cache miss for <*>": 3})
    habits.judge(window({"cache miss for <*>": 30}), SURPRISE, at=7 * HABIT_SLOT_SECONDS)
    assert habits.bursts == {7: 30}
    again = ErrorHabits.from_state(habits.state())
    assert again == habits
    probe = window({"cache miss for <*>": 3, "boom <*>": 2})
    assert again.judge(probe, SURPRISE) == habits.judge(probe, SURPRISE)
    assert ErrorHabits.from_state({}) == ErrorHabits()


def test_a_checkpoint_of_habits_does_not_change_with_them() -> None:
    habits = habits_of(12, {"cache miss for <*>": 3})
    saved = habits.state()
    before = json.dumps(saved, sort_keys=True)
    for minute in range(12, 30):
        habits.learn(window({"cache miss for <*>": 3, f"new template {minute} <*>": 1}))
    assert json.dumps(saved, sort_keys=True) == before


def test_error_lines_name_other_services_by_whole_tokens() -> None:
    services = frozenset({"ts-basic-service", "payments", "db"})
    templates = {
        "No instances available for ts-basic-service": 3,
        "connection refused: payments:<*>": 2,
        "ts-basic-service-v2 unreachable": 4,  # another name that merely starts alike
        "dbx pool exhausted": 1,
        "retry db.": 1,  # trailing punctuation is not part of the name
    }
    assert named_services(templates, services) == {
        "ts-basic-service": 3,
        "payments": 2,
        "db": 1,
    }
    assert named_services(templates, frozenset()) == {}


def test_a_verdict_blames_the_service_at_least_half_its_lines_name() -> None:
    habits = habits_of(10, {})
    services = frozenset({"ts-basic-service", "payments"})
    lines = {"No instances available for ts-basic-service": 3, "timeout <*>": 3}
    verdict = habits.judge(window(lines), SURPRISE, services)
    assert verdict is not None
    assert verdict.named == {"ts-basic-service": 3}
    assert verdict.blames() == "ts-basic-service"
    fewer = {"No instances available for ts-basic-service": 2, "timeout <*>": 3}
    verdict = habits.judge(window(fewer), SURPRISE, services)
    assert verdict is not None and verdict.blames() is None
