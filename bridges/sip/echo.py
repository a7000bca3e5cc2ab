"""The built-in echo service: ``sip:echo@<gateway>`` answers and sends the
caller's RTP back, so an operator or a peer agency can test its path.

Until the media plane bridges rooms, this is a plain RTP reflector: one UDP
socket per accepted stream, symmetric RTP (packets go back to where they
came from, so NAT is no problem), SSRC changed so the caller does not see
its own stream as a loop. RTCP is not reflected. Offer/answer goes
through ``gateway.media.offer_answer`` like every other leg; SRTP is
refused (a reflector cannot re-key SDES streams).
"""

from __future__ import annotations

import asyncio
import secrets
import struct
from dataclasses import dataclass
from typing import cast

from bridges.sip.call import SipCall
from gateway.errors import GatewayError
from gateway.log import get_logger
from gateway.media.capabilities import LocalCapabilities, SrtpPolicy
from gateway.media.offer_answer import answer, create_offer
from gateway.media.sdp import SessionDescription

log = get_logger(__name__)

_SSRC_MASK = 0x5A5A5A5A


@dataclass
class ReflectorStats:
    """Packets seen by one reflector socket."""

    received: int = 0
    sent: int = 0


class _Reflector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.stats = ReflectorStats()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport is not a DatagramTransport subclass.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.stats.received += 1
        if len(data) < 12 or data[0] >> 6 != 2:
            return  # not RTP (STUN, garbage)
        if 200 <= data[1] <= 206:
            return  # RTCP (rtcp-mux): not reflected
        (ssrc,) = struct.unpack_from("!I", data, 8)
        packet = data[:8] + struct.pack("!I", ssrc ^ _SSRC_MASK) + data[12:]
        if self.transport is not None:
            self.transport.sendto(packet, addr)
            self.stats.sent += 1


class EchoMedia:
    """The reflector sockets of one echo call and the offer/answer state."""

    def __init__(self, media_host: str) -> None:
        self.media_host = media_host
        self.reflectors: list[_Reflector] = []
        self.last: SessionDescription | None = None
        self.local: LocalCapabilities | None = None

    async def open(self) -> EchoMedia:
        """Bind one socket for audio and one for video."""
        loop = asyncio.get_running_loop()
        for _ in range(2):
            _t, protocol = await loop.create_datagram_endpoint(
                _Reflector, local_addr=(self.media_host, 0)
            )
            self.reflectors.append(protocol)
        self.local = LocalCapabilities(
            address=self.media_host,
            random_bytes=secrets.token_bytes,
            audio_port=_port(self.reflectors[0]),
            video_port=_port(self.reflectors[1]),
            srtp=SrtpPolicy.OFF,
            username="gatewayd",
        )
        return self

    def offer(self) -> bytes:
        """Our offer (outgoing call, or a late-offer INVITE)."""
        assert self.local is not None
        self.last = create_offer(self.local, self.last)
        return bytes(self.last)

    def answer(self, offer: bytes) -> bytes:
        """Our answer to the peer's offer; raises GatewayError (488) when nothing fits."""
        assert self.local is not None
        self.last = answer(SessionDescription.parse(offer), self.local, self.last)
        return bytes(self.last)

    @property
    def stats(self) -> list[ReflectorStats]:
        """Counters per socket (audio, video)."""
        return [r.stats for r in self.reflectors]

    def close(self) -> None:
        """Release the sockets (idempotent)."""
        for reflector in self.reflectors:
            if reflector.transport is not None:
                reflector.transport.close()


class EchoService:
    """Answers calls and reflects their RTP."""

    def __init__(self, media_host: str) -> None:
        self.media_host = media_host
        #: Media of calls in progress, by call id (tests read the counters).
        self.calls: dict[str, EchoMedia] = {}

    async def handle(self, call: SipCall) -> None:
        """The incoming-call handler for ``sip:echo@...``."""
        media = await EchoMedia(self.media_host).open()
        self.calls[call.call_id] = media

        def close(_call: SipCall) -> None:
            media.close()
            self.calls.pop(call.call_id, None)

        call.on_end.append(close)

        async def on_offer(_call: SipCall, offer: bytes | None) -> bytes | None:
            try:
                return media.offer() if offer is None else media.answer(offer)
            except GatewayError as exc:
                log.info("echo: offer refused", call_id=call.call_id, reason=exc.message)
                return None

        call.on_offer = on_offer
        body = await on_offer(call, call.remote_sdp)
        if body is None:
            await call.reject(488, headers=[("Warning", '399 gatewayd "no common media"')])
            return
        await call.answer(body)
        log.info("echo call answered", call_id=call.call_id)


def _port(reflector: _Reflector) -> int:
    assert reflector.transport is not None
    port: int = reflector.transport.get_extra_info("sockname")[1]
    return port
