"""Benchmarks: ``python -m bench NAME`` prints one JSON line per figure.

Each line: ``{"bench", "metric", "value", "unit", "peer", "peer_value", "ratio"}``;
``peer`` names the program measured side by side in the same run (or null),
``ratio`` is value / peer_value where that comparison means something.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def emit(
    bench: str,
    metric: str,
    value: float,
    unit: str,
    *,
    peer: str | None = None,
    peer_value: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Print one figure as a JSON line and return it."""
    ratio = None
    if peer_value:
        ratio = round(value / peer_value, 3)
    record: dict[str, Any] = {
        "bench": bench,
        "metric": metric,
        "value": round(value, 3) if isinstance(value, float) else value,
        "unit": unit,
        "peer": peer,
        "peer_value": peer_value,
        "ratio": ratio,
        **extra,
    }
    print(json.dumps(record), flush=True)
    return record


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def log(message: str) -> None:
    """Progress for humans, on stderr so stdout stays JSON."""
    print(message, file=sys.stderr, flush=True)
