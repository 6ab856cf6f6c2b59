"""Which requests a service failed in, as a sample small enough to keep per window.

Two services that fail in the same requests fail for one reason; a caller that fails in
requests where its callee did not fails on its own. A service may log thousands of error
lines a window, so each keeps a bounded sample of their trace ids that two services can
still compare.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_TRACES = 64
"""Trace ids a sample keeps."""


@dataclass(frozen=True)
class TraceSample:
    """The smallest trace ids of a service's error lines (a bottom-k sample). Trace ids are
    random, so every service keeps the same ids of the traces it shares with another, and
    whether two services failed in the same requests is known exactly for the ids up to
    both samples' cut-offs, whatever the volume."""

    ids: frozenset[str] = frozenset()
    cutoff: str | None = None
    """Every id up to this one that was seen is kept; None: every id seen is kept."""

    @classmethod
    def of(cls, ids: set[str] | frozenset[str], cutoff: str | None = None) -> TraceSample:
        kept = sorted(i for i in ids if cutoff is None or i <= cutoff)
        if len(kept) > MAX_TRACES:
            kept, cutoff = kept[:MAX_TRACES], kept[MAX_TRACES - 1]
        return cls(frozenset(kept), cutoff)

    def merge(self, other: TraceSample) -> TraceSample:
        cutoffs = [c for c in (self.cutoff, other.cutoff) if c is not None]
        return TraceSample.of(self.ids | other.ids, min(cutoffs, default=None))

    def shares(self, other: TraceSample) -> bool | None:
        """Whether one of this sample's traces is one of the other's; None when neither
        sample holds an id where the other is complete (they cannot tell)."""
        if self.ids & other.ids:
            return True
        bound = min((c for c in (self.cutoff, other.cutoff) if c is not None), default=None)
        if any(bound is None or i <= bound for i in self.ids):
            return False
        return None
