"""Start-up: time from exec to READY=1 (sd_notify), and RSS at idle."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench import emit, log, percentile
from tests.support.daemon import start_daemon


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench startup")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    ready_ms: list[float] = []
    rss: list[float] = []
    for i in range(args.runs):
        daemon = start_daemon(wait_ready=False)
        try:
            ready_at = daemon.wait_notification("READY=1", timeout=30)
            ready_ms.append((ready_at - daemon.started_at) * 1000)
            time.sleep(1.0)  # idle: let start-up garbage settle
            rss.append(_rss_bytes(daemon.proc.pid) / 2**20)
        finally:
            daemon.stop()
        log(f"run {i + 1}: ready in {ready_ms[-1]:.0f} ms, RSS {rss[-1]:.1f} MiB")
    emit("startup", "exec_to_ready_p50", percentile(ready_ms, 50), "ms", runs=args.runs)
    emit("startup", "exec_to_ready_max", max(ready_ms), "ms", runs=args.runs)
    emit("startup", "idle_rss_p50", percentile(rss, 50), "MiB", runs=args.runs)
