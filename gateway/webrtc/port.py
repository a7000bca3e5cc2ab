"""One slot of a browser leg as the media router sees it: an RTP port.

The router (``gateway/media/router.py``) moves RTP packets between ports
and decides per payload type whether to pass them through or transcode.
A browser leg hands out *payloads* (aiortc took SRTP and the transport off)
and sends payloads (aiortc packetizes, numbers and encrypts), so this
adapter rebuilds a plain RTP packet from each received payload (the
browser's own sequence number, timestamp, SSRC and payload type: the
router's jitter buffer needs them) and strips the header off what the
router sends.

What the router sees negotiated is the one codec the slot uses both ways
(aiortc sends with the first common codec, and so does the browser), so a
route towards a browser either passes that codec through or transcodes to
it; never another codec aiortc would mislabel.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

from gateway.media.negotiation import NegotiatedCodec, NegotiatedStream
from gateway.media.rtp import RtpError, header_sizes
from gateway.media.sdp_attributes import Direction
from gateway.webrtc.leg import SLOT_KIND, EncodedPayload, WebRtcLeg

_HEADER = struct.Struct("!BBHII")


def _fmtp(parameters: dict[str, object]) -> str | None:
    if not parameters:
        return None
    return ";".join(k if v is None else f"{k}={v}" for k, v in parameters.items())


class WebRtcPort:
    """``slot`` of ``leg`` as a ``RoutedStream``; ``close()`` unsubscribes."""

    #: aiortc numbers what it sends itself: the router may add packets (H.264
    #: parameter sets a room system sent only in its SDP).
    renumbers = True

    def __init__(self, leg: WebRtcLeg, slot: str) -> None:
        self.leg = leg
        self.slot = slot
        self.kind = SLOT_KIND[slot]
        self.on_rtp: Callable[..., None] | None = None
        self.on_keyframe_request: Callable[..., None] | None = None
        self.sent = 0
        self.refused = 0
        self._negotiated: NegotiatedStream | None = None
        self._codec_key: tuple[object, ...] | None = None
        self._codec: object = None  # aiortc's codec object the cache was made from
        self._undo = [leg.subscribe(slot, self._received), leg.on_keyframe_request(self._asked)]

    def __repr__(self) -> str:
        return f"<WebRtcPort {self.leg.leg_id} {self.slot}>"

    @property
    def negotiated(self) -> NegotiatedStream | None:
        """The slot's codec as a negotiated stream (a new object when it changed)."""
        codec = self.leg.negotiated_codec(self.slot)
        if codec is None:
            return None
        if codec is self._codec and self._negotiated is not None:
            return self._negotiated  # the per-packet case: nothing renegotiated
        self._codec = codec
        key = (codec.payloadType, codec.name, codec.clockRate, codec.channels,
               tuple(sorted(codec.parameters.items())))  # fmt: skip
        if key != self._codec_key or self._negotiated is None:
            negotiated = NegotiatedCodec(
                payload_type=codec.payloadType or 0,
                name=codec.name,
                clock_rate=codec.clockRate,
                channels=codec.channels or 1,
                fmtp=_fmtp(dict(codec.parameters)),
            )
            self._negotiated = NegotiatedStream(
                index=0, kind=self.kind, proto="UDP/TLS/RTP/SAVPF", accepted=True,
                mid=self.slot, codecs=(negotiated,), direction=Direction.SENDRECV,
                rtcp_mux=True,
            )  # fmt: skip
            self._codec_key = key
        return self._negotiated

    @negotiated.setter
    def negotiated(self, _value: NegotiatedStream | None) -> None:
        raise AttributeError("a browser slot's codec comes from its own negotiation")

    def _received(self, payload: EncodedPayload) -> None:
        on_rtp = self.on_rtp
        if on_rtp is None:
            return
        header = _HEADER.pack(
            0x80,
            (0x80 if payload.marker else 0) | (payload.payload_type & 0x7F),
            payload.sequence & 0xFFFF,
            payload.timestamp & 0xFFFFFFFF,
            payload.ssrc & 0xFFFFFFFF,
        )
        on_rtp(self, header + payload.payload, self.leg.clock.monotonic())

    def _asked(self, slot: str) -> None:
        if slot == self.slot and self.on_keyframe_request is not None:
            self.on_keyframe_request(self)

    def send_rtp(self, data: bytes | bytearray) -> bool:
        """Send the payload of one RTP packet from the router on this slot."""
        try:
            header, size = header_sizes(data)
        except RtpError:
            self.refused += 1
            return False
        timestamp = int.from_bytes(data[4:8], "big")
        marker = bool(data[1] & 0x80)
        payload = bytes(data[header : header + size])
        sent = self.leg.send_payload(self.slot, payload, timestamp, marker)
        if sent:
            self.sent += 1
        else:
            self.refused += 1
        return sent

    def switch_source(self) -> None:
        """Nothing to do: aiortc's sender numbers the packets of the slot itself."""

    def request_keyframe(self) -> None:
        """Ask the browser for a keyframe on this slot (PLI)."""
        self.leg.request_keyframe(self.slot)

    def close(self) -> None:
        """Stop taking the browser's packets (idempotent)."""
        undo, self._undo = self._undo, []
        for remove in undo:
            remove()


class ScreenOrCamera(WebRtcPort):
    """A browser's main video for a leg with one video (a SIP room system, a group):
    its shared screen while it shares, else its camera.

    One continuous stream whatever it shows: its own sequence numbers and
    SSRC, timestamps carried on across a switch; each switch asks the browser
    for a keyframe of what comes next.
    """

    def __init__(self, leg: WebRtcLeg) -> None:
        super().__init__(leg, "video")
        if "screen" in leg.slots:
            self._undo.append(leg.subscribe("screen", self._received))
        self.showing = "video"
        self.switches = 0
        self._ssrc = random.getrandbits(32)
        self._sequence = random.getrandbits(16)
        self._offset: int | None = None
        self._last_out = 0

    def _received(self, payload: EncodedPayload) -> None:
        on_rtp = self.on_rtp
        if on_rtp is None:
            return
        wanted = "screen" if self.leg.sharing() else "video"
        if payload.slot != wanted:
            return
        if wanted != self.showing:
            self.showing = wanted
            self.switches += 1
            self._offset = None
            self.leg.request_keyframe(wanted)
        if self._offset is None:  # carry the clock on: one frame (at 30 fps) later
            self._offset = (self._last_out + 3000 - payload.timestamp) & 0xFFFFFFFF
        timestamp = (payload.timestamp + self._offset) & 0xFFFFFFFF
        self._last_out = timestamp
        self._sequence = (self._sequence + 1) & 0xFFFF
        header = _HEADER.pack(
            0x80,
            (0x80 if payload.marker else 0) | (payload.payload_type & 0x7F),
            self._sequence,
            timestamp,
            self._ssrc,
        )
        on_rtp(self, header + payload.payload, self.leg.clock.monotonic())

    def request_keyframe(self) -> None:
        """A keyframe of what is shown now."""
        self.leg.request_keyframe(self.showing)
