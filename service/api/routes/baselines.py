from typing import Any

from fastapi import APIRouter, HTTPException

from service.api.deps import ProfilesDep

router = APIRouter(prefix="/v1/baselines", tags=["baselines"])


@router.get("/{service}", responses={404: {"description": "No profile for this service."}})
def baseline(service: str, profiles: ProfilesDep) -> dict[str, Any]:
    """The week profile the consumers learnt for a service: per operation, each
    hour-of-week's usual p95 and p50 (ms) and the windows behind them (null: no data yet),
    and the time zone of its hours."""
    profile = profiles.get(service)
    if profile is None:
        raise HTTPException(404, detail=f"no baseline profile for {service!r} yet")
    return profile
