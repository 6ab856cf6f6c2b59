import random

from baselines.errors import ErrorWindow
from baselines.trace_sample import MAX_TRACES, TraceSample


def _ids(rng: random.Random, n: int) -> set[str]:
    return {f"{rng.getrandbits(128):032x}" for _ in range(n)}


def test_services_failing_in_the_same_requests_keep_the_same_ids_whatever_the_volume() -> None:
    """A caller fails in 10,000 requests, half of them requests its callee failed in too
    (with 20,000 of its own): each keeps 64 ids, and they still see the requests they
    share; a third service failing elsewhere shares none."""
    rng = random.Random(7)
    caller = _ids(rng, 10_000)
    callee = set(list(caller)[:5_000]) | _ids(rng, 20_000)
    elsewhere = _ids(rng, 10_000)
    a, b, c = TraceSample.of(caller), TraceSample.of(callee), TraceSample.of(elsewhere)
    assert len(a.ids) == len(b.ids) == len(c.ids) == MAX_TRACES
    assert a.shares(b) is True and b.shares(a) is True
    assert a.shares(c) is False and c.shares(a) is False


def test_samples_that_cannot_tell_say_so() -> None:
    """Every id of one sample lies above where the other's is complete: nothing is known
    about the requests they share."""
    low = TraceSample.of({f"0{i:031x}" for i in range(1000)})
    high = TraceSample.of({"f" * 32})
    assert low.cutoff is not None and high.cutoff is None
    assert high.shares(low) is None
    assert low.shares(high) is False
    assert TraceSample().shares(low) is None


def test_merged_samples_are_complete_only_up_to_the_lower_cutoff() -> None:
    rng = random.Random(3)
    big, small = TraceSample.of(_ids(rng, 1000)), TraceSample.of(_ids(rng, 10))
    merged = big.merge(small)
    assert merged.cutoff is not None and merged.cutoff <= (big.cutoff or "")
    assert len(merged.ids) <= MAX_TRACES
    assert all(i <= merged.cutoff for i in merged.ids)
    assert merged.ids >= {i for i in small.ids if i <= merged.cutoff}


def test_a_window_keeps_the_smallest_trace_ids_of_its_error_lines_only() -> None:
    rng = random.Random(5)
    window = ErrorWindow()
    failing = sorted(_ids(rng, 1000))
    for trace in failing:
        window.add(True, "boom", "boom", trace)
        window.add(False, "ok", "ok", f"{rng.getrandbits(128):032x}")
    assert len(window.traces) <= 2 * MAX_TRACES
    sample = window.trace_sample()
    assert sample is not None and sorted(sample.ids) == failing[:MAX_TRACES]
    window = ErrorWindow()
    window.add(True, "boom", "boom")
    assert window.trace_sample() is None


def test_the_share_of_requests_two_services_failed_in_together() -> None:
    caller = TraceSample.of({"a1", "a2", "a3", "a4"})
    assert caller.share_in(TraceSample.of({"a1", "a2", "a3", "b9"})) == 0.75
    assert caller.share_in(TraceSample.of({"b1"})) == 0.0
    assert TraceSample().share_in(caller) is None
