from fastapi import APIRouter, HTTPException

from service.api.deps import ProfilesDep
from service.contract import WeekProfile

router = APIRouter(prefix="/v1/baselines", tags=["baselines"])


@router.get("")
def services(profiles: ProfilesDep) -> dict[str, list[str]]:
    """The services the consumers have checkpointed a profile for."""
    return {"services": profiles.services()}


@router.get("/{service}", responses={404: {"description": "No profile for this service."}})
def baseline(service: str, profiles: ProfilesDep) -> WeekProfile:
    """The week profile the consumers learnt for a service, per operation and hour of the
    week (0 = Monday 00:00 in the profile's time zone; null: no data yet): the usual p95
    and p50 (ms) and the windows behind them; the band a window is judged against
    (band_low, band_high) and the p95 above which it is flagged (flag_above); the last
    week as observed (observed_p95, observed_peak, latest_hour_of_week) and its flags."""
    profile = profiles.get(service)
    if profile is None:
        raise HTTPException(404, detail=f"no baseline profile for {service!r} yet")
    return profile
