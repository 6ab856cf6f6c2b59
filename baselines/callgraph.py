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

from collections import OrderedDict, deque
from dataclasses import dataclass, field

MAX_INDEXED_SPANS = 200_000
"""Recent spans remembered to link children and parents that arrive apart (about 40 MB)."""
MAX_EDGES = 100_000
"""Edges kept; calls on further ones are counted as dropped."""
MAX_PATH_DEPTH = 12


@dataclass(frozen=True, slots=True)
class Linked:
    """What linking needs of a span: who it belongs to and how long it took."""

    service: str
    operation: str
    kind: str
    duration_ms: float
    parent: str | None


class SpanIndex:
    """Recent spans by id, and which spans have a child in another service, bounded: the
    oldest are forgotten first. Not checkpointed: a restart loses the links of spans in
    flight, never a baseline."""

    def __init__(self, capacity: int = MAX_INDEXED_SPANS) -> None:
        self.capacity = capacity
        self._spans: OrderedDict[str, Linked] = OrderedDict()
        self._children: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self.forgotten = 0

    def add(self, span_id: str | None, span: Linked) -> None:
        """Remember a span, and that its parent (seen yet or not) has a child in its
        service: a child usually ends, and so arrives, before its parent."""
        if span_id is not None:
            self._spans[span_id] = span
            if len(self._spans) > self.capacity:
                self._spans.popitem(last=False)
                self.forgotten += 1
        if span.parent is not None:
            known = self._children.get(span.parent, ())
            if span.service not in known and len(known) < 4:
                self._children[span.parent] = (*known, span.service)
                if len(self._children) > self.capacity:
                    self._children.popitem(last=False)

    def get(self, span_id: str | None) -> Linked | None:
        return None if span_id is None else self._spans.get(span_id)

    def remote_child(self, span_id: str | None, service: str) -> str | None:
        """The service of a child of this span outside ``service``, if one was seen."""
        if span_id is None:
            return None
        return next((s for s in self._children.get(span_id, ()) if s != service), None)

    def resolve(self, span_id: str | None, span: Linked) -> tuple[str, str | None] | None:
        """(kind, peer) of a span of unknown kind: ``("server", None)`` for an entry,
        ``("client", callee)`` for a call, None for in-process work or an orphan whose
        parent was never seen."""
        if span.parent is None:
            return "server", None
        parent = self._spans.get(span.parent)
        if parent is not None and parent.service != span.service:
            return "server", None
        callee = self.remote_child(span_id, span.service)
        if callee is not None:
            return "client", callee
        return None


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

    def observe(self, caller: str, callee: str, calls: int, now: float) -> None:
        if caller == callee:
            return
        edge = self.edges.get((caller, callee))
        if edge is None:
            if len(self.edges) >= self.max_edges:
                self.dropped += calls
                return
            edge = self.edges[(caller, callee)] = Edge()
        edge.calls += calls
        edge.last_seen = max(edge.last_seen, now)

    def callees(self, service: str) -> list[str]:
        return [callee for caller, callee in self.edges if caller == service]

    def reachable(self, start: str, targets: set[str]) -> dict[str, list[str]]:
        """For each target reachable downstream of ``start`` (itself included), the path of
        services from ``start`` to it, shortest first (breadth-first, bounded depth: a cycle
        ends the walk, never loops)."""
        adjacency: dict[str, list[str]] = {}
        for caller, callee in self.edges:
            adjacency.setdefault(caller, []).append(callee)
        paths: dict[str, list[str]] = {}
        seen = {start}
        queue: deque[list[str]] = deque([[start]])
        while queue:
            path = queue.popleft()
            node = path[-1]
            if node in targets:
                paths[node] = path
            if len(path) > MAX_PATH_DEPTH:
                continue
            for nxt in adjacency.get(node, ()):
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append([*path, nxt])
        return paths

    def export(self, service: str) -> dict[str, list[float]]:
        """The edges ``service`` calls out on, JSON-ready (its part of a checkpoint)."""
        return {
            callee: [edge.calls, edge.last_seen]
            for (caller, callee), edge in self.edges.items()
            if caller == service
        }

    def install(self, service: str, saved: dict[str, list[float]]) -> None:
        for callee, (calls, last_seen) in saved.items():
            self.edges[(service, callee)] = Edge(float(calls), float(last_seen))
