"""The call graph from parent/child spans: what a span of unknown kind is, from the services
of its parent and children, and walks of the graph that end on cycles."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from baselines.callgraph import MAX_PATH_DEPTH, CallGraph, SpanIndex
from baselines.detect import Detector, DetectorConfig
from service.contract import SpanEvent


def span(index: SpanIndex, span_id: str, service: str, parent: str | None = None) -> None:
    """What the detector records of a span: the span itself, and its parent's child."""
    index.add(span_id, (service, "op", 10.0))
    if parent is not None:
        index.add_child(parent, service)


def test_a_span_without_a_parent_is_its_service_entry() -> None:
    index = SpanIndex()
    span(index, "s1", "web")
    assert index.resolve("s1", "web", None) == ("server", None)


def test_a_child_of_another_services_span_is_an_entry_and_its_parent_a_call() -> None:
    index = SpanIndex()
    span(index, "s1", "web")
    span(index, "s2", "web", parent="s1")
    span(index, "s3", "api", parent="s2")
    assert index.resolve("s3", "api", "s2") == ("server", None)
    assert index.resolve("s2", "web", "s1") == ("client", "api")


def test_children_that_arrive_before_their_parent_still_make_it_a_call() -> None:
    """A child ends, and is exported, before its parent."""
    index = SpanIndex()
    span(index, "s3", "api", parent="s2")
    span(index, "s2", "web", parent="s1")
    span(index, "s1", "web")
    assert index.resolve("s2", "web", "s1") == ("client", "api")


def test_in_process_work_resolves_as_internal_and_orphans_to_nothing() -> None:
    """An orphan (its parent never seen) may be an entry or in-process work: it is counted
    unlinked; in-process work is not lost, its entry span holds its time."""
    index = SpanIndex()
    span(index, "s1", "web")
    span(index, "s2", "web", parent="s1")
    span(index, "s4", "web", parent="s2")
    assert index.resolve("s2", "web", "s1") == ("internal", None)  # parent, children in web
    span(index, "s9", "worker", parent="never-seen")
    assert index.resolve("s9", "worker", "never-seen") is None
    assert index.resolve(None, "worker", "never-seen") is None


def test_the_index_forgets_its_oldest_spans_past_its_capacity_and_counts_them() -> None:
    index = SpanIndex(capacity=100)
    for i in range(250):
        span(index, f"s{i}", "web", parent=f"p{i}")
    assert index.forgotten == 150
    assert index.get("s0") is None and index.get("s149") is None
    assert index.get("s150") == ("web", "op", 10.0) and index.get("s249") is not None
    span(index, "x", "api", parent="s249")
    assert index.resolve("x", "api", "s249") == ("server", None)  # the recent ones link
    assert index.resolve("s249", "web", "p249") == ("client", "api")


def chain(*services: str) -> CallGraph:
    graph = CallGraph()
    for caller, callee in itertools.pairwise(services):
        graph.observe(caller, callee, 1, 0.0)
    return graph


def test_walks_end_on_a_cycle_and_paths_are_the_shortest() -> None:
    graph = chain("a", "b", "c", "a")  # a -> b -> c -> a
    graph.observe("b", "a", 1, 0.0)
    assert graph.downstream("a") == {"a", "b", "c"}
    assert graph.upstream("c") == {"a", "b", "c"}
    assert graph.path("a", "c") == ["a", "b", "c"]
    assert graph.path("c", "b") == ["c", "a", "b"]
    assert graph.path("b", "zzz") is None
    assert graph.downstream("zzz") == {"zzz"}  # a service never seen calls nothing


def test_walks_stop_at_their_depth_bound_on_a_long_chain() -> None:
    services = [f"s{i}" for i in range(40)]
    graph = chain(*services)
    found = graph.downstream("s0")
    assert len(found) == MAX_PATH_DEPTH + 1
    assert "s39" not in found
    assert graph.path("s0", f"s{MAX_PATH_DEPTH}") == services[: MAX_PATH_DEPTH + 1]
    assert graph.path("s0", "s39") is None


def test_calls_are_counted_self_calls_ignored_and_edges_capped() -> None:
    graph = CallGraph(max_edges=2)
    graph.observe("a", "b", 3, 60.0)
    graph.observe("a", "b", 2, 30.0)
    graph.observe("a", "a", 5, 60.0)
    graph.observe("a", "c", 1, 60.0)
    graph.observe("a", "d", 4, 60.0)  # over the cap
    assert set(graph.edges) == {("a", "b"), ("a", "c")}
    assert (graph.edges["a", "b"].calls, graph.edges["a", "b"].last_seen) == (5.0, 60.0)
    assert graph.dropped == 4
    assert sorted(graph.callees("a")) == ["b", "c"]


def test_a_services_calls_out_survive_a_checkpoint() -> None:
    graph = chain("a", "b", "c")
    restored = CallGraph()
    for service in ("a", "b", "c"):
        restored.install(service, graph.export(service))
    assert restored.edges == graph.edges
    assert graph.export("c") == {}


def test_the_detector_counts_each_call_once_whatever_the_spans_that_show_it() -> None:
    """api calls billing from two operations and billing emits no spans: its calls are the
    client spans of both. api calls vault, whose entry spans sit under api's client spans:
    each call shows twice and counts once."""
    at = datetime(2026, 11, 16, 12, tzinfo=UTC)
    ids = itertools.count(1)

    def event(operation: str, kind: str, peer: str | None = None, **more: str) -> SpanEvent:
        service = more.pop("service", "api")
        return SpanEvent.model_validate(
            {
                "service": service,
                "operation": operation,
                "kind": kind,
                "peer_service": peer,
                "duration_ms": 5.0,
                "timestamp": at + timedelta(seconds=next(ids)),
                "trace_id": f"{1:032x}",
                **more,
            }
        )

    events = [event("GET /invoice", "client", "billing") for _ in range(3)]
    events += [event("POST /charge", "client", "billing") for _ in range(2)]
    for _ in range(4):
        call = f"{next(ids):016x}"
        events.append(event("read secret", "client", "vault", span_id=call))
        events.append(event("GET /secret", "server", service="vault", parent_span_id=call))
    detector = Detector(DetectorConfig(window_seconds=60))
    detector.observe(sorted(events, key=lambda e: e.timestamp))
    detector.flush()
    assert detector.graph.edges["api", "billing"].calls == 5
    assert detector.graph.edges["api", "vault"].calls == 4
