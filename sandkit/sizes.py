"""Sizes as users write them ("256m", "1.5g", 4096), shared by the container limits, the image
store's limits and the CLI's flags.

Below every layer, beside `errors` (the only part of sandkit it imports; docs/architecture.md).
"""

from __future__ import annotations

import re

from .errors import LimitsError

# Docker's units are binary (`docker run -m 1g` is 1 GiB); we follow it so copied flags mean the same.
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(value: int | str) -> int:
    """Bytes from an int or a Docker-style size string: "256m", "1g", "1.5GiB", "512k", "100"."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise LimitsError(f"a size must be an int (bytes) or a string like '256m', not {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise LimitsError(f"a size cannot be negative: {value}")
        return value
    match = _SIZE_RE.match(value)
    if not match:
        raise LimitsError(
            f"cannot read {value!r} as a size: use bytes or a number with a unit b/k/m/g/t, "
            "e.g. '256m' or '1.5g'"
        )
    number, unit = match.group(1), match.group(2).lower()
    return int(float(number) * _UNITS[unit])
