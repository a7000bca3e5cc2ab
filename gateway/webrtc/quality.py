"""Automatic quality for one browser: down when its link is poor, up when it recovers.

Sans-IO, on an injected clock. The input is what the browser says it can
receive: its bandwidth estimates for our video (RTCP REMB, several a
second), and the loss it reports about our video (RTCP receiver reports):
sustained loss lowers quality like a low estimate does and holds upgrades.
Below ``DOWN_BPS`` for ``DOWN_AFTER`` seconds the participant goes
to data-saving ("low": 320x240, 15 fps, <= 200 kbit/s, the same limits as
the manual toggle). Coming back needs a probe: a receiver's estimate
cannot rise far above what it is sent (browsers cap it near 1.5 times the
incoming rate), so once the link has carried the low rate without trouble
(estimates at least ``STEADY_BPS``) for ``up_wait`` seconds the monitor
tries "high" again; a probe that falls back soon after doubles the wait
(15 s up to 2 min), a probe that holds resets it. The gap between the
thresholds and the waits are the hysteresis: a link at the edge does not
flap. A link too poor even for data saving (below ``AUDIO_BPS`` for
``AUDIO_AFTER`` seconds) falls back to audio only (no video either way);
video is tried again after ``AUDIO_RETRY`` seconds (doubling after each
failure), as no video means no estimates to go by (``tick``). A user's own
choice wins: after a manual "low" the monitor never
raises quality, after a manual "high" it may lower it again when the link
is poor (a fair trade for a call that keeps going). Every change is counted
(``gatewayd_quality_changes_total{direction}``) and reported through
``on_change(mode, reason)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from gateway import metrics
from gateway.clock import Clock

Mode = Literal["high", "low", "audio"]

DOWN_BPS = 300_000
DOWN_AFTER = 4.0
#: Seconds after the first estimate in which nothing is decided: a browser's
#: estimate starts low and ramps up over the first seconds of a call.
RAMP_UP = 8.0
STEADY_BPS = 250_000
UP_AFTER = 15.0
MAX_UP_AFTER = 120.0
PROBE_FAILS_WITHIN = 10.0
#: Even data saving too much: below this for ``AUDIO_AFTER`` seconds, audio only.
AUDIO_BPS = 100_000
AUDIO_AFTER = 6.0
#: Seconds of audio only before video is tried again (doubling after a failure).
AUDIO_RETRY = 20.0
#: Loss the browser reports about our video (RTCP receiver reports): from this
#: fraction on for ``DOWN_AFTER`` seconds data saving, from ``LOSS_AUDIO`` on for
#: ``AUDIO_AFTER`` seconds audio only; any loss over ``LOSS_DOWN`` holds an upgrade.
LOSS_DOWN = 0.10
LOSS_AUDIO = 0.30


class QualityMonitor:
    """Decides a browser's quality mode from its receive estimates."""

    def __init__(self, clock: Clock, on_change: Callable[[Mode, str], None]) -> None:
        self.clock = clock
        self.on_change = on_change
        self.mode: Mode = "high"
        self.manual: Mode | None = None
        self.changes = 0
        self.up_wait = UP_AFTER
        self._below_since: float | None = None
        self._steady_since: float | None = None
        self._raised_at: float | None = None
        self._first_at: float | None = None
        self.audio_wait = AUDIO_RETRY
        self._poor_since: float | None = None
        self._audio_since = 0.0
        self._video_back_at: float | None = None
        self._lossy_since: float | None = None

    def estimate(self, bps: int) -> None:
        """One bandwidth estimate of the browser (bit/s)."""
        now = self.clock.monotonic()
        if self._first_at is None:
            self._first_at = now
        if now - self._first_at < RAMP_UP:
            return
        if self.mode == "high":
            self._while_high(bps, now)
        elif self.mode == "low":
            self._while_low(bps, now)

    def loss(self, fraction: float) -> None:
        """The fraction (0-1) of our video the browser reported lost since its last report."""
        now = self.clock.monotonic()
        if self._first_at is None or now - self._first_at < RAMP_UP:
            return
        if fraction < LOSS_DOWN:
            self._lossy_since = None
            return
        self._steady_since = None  # no upgrade while packets get lost
        if self._lossy_since is None:
            self._lossy_since = now
        lasted = now - self._lossy_since
        if self.mode == "high" and lasted >= DOWN_AFTER:
            self._set("low", "auto", "down")
        elif self.mode == "low" and fraction >= LOSS_AUDIO and lasted >= AUDIO_AFTER:
            self._audio_since, self._video_back_at = now, None
            self._set("audio", "auto", "down")

    def tick(self) -> None:
        """Once a second or so: audio only ends by time, as no video means no estimates."""
        now = self.clock.monotonic()
        if self.mode == "audio" and now - self._audio_since >= self.audio_wait:
            self._video_back_at = now
            self._set("low", "auto", "up")

    def _while_high(self, bps: int, now: float) -> None:
        if bps >= DOWN_BPS:
            self._below_since = None
            if self._raised_at is not None and now - self._raised_at > PROBE_FAILS_WITHIN:
                self._raised_at, self.up_wait = None, UP_AFTER  # the probe held
            return
        if self._below_since is None:
            self._below_since = now
        if now - self._below_since < DOWN_AFTER:
            return
        probing = self._raised_at is not None
        self.up_wait = min(MAX_UP_AFTER, self.up_wait * 2) if probing else UP_AFTER
        self._raised_at = None
        self._set("low", "auto", "down")

    def _while_low(self, bps: int, now: float) -> None:
        if bps < AUDIO_BPS:
            if self._poor_since is None:
                self._poor_since = now
            if now - self._poor_since >= AUDIO_AFTER:
                back = self._video_back_at
                failed = back is not None and now - back <= AUDIO_AFTER + PROBE_FAILS_WITHIN
                self.audio_wait = min(MAX_UP_AFTER, self.audio_wait * 2) if failed else AUDIO_RETRY
                self._audio_since, self._video_back_at = now, None
                self._set("audio", "auto", "down")
            return
        self._poor_since = None
        if self.manual == "low":
            return
        if bps < STEADY_BPS:
            self._steady_since = None
            return
        if self._steady_since is None:
            self._steady_since = now
        if now - self._steady_since >= self.up_wait:
            self._set("high", "auto", "up")
            self._raised_at = now

    def choose(self, mode: Mode) -> None:
        """The user picked ``mode`` (the data-saving toggle: high or low)."""
        self.manual = mode
        self._raised_at = None
        self.up_wait = UP_AFTER
        if mode != self.mode:
            self._set(mode, "manual", "down" if mode == "low" else "up")

    def _set(self, mode: Mode, reason: str, direction: str) -> None:
        self.mode = mode
        self.changes += 1
        self._below_since = self._steady_since = self._poor_since = self._lossy_since = None
        metrics.QUALITY_CHANGES.labels(direction=direction).inc()
        self.on_change(mode, reason)
