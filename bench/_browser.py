"""What the browser benchmarks share: a cheap aiortc peer standing in for a browser.

It sends media encoded once in advance (pushed into a ``PassthroughTrack``, so
nothing is encoded during the run) and counts what arrives without decoding it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

#: ``on_packet(kind, packet)``: every RTP packet received (not decoded).
PacketCallback = Callable[[str, RtpPacket], None]


class Browser:
    """An aiortc peer with one sendrecv transceiver per kind, sending pre-encoded payloads.

    ``codecs`` restricts a kind to one codec (``setCodecPreferences``, e.g.
    ``{"audio": "PCMU"}``), as a browser told to prefer it would offer.
    ``keyframe_wanted[kind]`` is set when the remote peer asks for a keyframe.
    """

    def __init__(
        self,
        kinds: Sequence[str] = ("video", "audio"),
        *,
        codecs: Mapping[str, str] | None = None,
        on_packet: PacketCallback | None = None,
        capacity: int = 8,
    ) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender

        from gateway.webrtc import aiortc_internals as internals

        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.tracks: dict[str, internals.PassthroughTrack] = {}
        self.received = dict.fromkeys(kinds, 0)  # video: frames (marker bits); audio: packets
        self.keyframe_wanted = dict.fromkeys(kinds, False)
        self.on_packet = on_packet
        for kind in kinds:
            track = internals.PassthroughTrack(kind, capacity=capacity)
            transceiver = self.pc.addTransceiver(track, direction="sendrecv")
            if codecs and kind in codecs:
                wanted = codecs[kind].lower()
                available = RTCRtpSender.getCapabilities(kind).codecs
                transceiver.setCodecPreferences([c for c in available if c.name.lower() == wanted])
            internals.install_passthrough_sender(transceiver.sender)
            internals.on_keyframe_request(transceiver.sender, self._asked(kind))
            internals.ReceiverHook(transceiver.receiver, self._counter(kind))
            self.tracks[kind] = track

    def _asked(self, kind: str) -> Callable[[], None]:
        def asked() -> None:
            self.keyframe_wanted[kind] = True

        return asked

    def _counter(self, kind: str) -> Callable[[RtpPacket, RTCRtpCodecParameters], None]:
        def count(packet: RtpPacket, _codec: RTCRtpCodecParameters) -> None:
            if kind == "audio" or packet.marker:
                self.received[kind] += 1
            if self.on_packet is not None:
                self.on_packet(kind, packet)

        return count

    async def offer(self) -> str:
        from gateway.webrtc import aiortc_internals as internals

        internals.pin_host_addresses(self.pc, ["127.0.0.1"])
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def answer(self, offer: str) -> str:
        from aiortc import RTCSessionDescription

        from gateway.webrtc import aiortc_internals as internals

        await self.pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        internals.pin_host_addresses(self.pc, ["127.0.0.1"])
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return str(self.pc.localDescription.sdp)

    async def accept_answer(self, answer: str) -> None:
        from aiortc import RTCSessionDescription

        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
