"""The call graph for the dashboard's map: who calls whom, and what recent incidents
reached."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.api.deps import ProfilesDep, StoreDep
from service.topology import Topology, read_profiles, recent_incidents, topology

router = APIRouter(prefix="/v1/topology", tags=["baselines"])


@router.get("")
def call_graph(
    profiles: ProfilesDep,
    store: StoreDep,
    minutes: Annotated[
        int, Query(ge=1, le=1440, description="How far back an incident's latest report counts.")
    ] = 15,
) -> Topology:
    """The services and their calls as the consumers learnt them from spans (each edge:
    the calls seen since it was learnt and when last). A service is anomalous when an
    incident whose latest report was analysed in the last ``minutes`` affected it, and
    ``root_of`` names the incidents it is the root cause of; an edge is anomalous when one
    such incident affected both its ends and its callee is on the incident's path.

    Bounded: at most 2,000 services and 10,000 edges (``truncated`` says when more were
    left out: the anomalous ones are kept first), and the incidents of at most the newest
    500 analyses of the window."""
    read, more = read_profiles(profiles)
    return topology(read, recent_incidents(store, minutes), truncated=more)
