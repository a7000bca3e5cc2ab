"""A browser's media sent back to it, undecoded: the test call of the device test (F11).

Every payload a slot receives goes out on the same slot (same codec by
construction: one transceiver), keyframe requests and bandwidth estimates
(REMB) of the browser's receivers go to its own senders, so the browser's
encoder settles on what its link carries, which is the bandwidth estimate
the device test shows.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway import metrics
from gateway.webrtc.leg import SLOT_KIND, EncodedPayload, WebRtcLeg


class Echo:
    """Reflects ``leg``'s media to itself until ``close()``."""

    def __init__(self, leg: WebRtcLeg) -> None:
        self.leg = leg
        self.echoed = 0
        self.dropped = 0
        slots = leg.attached()
        self._undo: list[Callable[[], None]] = [leg.subscribe(s, self._reflect) for s in slots]
        self._undo.append(leg.on_keyframe_request(self._keyframe_wanted))
        self._undo.append(leg.on_bitrate_estimate(self._bitrate_estimated))
        self._kinds = [SLOT_KIND[s] for s in slots]
        for kind in self._kinds:
            metrics.MEDIA_PASSTHROUGH_ACTIVE.labels(kind=kind).inc()
        for slot in slots:
            leg.request_keyframe(slot)

    def _reflect(self, payload: EncodedPayload) -> None:
        if self.leg.send_payload(payload.slot, payload.payload, payload.timestamp, payload.marker):
            self.echoed += 1
        else:
            self.dropped += 1

    def _keyframe_wanted(self, slot: str) -> None:
        self.leg.request_keyframe(slot)

    def _bitrate_estimated(self, slot: str, bitrate: int) -> None:
        self.leg.send_bitrate_estimate(slot, bitrate)

    def close(self) -> None:
        """Stop reflecting (idempotent)."""
        undo, self._undo = self._undo, []
        for remove in undo:
            remove()
        if undo:
            for kind in self._kinds:
                metrics.MEDIA_PASSTHROUGH_ACTIVE.labels(kind=kind).dec()
