"""Two browser legs connected without decoding: each one's payloads go to the other.

Per slot (audio, camera video, screen), a payload from leg A is sent by leg
B in the same slot as it is when B's sender
negotiated the same codec (same MIME subtype and clock rate); anything else
is dropped and counted (``gatewayd_rtp_dropped_packets_total{reason=
"codec_mismatch"}``): transcoding between browsers belongs to the router.
Keyframe requests from B's browser go to A's browser, at most one per
``KEYFRAME_INTERVAL`` (on the injected clock), and each side is asked for a
keyframe when the two are connected. B's browser's bandwidth estimate (REMB)
goes to A's browser, so A's encoder sends what B can take, and never more
than B's receive cap (data-saving mode): a new cap is told to A's browser at
once, as a REMB on each video slot.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway import metrics
from gateway.clock import Clock, SystemClock
from gateway.webrtc.leg import SLOT_KIND, EncodedPayload, WebRtcLeg

#: Seconds between keyframe requests forwarded to one browser.
KEYFRAME_INTERVAL = 0.3
#: The estimate that lifts a cap (bit/s): what "high" quality allows, 720p.
UNCAPPED = 2_500_000


@dataclass(slots=True)
class DirectionStats:
    """What one direction (source -> sink) did."""

    forwarded: int = 0
    dropped: int = 0
    keyframe_requests: int = 0
    keyframe_requests_throttled: int = 0
    bitrate_estimates: int = 0


@dataclass(slots=True)
class _Direction:
    source: WebRtcLeg
    sink: WebRtcLeg
    clock: Clock
    stats: DirectionStats = field(default_factory=DirectionStats)
    last_keyframe_request: dict[str, float] = field(default_factory=dict)

    def forward(self, payload: EncodedPayload) -> None:
        if self.sink.send_codec(payload.slot) != payload.codec or not self.sink.send_payload(
            payload.slot, payload.payload, payload.timestamp, payload.marker
        ):
            self.stats.dropped += 1
            metrics.RTP_DROPPED.labels(reason="codec_mismatch").inc()
            return
        self.stats.forwarded += 1

    def bitrate_estimated(self, slot: str, bitrate: int) -> None:
        """The sink's browser can take ``bitrate``: the source's browser should send no more."""
        cap = self.sink.receive_cap
        if cap is not None and SLOT_KIND[slot] == "video":
            bitrate = min(bitrate, cap)
        if self.source.send_bitrate_estimate(slot, bitrate):
            self.stats.bitrate_estimates += 1

    def cap_changed(self, cap: int | None, slots: list[str]) -> None:
        """The sink's receive cap changed: tell the source's browser now (no cap: ``UNCAPPED``)."""
        for slot in slots:
            if SLOT_KIND[slot] == "video":
                self.bitrate_estimated(slot, cap if cap is not None else UNCAPPED)

    def keyframe_wanted(self, slot: str) -> None:
        """The sink's browser lost a picture: ask the source's browser for a keyframe."""
        now = self.clock.monotonic()
        last = self.last_keyframe_request.get(slot)
        if last is not None and now - last < KEYFRAME_INTERVAL:
            self.stats.keyframe_requests_throttled += 1
            return
        if self.source.request_keyframe(slot):
            self.last_keyframe_request[slot] = now
            self.stats.keyframe_requests += 1


class Passthrough:
    """Connects ``a`` and ``b`` both ways, for every slot both have; ``close()`` undoes it."""

    def __init__(self, a: WebRtcLeg, b: WebRtcLeg, *, clock: Clock | None = None) -> None:
        clock = clock or SystemClock()
        self.a_to_b = _Direction(a, b, clock)
        self.b_to_a = _Direction(b, a, clock)
        self._undo: list[Callable[[], None]] = []
        slots = [s for s in a.attached() if s in b.attached()]
        for direction in (self.a_to_b, self.b_to_a):
            for slot in slots:
                self._undo.append(direction.source.subscribe(slot, direction.forward))
            # the sink's browser asks the sink leg; the request goes to the source's browser
            sink, forward = direction.sink, direction
            self._undo.append(sink.on_keyframe_request(forward.keyframe_wanted))
            self._undo.append(sink.on_bitrate_estimate(forward.bitrate_estimated))
            self._undo.append(
                sink.on_receive_cap(functools.partial(forward.cap_changed, slots=slots))
            )
            if sink.receive_cap is not None:
                forward.cap_changed(sink.receive_cap, slots)
        self._kinds = [SLOT_KIND[s] for s in slots]
        for kind in self._kinds:
            metrics.MEDIA_PASSTHROUGH_ACTIVE.labels(kind=kind).inc(2)
        for slot in slots:
            a.request_keyframe(slot)
            b.request_keyframe(slot)

    def close(self) -> None:
        """Stop forwarding (idempotent)."""
        undo, self._undo = self._undo, []
        for remove in undo:
            remove()
        if undo:
            for kind in self._kinds:
                metrics.MEDIA_PASSTHROUGH_ACTIVE.labels(kind=kind).dec(2)
