"""The service call graph, learnt from parent/child spans across services.

A span whose parent belongs to another service is a call between them: the parent's
service calls the child's. That holds whatever kinds the tracer set, so it also serves
tracers that set none (their spans arrive as ``internal``): such a span is its service's
entry when its parent is elsewhere (or it has none), a call when a child of it is
elsewhere, and in-process work otherwise.

The gap between a caller's span and the callee's entry span under it (the caller waited,
the callee did not work) is network and queueing in front of the callee: a network delay
shows there while the callee's own time stays flat.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

MAX_INDEXED_SPANS = 200_000
"""Recent spans remembered to link children and parents that arrive apart (about 40 MB)."""
MAX_EDGES = 100_000
"""Edges kept; calls on further ones are counted as dropped."""
MAX_PATH_DEPTH = 12
MAX_REACH = 5_000
"""Services a walk of the graph visits at most: what a signal is connected to is bounded."""


Linked = tuple[str, str, float]
"""(service, operation, duration in ms): what linking needs of a span. A tuple, not a
class: one is made per indexed span on the ingest path."""


class SpanIndex:
    """Recent possible parents by span id (calls, and spans of unknown kind), and the
    services of the children of spans of unknown kind, bounded: the oldest are forgotten
    first. Not checkpointed: a restart loses the links of spans in flight, never a
    baseline."""

    def __init__(self, capacity: int = MAX_INDEXED_SPANS) -> None:
        self.capacity = capacity
        self._spans: OrderedDict[str, Linked] = OrderedDict()
        self._children: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self.forgotten = 0

    def add(self, span_id: str, span: Linked) -> None:
        """Remember a span that may be the parent of another service's entry."""
        spans = self._spans
        spans[span_id] = span
        if len(spans) > self.capacity:
            spans.popitem(last=False)
            self.forgotten += 1

    def add_child(self, parent_id: str, service: str) -> None:
        """Remember that ``parent_id`` (seen yet or not) has a child in ``service``: a
        child usually ends, and so arrives, before its parent."""
        known = self._children.get(parent_id, ())
        if service not in known and len(known) < 4:
            self._children[parent_id] = (*known, service)
            if len(self._children) > self.capacity:
                self._children.popitem(last=False)

    def get(self, span_id: str | None) -> Linked | None:
        return None if span_id is None else self._spans.get(span_id)

    def resolve(
        self, span_id: str | None, service: str, parent_id: str | None
    ) -> tuple[str, str | None] | None:
        """(kind, peer) of a span of unknown kind: ``("server", None)`` for an entry (its
        parent is in another service, or it has none), ``("client", callee)`` for a call (a
        child of it is in another service), ``("internal", None)`` for in-process work (its
        parent is in its own service), None for an orphan whose parent was never seen."""
        if parent_id is None:
            return "server", None
        parent = self._spans.get(parent_id)
        if parent is not None and parent[0] != service:
            return "server", None
        if span_id is not None:
            callee = next((s for s in self._children.get(span_id, ()) if s != service), None)
            if callee is not None:
                return "client", callee
        return None if parent is None else ("internal", None)


@dataclass
class Edge:
    calls: float = 0.0
    last_seen: float = 0.0


@dataclass
class CallGraph:
    """caller -> callee edges with their call counts and when they were last seen."""

    max_edges: int = MAX_EDGES
    edges: dict[tuple[str, str], Edge] = field(default_factory=dict)
    dropped: int = 0
    _callees: dict[str, list[str]] = field(default_factory=dict, repr=False)
    _callers: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def observe(self, caller: str, callee: str, calls: int, now: float) -> None:
        if caller == callee:
            return
        edge = self.edges.get((caller, callee))
        if edge is None:
            if len(self.edges) >= self.max_edges:
                self.dropped += calls
                return
            edge = self.edges[(caller, callee)] = Edge()
            self._link(caller, callee)
        edge.calls += calls
        edge.last_seen = max(edge.last_seen, now)

    def _link(self, caller: str, callee: str) -> None:
        self._callees.setdefault(caller, []).append(callee)
        self._callers.setdefault(callee, []).append(caller)

    def callees(self, service: str) -> list[str]:
        return list(self._callees.get(service, ()))

    def callers(self, service: str) -> list[str]:
        return list(self._callers.get(service, ()))

    def downstream(self, start: str, limit: int = MAX_REACH) -> set[str]:
        """The services ``start`` calls, directly or through others (itself included),
        breadth-first up to ``MAX_PATH_DEPTH`` hops and ``limit`` services."""
        return _walk(start, self._callees, limit)

    def upstream(self, start: str, limit: int = MAX_REACH) -> set[str]:
        """The services that call ``start``, directly or through others (itself included)."""
        return _walk(start, self._callers, limit)

    def path(self, start: str, target: str) -> list[str] | None:
        """The shortest chain of calls from ``start`` down to ``target`` (a cycle ends the
        walk, never loops), None when ``target`` is not downstream of ``start``."""
        parents: dict[str, str | None] = {start: None}
        frontier = [start]
        for _ in range(MAX_PATH_DEPTH + 1):
            if target in parents:
                chain = [target]
                while (up := parents[chain[-1]]) is not None:
                    chain.append(up)
                return chain[::-1]
            following = []
            for node in frontier:
                for nxt in self._callees.get(node, ()):
                    if nxt not in parents:
                        parents[nxt] = node
                        following.append(nxt)
            if not following:
                break
            frontier = following
        return None

    def export(self, service: str) -> dict[str, list[float]]:
        """The edges ``service`` calls out on, JSON-ready (its part of a checkpoint)."""
        return {
            callee: [edge.calls, edge.last_seen]
            for (caller, callee), edge in self.edges.items()
            if caller == service
        }

    def install(self, service: str, saved: dict[str, list[float]]) -> None:
        for callee, (calls, last_seen) in saved.items():
            if (service, callee) not in self.edges:
                self._link(service, callee)
            self.edges[(service, callee)] = Edge(float(calls), float(last_seen))


def _walk(start: str, adjacency: dict[str, list[str]], limit: int) -> set[str]:
    seen = {start}
    frontier = [start]
    for _ in range(MAX_PATH_DEPTH):
        following = []
        for node in frontier:
            for nxt in adjacency.get(node, ()):
                if nxt not in seen:
                    seen.add(nxt)
                    following.append(nxt)
                    if len(seen) >= limit:
                        return seen
        if not following:
            break
        frontier = following
    return seen
