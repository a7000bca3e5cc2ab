"""``python -m bench bridge_media --quick``: one workload with 2 calls prints its figures.

Nothing about speed is asserted (the host is shared); only that the bridge carries
media both ways and every figure is printed as a bench JSON line.
"""

from __future__ import annotations

import json

import pytest

from bench import bridge_media


def test_quick_passthrough_prints_the_figures(capsys: pytest.CaptureFixture[str]) -> None:
    bridge_media.main(["--quick", "--only", "passthrough", "--window", "1.5", "--probes", "1"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    metrics = {row["metric"]: row for row in rows}
    prefix = "pcmu_passthrough_"
    for name in ("calls_per_core", "on_time_ratio", "added_latency_p50", "added_latency_p95",
                 "rss_per_call", "offer_to_first_remote_audio_p50"):  # fmt: skip
        assert prefix + name in metrics, sorted(metrics)
    main = metrics[prefix + "calls_per_core"]
    assert {"bench", "value", "unit", "peer", "peer_value", "ratio", "goal"} <= set(main)
    assert main["calls"] == 2 and main["goal"] == 200
    for direction in ("to_sip", "to_browser"):
        assert main["directions"][direction]["delivered"] > 0, main["directions"]
