"""What the media benchmarks share: process CPU and memory, the rtpengine anchor."""

from __future__ import annotations

import json
import os
from pathlib import Path

ANCHOR_RESULTS = Path(__file__).resolve().parents[2] / "shared" / "anchors" / "results"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` now."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for pid {pid}")


def anchor(anchor_name: str, metric: str, n: int) -> float | None:
    """The mean of ``metric`` at load ``n`` over the anchor runs in shared/anchors/results
    (``anchor_name``: ``rtpengine_relay`` or ``rtpengine_transcode``), None if absent."""
    values = []
    for path in sorted(ANCHOR_RESULTS.glob("rtpengine_run*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            wanted = row.get("anchor") == anchor_name and row.get("metric") == metric
            if wanted and int(row.get("n", 0)) == n:
                values.append(float(row["value"]))
    return sum(values) / len(values) if values else None
