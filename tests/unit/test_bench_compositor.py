"""``python -m bench compositor --quick`` with one room and short windows prints its figures.

Nothing about speed is asserted (the host is shared); only that the room's sink
is sent its frames and every figure is printed as a bench JSON line.
"""

from __future__ import annotations

import json

import pytest

from bench import compositor


def test_quick_run_prints_the_figures(capsys: pytest.CaptureFixture[str]) -> None:
    compositor.main(
        ["--quick", "--rooms", "1", "--warmup", "0.5", "--window", "1", "--peer-frames", "5"]
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    metrics = {row["metric"]: row for row in rows}
    for stage in ("decode", "compose", "encode", "delay"):
        for quantile in ("p50", "p95"):
            assert f"{stage}_ms_{quantile}" in metrics, sorted(metrics)
    main = metrics["composed_sinks_per_core"]
    assert {"bench", "value", "unit", "peer", "peer_value", "ratio"} <= set(main)
    assert main["rooms"] == 1 and main["value"] > 0 and main["peer_value"] > 0
    on_time = metrics["frames_on_time_ratio"]
    assert on_time["frames_expected"] >= 10 and on_time["frames_sent"] > 0
