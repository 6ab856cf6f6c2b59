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

    def state(self) -> list[object]:
        """The sample as a checkpoint holds it: ``[sorted ids, cutoff]``."""
        return [sorted(self.ids), self.cutoff]

    @classmethod
    def from_state(cls, saved: object) -> TraceSample | None:
        """A sample from ``state``'s form; None for none (or a checkpoint without)."""
        if not isinstance(saved, list):
            return None
        ids, cutoff = saved
        return cls(frozenset(ids), cutoff)

    def merge(self, other: TraceSample) -> TraceSample:
        cutoffs = [c for c in (self.cutoff, other.cutoff) if c is not None]
        return TraceSample.of(self.ids | other.ids, min(cutoffs, default=None))

    def share_in(self, other: TraceSample) -> float | None:
        """The share of this sample's traces that are the other's too, over the ids where
        the other is complete; None when there are none (the samples cannot tell)."""
        bound = min((c for c in (self.cutoff, other.cutoff) if c is not None), default=None)
        comparable = [i for i in self.ids if bound is None or i <= bound]
        if not comparable:
            return None
        return sum(i in other.ids for i in comparable) / len(comparable)

    def shares(self, other: TraceSample) -> bool | None:
        """Whether one of this sample's traces is one of the other's; None when the
        samples cannot tell."""
        if self.ids & other.ids:
            return True
        return None if self.share_in(other) is None else False
