"""Two browser legs connected without decoding: each one's payloads go to the other.

Per kind, a payload from leg A is sent by leg B as it is when B's sender
negotiated the same codec (same MIME subtype and clock rate); anything else
is dropped and counted (``gatewayd_rtp_dropped_packets_total{reason=
"codec_mismatch"}``): transcoding between browsers belongs to the router.
Keyframe requests from B's browser go to A's browser, at most one per
``KEYFRAME_INTERVAL`` (on the injected clock), and each side is asked for a
keyframe when the two are connected. B's browser's bandwidth estimate (REMB)
goes to A's browser, so A's encoder sends what B can take.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gateway import metrics
from gateway.clock import Clock, SystemClock
from gateway.webrtc.leg import EncodedPayload, WebRtcLeg

#: Seconds between keyframe requests forwarded to one browser.
KEYFRAME_INTERVAL = 0.3


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
        if self.sink.send_codec(payload.kind) != payload.codec or not self.sink.send_payload(
            payload.kind, payload.payload, payload.timestamp, payload.marker
        ):
            self.stats.dropped += 1
            metrics.RTP_DROPPED.labels(reason="codec_mismatch").inc()
            return
        self.stats.forwarded += 1

    def bitrate_estimated(self, kind: str, bitrate: int) -> None:
        """The sink's browser can take ``bitrate``: the source's browser should send no more."""
        if self.source.send_bitrate_estimate(kind, bitrate):
            self.stats.bitrate_estimates += 1

    def keyframe_wanted(self, kind: str) -> None:
        """The sink's browser lost a picture: ask the source's browser for a keyframe."""
        now = self.clock.monotonic()
        last = self.last_keyframe_request.get(kind)
        if last is not None and now - last < KEYFRAME_INTERVAL:
            self.stats.keyframe_requests_throttled += 1
            return
        if self.source.request_keyframe(kind):
            self.last_keyframe_request[kind] = now
            self.stats.keyframe_requests += 1


class Passthrough:
    """Connects ``a`` and ``b`` both ways, for every kind both have; ``close()`` undoes it."""

    def __init__(self, a: WebRtcLeg, b: WebRtcLeg, *, clock: Clock | None = None) -> None:
        clock = clock or SystemClock()
        self.a_to_b = _Direction(a, b, clock)
        self.b_to_a = _Direction(b, a, clock)
        self._undo: list[Callable[[], None]] = []
        kinds = [k for k in a.kinds if k in b.kinds]
        for direction in (self.a_to_b, self.b_to_a):
            for kind in kinds:
                self._undo.append(direction.source.subscribe(kind, direction.forward))
            # the sink's browser asks the sink leg; the request goes to the source's browser
            self._undo.append(direction.sink.on_keyframe_request(direction.keyframe_wanted))
            self._undo.append(direction.sink.on_bitrate_estimate(direction.bitrate_estimated))
        for kind in kinds:
            metrics.MEDIA_PASSTHROUGH_ACTIVE.labels(kind=kind).inc(2)
        self._kinds = kinds
        for kind in kinds:
            a.request_keyframe(kind)
            b.request_keyframe(kind)

    def close(self) -> None:
        """Stop forwarding (idempotent)."""
        undo, self._undo = self._undo, []
        for remove in undo:
            remove()
        if undo:
            for kind in self._kinds:
                metrics.MEDIA_PASSTHROUGH_ACTIVE.labels(kind=kind).dec(2)
