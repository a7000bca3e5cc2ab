"""One SIP call into a room as the room and the linker see it, and the lobby's tones.

``DialInParticipant`` has the shape of a dialled-out ``SipParticipant``
(``bridges.base.OutboundParticipant``: ``participant_id``, ``role``,
``state``/``events()`` as ``DialEvent``s, ``media(kind)``, ``hangup()``) and
is the room's ``Leg`` itself (``media(kind)``, ``close()``), so the room side
treats a phone that called in like one it called. Its ``DialEvent``s are
``answered`` once the call is answered and ``ended`` at its end.

The player gives the caller something to hear while nobody talks to it: a
prompt for the PIN, an error signal after a wrong one, a waiting tone in the
waiting room. It stops when the participant is admitted (the linker sends the
room's audio from then on) and at the call's end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import numpy as np

from bridges.base import DialEvent, DialState
from bridges.sip.call import CallState, SipCall
from bridges.sip.media import SipMedia
from bridges.sip.participant import SipCallParticipant
from gateway.errors import GatewayError
from gateway.log import get_logger
from gateway.media.dtmf import DtmfDigit
from gateway.media.local import AudioPlayer, PcmSource
from gateway.media.router import RoutedStream
from gateway.rooms.room import Message, Participant
from mediacodecs.audio import Pcm
from mediacodecs.executor import MediaExecutor

log = get_logger(__name__)

#: (frequency in Hz or None for silence, seconds)
Segment = tuple[float | None, float]

#: Two short high beeps: "enter your PIN".
PROMPT: tuple[Segment, ...] = ((880.0, 0.15), (None, 0.1), (880.0, 0.15))
#: The special information tone (ITU-T E.180: 950/1400/1800 Hz): "that did not work".
ERROR: tuple[Segment, ...] = ((950.0, 0.33), (1400.0, 0.33), (1800.0, 0.33), (None, 0.4))
#: 425 Hz, one second on, four off (the European ringback cadence): "please wait".
WAITING: tuple[Segment, ...] = ((425.0, 1.0), (None, 4.0))
WAITING_HZ = 425.0


def tones(
    segments: tuple[Segment, ...], *, repeat: bool = False, level_dbfs: float = -12.0
) -> PcmSource:
    """A ``PcmSource`` playing ``segments`` once (then silence) or over and over."""
    amplitude = 32767 * 10 ** (level_dbfs / 20)
    cycles: dict[int, Pcm] = {}
    position = [0]

    def cycle(rate: int) -> Pcm:
        if rate not in cycles:
            parts = []
            for frequency, seconds in segments:
                t = np.arange(round(seconds * rate), dtype=np.float64) / rate
                wave = np.zeros_like(t) if frequency is None else np.sin(2 * np.pi * frequency * t)
                parts.append((amplitude * wave).astype(np.int16))
            cycles[rate] = np.concatenate(parts)
        return cycles[rate]

    def source(samples: int, rate: int) -> Pcm:
        pattern = cycle(rate)
        start = position[0]
        position[0] += samples
        index = np.arange(start, start + samples)
        if repeat:
            return pattern[index % pattern.size]
        out = np.zeros(samples, dtype=np.int16)
        inside = index < pattern.size
        out[inside] = pattern[index[inside]]
        return out

    return source


class DialInParticipant(SipCallParticipant):
    """A SIP call into a room: ``OutboundParticipant``-shaped, and the room's ``Leg``.

    Its ``state`` is ``trying`` until answered, then ``answered``, finally ``ended``.
    """

    bridge = "dial-in"

    def __init__(
        self,
        call: SipCall,
        media: SipMedia,
        role: str,
        *,
        executor: MediaExecutor | None,
        leave: Callable[[DialInParticipant], None],
    ) -> None:
        super().__init__(role, "in-")
        self.call = call
        self.sip_media = media
        self.executor = executor
        self._leave = leave
        #: The room membership once joined (None in the lobby, or after leaving).
        self.member: Participant | None = None
        self.waiting = False
        self.player: AudioPlayer | None = None
        self.digits: asyncio.Queue[str] = asyncio.Queue(maxsize=64)
        media.on_dtmf = self._dtmf
        call.on_end.append(self._ended)

    # --- OutboundParticipant (the rest in SipCallParticipant) ----------------------------
    def media(self, kind: str) -> RoutedStream | None:
        """The negotiated ``kind`` stream of the answered call (None before and after)."""
        if self.call.state is not CallState.ESTABLISHED:
            return None
        return self.sip_media.negotiated(kind)

    async def cancel(self) -> None:
        """The same as ``hangup`` (the call came to us)."""
        await self.hangup("cancelled")

    async def hangup(self, reason: str = "hangup") -> None:
        """End the call: BYE once answered, a 480 before."""
        await self.call.hangup(reason)

    async def send_dtmf(self, digits: str) -> None:
        """Not for calls into rooms yet (the room has nothing to send)."""
        raise GatewayError("sending DTMF to a dialled-in caller is not implemented",
                           http_status=501, sip_status=501)  # fmt: skip

    # --- the room's Leg ------------------------------------------------------------------
    async def close(self) -> None:
        """The room is done with this leg: hang up."""
        await self.hangup("left the room")

    def on_room_event(self, message: Message) -> None:
        """What the room tells this participant (``RoomDirectory.join``'s ``on_event``)."""
        kind = message.get("type")
        if kind == "waiting":
            self.waiting = True
            self.play(WAITING, repeat=True)
        elif kind == "admitted":
            self.waiting = False
            self.stop_playing()
        elif kind in ("rejected", "ended"):
            # Out of the room already; the room is mid-update, so leave and hang up after it.
            self.waiting = False
            loop = asyncio.get_running_loop()
            loop.call_soon(self._leave, self)
            self.call.endpoint.hangup_soon(self.call, f"room: {kind}")

    # --- the call ----------------------------------------------------------------------------
    def answered(self) -> None:
        """The 200 OK went out: media may flow; a waiting caller hears the waiting tone."""
        self._progress.emit(DialEvent(DialState.ANSWERED, 200))
        if self.waiting:
            self.play(WAITING, repeat=True)

    def play(self, segments: tuple[Segment, ...], *, repeat: bool = False) -> None:
        """Play ``segments`` to the caller (replacing what played), once the call is answered."""
        if self.call.state is not CallState.ESTABLISHED or self.executor is None:
            return
        audio = self.media("audio")
        if audio is None:
            return
        if self.player is None:
            self.player = AudioPlayer(audio, self.executor, tones(segments, repeat=repeat))
        else:
            self.player.source = tones(segments, repeat=repeat)
        self.player.start()

    def stop_playing(self) -> None:
        """Silence (idempotent)."""
        if self.player is not None:
            self.player.stop()

    def _dtmf(self, digit: DtmfDigit) -> None:
        if self.digits.full():
            return  # nobody reads them (in the room): keep only the first
        self.digits.put_nowait(digit.digit)

    async def read_pin(self, length: int, timeout: float) -> str | None:
        """Digits until ``#`` or ``length`` of them (``*`` starts over); None when
        ``timeout`` passes first or the call ends. Keys pressed early count (type-ahead)."""
        entered = ""
        try:
            async with asyncio.timeout(timeout):
                while len(entered) < length:
                    key = await self._next_key()
                    if key is None:
                        return None
                    if key == "#":
                        if entered:
                            break
                    elif key == "*":
                        entered = ""
                    elif key.isdigit():
                        entered += key
        except TimeoutError:
            return None
        return entered

    async def _next_key(self) -> str | None:
        getter = asyncio.ensure_future(self.digits.get())
        ended = asyncio.ensure_future(self.call.ended.wait())
        try:
            await asyncio.wait({getter, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in (getter, ended):
                if not future.done():
                    future.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        return None

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds`` (a tone plays), or less if the call ends meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.call.ended.wait(), seconds)

    def _ended(self, _call: SipCall) -> None:
        self.stop_playing()
        self._leave(self)
        self._progress.emit(DialEvent(DialState.ENDED, None, self.call.end_reason or ""))
