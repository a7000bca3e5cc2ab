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


class EchoService:
    """Answers calls and reflects their RTP."""

    def __init__(self, media_host: str) -> None:
        self.media_host = media_host
        #: Reflectors of calls in progress, by call id (tests read the counters).
        self.reflectors: dict[str, list[_Reflector]] = {}

    async def _open(self) -> _Reflector:
        loop = asyncio.get_running_loop()
        _transport, protocol = await loop.create_datagram_endpoint(
            _Reflector, local_addr=(self.media_host, 0)
        )
        return protocol

    async def handle(self, call: SipCall) -> None:
        """The incoming-call handler for ``sip:echo@...``."""
        audio, video = await self._open(), await self._open()
        reflectors = [audio, video]
        self.reflectors[call.call_id] = reflectors

        def close(_call: SipCall) -> None:
            for reflector in reflectors:
                if reflector.transport is not None:
                    reflector.transport.close()
            self.reflectors.pop(call.call_id, None)

        call.on_end.append(close)
        local = LocalCapabilities(
            address=self.media_host,
            random_bytes=secrets.token_bytes,
            audio_port=_port(audio),
            video_port=_port(video),
            srtp=SrtpPolicy.OFF,
            username="gatewayd",
        )
        state: dict[str, SessionDescription | None] = {"last": None}

        async def on_offer(_call: SipCall, offer: bytes | None) -> bytes | None:
            try:
                if offer is None:
                    sdp = create_offer(local, state["last"])
                else:
                    sdp = answer(SessionDescription.parse(offer), local, state["last"])
            except GatewayError as exc:
                log.info("echo: offer refused", call_id=call.call_id, reason=exc.message)
                return None
            state["last"] = sdp
            return bytes(sdp)

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
