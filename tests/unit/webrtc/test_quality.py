"""Automatic quality on a fake clock: down on a poor link, up by probing, with hysteresis."""

from __future__ import annotations

from gateway import metrics
from gateway.clock import FakeClock
from gateway.webrtc.quality import (
    AUDIO_AFTER,
    AUDIO_RETRY,
    DOWN_AFTER,
    MAX_UP_AFTER,
    RAMP_UP,
    UP_AFTER,
    QualityMonitor,
)


class Rig:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.changes: list[tuple[str, str]] = []
        self.monitor = QualityMonitor(self.clock, lambda m, r: self.changes.append((m, r)))
        self.feed(150_000, RAMP_UP)  # a call's first seconds: estimates ramp up, no decision
        assert self.changes == []

    def feed(self, bps: int, seconds: float, every: float = 0.5) -> None:
        """Estimates of ``bps`` every ``every`` seconds for ``seconds``."""
        for _ in range(round(seconds / every)):
            self.monitor.estimate(bps)
            self.clock.advance(every)


def _changes(direction: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "gatewayd_quality_changes_total", {"direction": direction}
    )
    return value or 0.0


def test_a_poor_link_goes_low_only_when_it_stays_poor() -> None:
    rig = Rig()
    downs = _changes("down")
    rig.feed(2_000_000, 10)
    rig.feed(150_000, DOWN_AFTER - 1)  # a dip shorter than DOWN_AFTER
    rig.feed(2_000_000, 2)
    assert rig.changes == []
    rig.feed(150_000, DOWN_AFTER + 1)
    assert rig.changes == [("low", "auto")] and rig.monitor.mode == "low"
    assert _changes("down") == downs + 1


def test_recovery_probes_up_and_a_failed_probe_doubles_the_wait() -> None:
    rig = Rig()
    rig.feed(150_000, DOWN_AFTER + 1)
    rig.feed(280_000, UP_AFTER - 2)  # carrying the low rate, not yet long enough
    assert rig.monitor.mode == "low"
    rig.feed(280_000, 3)
    assert rig.changes[-1] == ("high", "auto")
    rig.feed(150_000, DOWN_AFTER + 1)  # the probe failed at once
    assert rig.changes[-1] == ("low", "auto") and rig.monitor.up_wait == 2 * UP_AFTER
    rig.feed(280_000, 2 * UP_AFTER + 1)
    assert rig.changes[-1] == ("high", "auto")
    rig.feed(1_500_000, 30)  # this probe holds: the wait is reset
    assert rig.changes[-1] == ("high", "auto") and rig.monitor.up_wait == UP_AFTER
    for _ in range(6):  # failing probes again and again: the wait stops at its cap
        rig.feed(150_000, DOWN_AFTER + 1)
        rig.feed(280_000, rig.monitor.up_wait + 1)
    assert rig.monitor.up_wait == MAX_UP_AFTER


def test_the_users_choice_wins() -> None:
    rig = Rig()
    rig.monitor.choose("low")
    assert rig.changes == [("low", "manual")]
    rig.feed(2_000_000, 300)
    assert rig.monitor.mode == "low", "a manual low is never raised"
    rig.monitor.choose("high")
    assert rig.changes[-1] == ("high", "manual")
    rig.feed(150_000, DOWN_AFTER + 1)
    assert rig.changes[-1] == ("low", "auto"), "a poor link still lowers a manual high"


def test_a_link_too_poor_for_data_saving_falls_back_to_audio_and_video_returns() -> None:
    rig = Rig()
    rig.feed(150_000, DOWN_AFTER + 1)
    assert rig.changes[-1] == ("low", "auto")
    rig.feed(60_000, AUDIO_AFTER + 1)  # the switch comes within the last second fed
    assert rig.changes[-1] == ("audio", "auto")
    rig.clock.advance(AUDIO_RETRY - 2)
    rig.monitor.tick()
    assert rig.changes[-1] == ("audio", "auto"), "no video before the retry time"
    rig.clock.advance(1.5)
    rig.monitor.tick()
    assert rig.changes[-1] == ("low", "auto"), "video is tried again"
    rig.feed(60_000, AUDIO_AFTER + 1)  # still too poor: back to audio, a longer wait
    assert rig.monitor.mode == "audio" and rig.monitor.audio_wait == 2 * AUDIO_RETRY
    rig.monitor.choose("high")  # the user insists: the choice wins
    assert rig.changes[-1] == ("high", "manual")


def test_a_manual_low_still_falls_back_to_audio_on_a_very_poor_link() -> None:
    rig = Rig()
    rig.monitor.choose("low")
    rig.feed(60_000, AUDIO_AFTER + 1)
    assert rig.changes[-1] == ("audio", "auto")


def test_sustained_loss_lowers_quality_and_holds_upgrades() -> None:
    rig = Rig()
    for _ in range(round(DOWN_AFTER) + 1):  # a receiver report a second, 15 % lost
        rig.monitor.loss(0.15)
        rig.monitor.estimate(2_000_000)  # the estimate alone looks fine
        rig.clock.advance(1)
    assert rig.changes[-1] == ("low", "auto")
    for _ in range(40):  # a steady estimate, but packets still get lost: no probe
        rig.monitor.loss(0.12)
        rig.monitor.estimate(280_000)
        rig.clock.advance(1)
    assert rig.changes[-1] == ("low", "auto")
    for _ in range(round(AUDIO_AFTER) + 1):  # a third lost: audio only
        rig.monitor.loss(0.35)
        rig.clock.advance(1)
    assert rig.changes[-1] == ("audio", "auto")
