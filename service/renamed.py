"""Settings whose environment variable was renamed: the old name is still read.

``WHYSLOW_STORE_URL`` named the consumer's baselines store for the consumer and the
analyses store for the service, while the service read the consumers' store as
``WHYSLOW_BASELINES_URL``. Each store now has one name everywhere. A deployment that still
sets the old name keeps working, meaning what it meant for the process that reads it, and
is told which name to set: a ``DeprecationWarning`` (for code and tests) and a log line
(for operators, who do not see warnings).
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

log = logging.getLogger(__name__)


def read_renamed(data: Any, field: str, old: str, new: str) -> Any:
    """``data`` (a Settings class's input, before validation) with ``field`` taken from the
    old variable ``old`` when it is set and ``field`` is not. The new one wins when both
    are set; the warning says the old one is ignored."""
    value = os.environ.get(old)
    if value is None or not isinstance(data, dict):
        return data
    if data.get(field) is not None:
        given = f"{new} is set" if new in os.environ else f"{field} is given"
        _warn(f"{old} is ignored: {given} and wins; unset {old} ({old} is deprecated)")
        return data
    _warn(f"{old} is deprecated: read as {new}; set {new} instead")
    return {**data, field: value}


def _warn(message: str) -> None:
    warnings.warn(message, DeprecationWarning, stacklevel=2)
    log.warning(message)
