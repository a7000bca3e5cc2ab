"""One browser leg: an ``RTCPeerConnection`` as an explicit state machine.

The leg answers a browser's offer (or makes one), trickles ICE candidates
both ways, and moves media *encoded*: per slot, incoming RTP payloads go to
subscribers (``subscribe``) and outgoing payloads are packetized as they are
(``send_payload``); keyframe requests and bandwidth estimates (REMB) go both
ways (``request_keyframe`` / ``on_keyframe_request``, ``send_bitrate_estimate``
/ ``on_bitrate_estimate``). Nothing is decoded or encoded here; the aiortc
internals that make this possible live in ``aiortc_internals``.

Media is organised in **slots**, one m-line each: ``audio``, ``video`` (the
camera) and ``screen`` (a second video m-line for screen sharing). A browser
offers all three from the start, with nothing on the screen sender until it
shares; sharing is then ``replaceTrack`` in the browser and needs no
renegotiation (docs/decisions.md, "Screen sharing as a pre-negotiated
slot"). Offered m-lines are given to slots in order, by kind; an m-line no
slot takes is answered inactive.

ICE restart: aiortc 1.16 cannot restart ICE on a running transport, so a new
offer with a new ``ice-ufrag`` rebuilds the peer connection (fresh ICE and
DTLS, same subscriptions, same listeners) and answers from the new one.

Receive cap: ``set_receive_cap(bps)`` limits what this leg's browser should
be sent (data-saving mode); whoever feeds the leg (``Passthrough``) keeps
the sources' bandwidth estimates under it.
"""

from __future__ import annotations

import asyncio
import enum
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.exceptions import InvalidAccessError, OperationError
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters
from aiortc.rtp import RtpPacket
from aiortc.sdp import candidate_from_sdp, candidate_to_sdp

from gateway import metrics
from gateway.clock import Clock, SystemClock
from gateway.errors import BadRequest, Busy, GatewayError
from gateway.log import get_logger
from gateway.settings import WebRtcSettings
from gateway.webrtc import aiortc_fastpath as fastpath
from gateway.webrtc import aiortc_internals as internals
from gateway.webrtc.ice import ice_servers

log = get_logger(__name__)

#: The media slots of a browser leg, in m-line order, and each one's media kind.
SLOTS = ("audio", "video", "screen")
SLOT_KIND = {"audio": "audio", "video": "video", "screen": "video"}
#: Seconds without screen video after which a browser counts as not sharing.
SCREEN_GONE_AFTER = 1.0


class LegState(enum.Enum):
    """Where a browser leg is."""

    NEW = "new"
    OFFERED = "offered"  # we sent an offer, no answer yet
    CONNECTING = "connecting"  # descriptions exchanged; ICE and DTLS running
    CONNECTED = "connected"
    RESTARTING = "restarting"  # a new offer with a new ice-ufrag: rebuilding the transport
    FAILED = "failed"  # ICE or DTLS failed; the browser may restart ICE
    CLOSED = "closed"


_TRANSITIONS: dict[LegState, frozenset[LegState]] = {
    LegState.NEW: frozenset({LegState.OFFERED, LegState.CONNECTING, LegState.CLOSED}),
    LegState.OFFERED: frozenset({LegState.CONNECTING, LegState.FAILED, LegState.CLOSED}),
    LegState.CONNECTING: frozenset(
        {LegState.CONNECTED, LegState.FAILED, LegState.RESTARTING, LegState.CLOSED}
    ),
    LegState.CONNECTED: frozenset({LegState.RESTARTING, LegState.FAILED, LegState.CLOSED}),
    LegState.RESTARTING: frozenset({LegState.CONNECTING, LegState.FAILED, LegState.CLOSED}),
    LegState.FAILED: frozenset({LegState.RESTARTING, LegState.CLOSED}),
    LegState.CLOSED: frozenset(),
}


class LegStateError(GatewayError):
    """An operation that the leg's state does not allow (e.g. an answer without an offer):
    409 for HTTP, 491 (Request Pending) for SIP."""

    http_status = 409
    sip_status = 491
    reason = "Conflict"


@dataclass(frozen=True, slots=True)
class EncodedPayload:
    """One RTP payload as the browser sent it (after SRTP), not depacketized."""

    slot: str  # "audio", "video" or "screen"
    kind: str  # "audio" or "video"
    codec: str  # MIME subtype as negotiated: "VP8", "H264", "opus", ...
    clock_rate: int
    payload: bytes
    timestamp: int
    marker: bool
    sequence: int
    ssrc: int
    payload_type: int = 0


PayloadCallback = Callable[[EncodedPayload], None]
SlotCallback = Callable[[str], None]
CapCallback = Callable[[int | None], None]
#: Local ICE candidate ("candidate:..." as in SDP, mid, m-line index); None ends gathering.
CandidateCallback = Callable[[str | None, str | None, int | None], None]

#: What aiortc raises on SDP it cannot use (its parser also asserts).
_SDP_ERRORS = (ValueError, AssertionError, IndexError, OperationError, InvalidAccessError)
_UFRAG = re.compile(r"^a=ice-ufrag:(\S+)", re.M)
_active: set[WebRtcLeg] = set()


def _check_dtls(sdp: str) -> None:
    """aiortc takes SDP without a fingerprint and only fails at the DTLS handshake."""
    if not re.search(r"^a=fingerprint:\S+ \S+", sdp, re.M):
        raise ValueError("no DTLS fingerprint (DTLS-SRTP is required)")


def _ufrag(sdp: str) -> str | None:
    match = _UFRAG.search(sdp)
    return match.group(1) if match else None


class WebRtcLeg:
    """One browser, one ``RTCPeerConnection`` at a time (two across an ICE restart)."""

    def __init__(
        self,
        settings: WebRtcSettings,
        *,
        clock: Clock | None = None,
        slots: tuple[str, ...] = SLOTS,
        leg_id: str | None = None,
    ) -> None:
        if unknown := [s for s in slots if s not in SLOT_KIND]:
            raise ValueError(f"unknown media slots {unknown}")
        if len(_active) >= settings.max_legs:
            raise Busy(f"{len(_active)} browser legs already (webrtc.max_legs)")
        self.leg_id = leg_id or "web-" + secrets.token_hex(6)
        self.settings = settings
        self.clock = clock or SystemClock()
        self.slots = slots
        self.receive_cap: int | None = None
        self.screen_at = float("-inf")  # when the browser last sent screen video
        #: Audio only (a link too poor for video): no video is sent to this browser.
        self.video_paused = False
        self.state = LegState.NEW
        self.on_candidate: CandidateCallback | None = None
        #: Asks the browser for a codec first (``prefer``); None: never asked.
        self.on_prefer: Callable[[str, str], None] | None = None
        self._preferred: dict[str, str] = {}  # kind -> the codec last asked for
        self.on_state: list[Callable[[WebRtcLeg, LegState], None]] = []
        self.closed = asyncio.Event()
        self.connected = asyncio.Event()
        self._subscribers: dict[str, list[PayloadCallback]] = {s: [] for s in slots}
        self._keyframe_listeners: list[SlotCallback] = []
        self._bitrate_listeners: list[Callable[[str, int], None]] = []
        self._cap_listeners: list[CapCallback] = []
        self._loss_listeners: list[Callable[[str, float], None]] = []
        self._pc: RTCPeerConnection | None = None
        self._transceivers: dict[str, RTCRtpTransceiver] = {}
        self._tracks: dict[str, internals.PassthroughTrack] = {}
        self._hooks: dict[str, internals.ReceiverHook] = {}
        self._remote_ufrag: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._connect_timer: asyncio.TimerHandle | None = None
        _active.add(self)
        metrics.WEBRTC_LEGS_ACTIVE.set(len(_active))

    def __repr__(self) -> str:
        return f"<WebRtcLeg {self.leg_id} {self.state.value}>"

    # --- state ----------------------------------------------------------------------------
    def _set_state(self, new: LegState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise LegStateError(f"{self.leg_id}: {self.state.value} -> {new.value} not allowed")
        self.state = new
        if self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None
        if new in (LegState.CONNECTING, LegState.OFFERED):
            loop = asyncio.get_running_loop()
            timeout = self.settings.connect_timeout
            self._connect_timer = loop.call_later(timeout, self._connect_timed_out)
        elif new is LegState.CONNECTED:
            self.connected.set()
        elif new is LegState.FAILED:
            metrics.ICE_FAILURES.inc()
        elif new is LegState.CLOSED:
            _active.discard(self)
            metrics.WEBRTC_LEGS_ACTIVE.set(len(_active))
            self.closed.set()
        log.info("webrtc leg state", leg=self.leg_id, state=new.value)
        for callback in list(self.on_state):
            callback(self, new)

    def _on_connection_state(self, pc: RTCPeerConnection) -> None:
        if pc is not self._pc or self.state is LegState.CLOSED:
            return  # an old connection (before an ICE restart) winding down
        state = pc.connectionState
        if state == "connected":
            fastpath.receive_directly(pc)
        if state == "connected" and self.state is LegState.CONNECTING:
            self._set_state(LegState.CONNECTED)
            for slot in self._hooks:
                self.request_keyframe(slot)
        elif state == "failed" and self.state in (LegState.CONNECTING, LegState.CONNECTED):
            self._set_state(LegState.FAILED)

    def _connect_timed_out(self) -> None:
        self._connect_timer = None
        if self.state in (LegState.CONNECTING, LegState.OFFERED):
            log.info("webrtc leg not connected in time", leg=self.leg_id)
            self._set_state(LegState.FAILED)

    # --- signaling -------------------------------------------------------------------------
    async def accept_offer(self, sdp: str) -> str:
        """Apply the browser's offer and return our answer (candidates included)."""
        ufrag = _ufrag(sdp)
        restarting = self.state is not LegState.NEW
        if self.state is LegState.NEW:
            pc = self._new_connection()
        elif self.state in (LegState.CONNECTING, LegState.CONNECTED, LegState.FAILED):
            if ufrag == self._remote_ufrag:
                raise BadRequest("renegotiation without ICE restart is not supported yet")
            self._set_state(LegState.RESTARTING)
            await self._drop_connection()
            pc = self._new_connection()
        else:
            raise LegStateError(f"cannot accept an offer while {self.state.value}")
        try:
            _check_dtls(sdp)
            await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
            slots = self._assign(pc.getTransceivers())
            if not any(slots):
                kinds = sorted({SLOT_KIND[s] for s in self.slots})
                raise ValueError(f"no {' or '.join(kinds)} in the offer")
        except _SDP_ERRORS as exc:
            await self._drop_connection()
            if restarting:
                self._set_state(LegState.FAILED)
            raise BadRequest(f"offer refused: {exc!r}", sip_status=488) from exc
        self._remote_ufrag = ufrag
        for transceiver, slot in zip(pc.getTransceivers(), slots, strict=True):
            self._attach(transceiver, slot)
        internals.pin_host_addresses(pc, self.settings.ice_addresses)
        await pc.setLocalDescription(await pc.createAnswer())
        self._set_state(LegState.CONNECTING)
        self._announce_candidates(pc)
        return str(pc.localDescription.sdp)

    async def create_offer(self, prefer: Mapping[str, str | None] | None = None) -> str:
        """Make an offer (a sendrecv transceiver per slot); the answer goes to ``accept_answer``.

        ``prefer`` puts a codec first per kind (e.g. ``{"video": "H264"}``, what
        the other leg of a passthrough sends), the others follow as fallbacks.
        """
        if self.state is not LegState.NEW:
            raise LegStateError(f"cannot offer while {self.state.value}")
        preferences = self._preferences(prefer)
        pc = self._new_connection()
        for slot in self.slots:
            kind = SLOT_KIND[slot]
            transceiver = pc.addTransceiver(kind, direction="sendrecv")
            if kind in preferences:
                transceiver.setCodecPreferences(preferences[kind])
            self._attach(transceiver, slot)
        internals.pin_host_addresses(pc, self.settings.ice_addresses)
        await pc.setLocalDescription(await pc.createOffer())
        self._set_state(LegState.OFFERED)
        self._announce_candidates(pc)
        return str(pc.localDescription.sdp)

    def prefer(self, kind: str, codec: str) -> bool:
        """Ask the browser to renegotiate with ``codec`` first for ``kind`` (e.g. PCMU
        when the other leg speaks only G.711, so audio passes through). The browser
        sends a new offer with an ICE restart, which ``accept_offer`` takes as any
        other; a browser is not asked for the same codec twice in a row (one that
        answered otherwise keeps its choice). False when nobody is told."""
        if self.on_prefer is None or self.state is not LegState.CONNECTED:
            return False
        current = self.send_codec(kind)
        if self._preferred.get(kind) == codec.lower() or (current or "").lower() == codec.lower():
            return False
        self._preferred[kind] = codec.lower()
        log.info("webrtc leg asks for a codec", leg=self.leg_id, kind=kind, codec=codec)
        self.on_prefer(kind, codec)
        return True

    def _preferences(
        self, prefer: Mapping[str, str | None] | None
    ) -> dict[str, list[RTCRtpCodecCapability]]:
        kinds = {SLOT_KIND[s] for s in self.slots}
        preferences: dict[str, list[RTCRtpCodecCapability]] = {}
        for kind, wanted in (prefer or {}).items():
            if wanted and kind in kinds:
                codecs = RTCRtpSender.getCapabilities(kind).codecs
                first = [c for c in codecs if c.name.lower() == wanted.lower()]
                if not first:
                    raise BadRequest(f"no {kind} codec {wanted!r}", sip_status=488)
                preferences[kind] = first + [c for c in codecs if c not in first]
        return preferences

    async def accept_answer(self, sdp: str) -> None:
        """Apply the browser's answer to our offer."""
        if self.state is not LegState.OFFERED or self._pc is None:
            raise LegStateError(f"cannot accept an answer while {self.state.value}")
        try:
            _check_dtls(sdp)
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
        except _SDP_ERRORS as exc:
            raise BadRequest(f"answer refused: {exc!r}", sip_status=488) from exc
        self._remote_ufrag = _ufrag(sdp)
        self._set_state(LegState.CONNECTING)

    async def add_ice_candidate(
        self, candidate: str | None, sdp_mid: str | None = None, sdp_mline_index: int | None = None
    ) -> None:
        """A candidate trickled by the browser (``"candidate:..."``); None: end of candidates."""
        if self._pc is None or self.state in (LegState.NEW, LegState.OFFERED, LegState.CLOSED):
            raise LegStateError(f"cannot add a remote candidate while {self.state.value}")
        if candidate is None or not candidate.strip():
            await self._pc.addIceCandidate(None)
            return
        if sdp_mid is None and sdp_mline_index is None:
            raise BadRequest("a candidate needs sdpMid or sdpMLineIndex")
        text = candidate.strip().removeprefix("a=").removeprefix("candidate:")
        try:
            parsed = candidate_from_sdp(text)
        except (ValueError, IndexError, AssertionError) as exc:  # aiortc asserts on garbage
            raise BadRequest(f"bad ICE candidate: {exc}") from exc
        parsed.sdpMid = sdp_mid
        parsed.sdpMLineIndex = sdp_mline_index
        await self._pc.addIceCandidate(parsed)

    async def close(self) -> None:
        """Hang up: stop media, close the peer connection (idempotent)."""
        if self.state is LegState.CLOSED:
            return
        self._set_state(LegState.CLOSED)
        await self._drop_connection()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- media -----------------------------------------------------------------------------
    def attached(self) -> list[str]:
        """The slots the negotiation gave an m-line (in slot order)."""
        return [s for s in self.slots if s in self._transceivers]

    def sharing(self) -> bool:
        """Whether the browser is sharing its screen now (screen video in the last second)."""
        return self.clock.monotonic() - self.screen_at < SCREEN_GONE_AFTER

    def subscribe(self, slot: str, callback: PayloadCallback) -> Callable[[], None]:
        """Get every payload the browser sends in ``slot``; returns the unsubscribe function."""
        subscribers = self._subscribers[slot]
        subscribers.append(callback)
        return lambda: subscribers.remove(callback) if callback in subscribers else None

    def send_payload(self, slot: str, payload: bytes, timestamp: int, marker: bool) -> bool:
        """Queue one RTP payload for the browser; False when there is no sender for ``slot``."""
        track = self._tracks.get(slot)
        if track is None or self.state is not LegState.CONNECTED:
            return False
        if self.video_paused and SLOT_KIND[slot] == "video":
            return False
        track.push(payload, timestamp, marker)
        return True

    def send_codec(self, slot: str) -> str | None:
        """The codec our sender in ``slot`` uses (MIME subtype), once negotiated."""
        transceiver = self._transceivers.get(slot)
        if transceiver is None:
            return None
        codec = internals.negotiated_codec(transceiver)
        return codec.name if codec is not None else None

    def negotiated_codec(self, slot: str) -> RTCRtpCodecParameters | None:
        """The codec both directions of ``slot`` use (the first common one), once negotiated."""
        transceiver = self._transceivers.get(slot)
        return internals.negotiated_codec(transceiver) if transceiver is not None else None

    def request_keyframe(self, slot: str = "video") -> bool:
        """Ask the browser for a keyframe (PLI); False when it sent nothing in ``slot`` yet."""
        hook = self._hooks.get(slot)
        return hook.request_keyframe() if hook is not None else False

    def on_keyframe_request(self, callback: SlotCallback) -> Callable[[], None]:
        """``callback(slot)`` when the browser asks us for a keyframe; returns the remover."""
        listeners = self._keyframe_listeners
        listeners.append(callback)
        return lambda: listeners.remove(callback) if callback in listeners else None

    def send_bitrate_estimate(self, slot: str, bitrate: int) -> bool:
        """Tell the browser how many bit/s it may send in ``slot`` (RTCP REMB)."""
        hook = self._hooks.get(slot)
        return hook.send_bitrate_estimate(bitrate) if hook is not None else False

    def on_bitrate_estimate(self, callback: Callable[[str, int], None]) -> Callable[[], None]:
        """``callback(slot, bps)`` when the browser says how much it can receive (REMB)."""
        listeners = self._bitrate_listeners
        listeners.append(callback)
        return lambda: listeners.remove(callback) if callback in listeners else None

    def on_loss_report(self, callback: Callable[[str, float], None]) -> Callable[[], None]:
        """``callback(slot, fraction_lost)`` for every receiver report the browser sends
        about what we send it; returns the remover."""
        listeners = self._loss_listeners
        listeners.append(callback)
        return lambda: listeners.remove(callback) if callback in listeners else None

    def set_receive_cap(self, bitrate: int | None) -> None:
        """At most ``bitrate`` bit/s of video should reach this browser (None: no cap)."""
        self.receive_cap = bitrate
        for callback in list(self._cap_listeners):
            callback(bitrate)

    def on_receive_cap(self, callback: CapCallback) -> Callable[[], None]:
        """``callback(bps or None)`` when the receive cap changes; returns the remover."""
        listeners = self._cap_listeners
        listeners.append(callback)
        return lambda: listeners.remove(callback) if callback in listeners else None

    def receivers_decoding(self) -> bool:
        """Whether any receiver of this leg decodes (it never should)."""
        if self._pc is None:
            return False
        return any(internals.is_decoding(r) for r in self._pc.getReceivers())

    # --- internals --------------------------------------------------------------------------
    def _new_connection(self) -> RTCPeerConnection:
        servers = ice_servers(
            list(self.settings.ice_servers), user=self.leg_id, now=self.clock.time()
        )
        # An explicit (possibly empty) list: aiortc's default is a public STUN server.
        config = RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        pc = RTCPeerConnection(configuration=config)
        pc.on("connectionstatechange", lambda: self._on_connection_state(pc))
        self._pc = pc
        return pc

    def _assign(self, transceivers: list[RTCRtpTransceiver]) -> list[str | None]:
        """The slot of each offered m-line, in order, by kind (None: no slot left)."""
        free = list(self.slots)
        assigned: list[str | None] = []
        for transceiver in transceivers:
            slot = next((s for s in free if SLOT_KIND[s] == transceiver.kind), None)
            if slot is not None:
                free.remove(slot)
            assigned.append(slot)
        return assigned

    def _attach(self, transceiver: RTCRtpTransceiver, slot: str | None) -> None:
        if slot is None:
            transceiver.direction = "inactive"
            return
        kind = SLOT_KIND[slot]
        transceiver.direction = "sendrecv"
        track = internals.PassthroughTrack(kind)
        transceiver.sender.replaceTrack(track)
        internals.install_passthrough_sender(
            transceiver.sender, lambda bps: self._bitrate_estimated(slot, bps)
        )
        fastpath.send_directly(transceiver.sender, track.attach)
        internals.on_keyframe_request(transceiver.sender, lambda: self._keyframe_asked(slot))
        internals.on_receiver_report(transceiver.sender, lambda lost: self._reported(slot, lost))
        self._transceivers[slot] = transceiver
        self._tracks[slot] = track
        self._hooks[slot] = internals.ReceiverHook(
            transceiver.receiver, lambda packet, codec: self._deliver(slot, packet, codec)
        )

    def _deliver(self, slot: str, packet: RtpPacket, codec: RTCRtpCodecParameters) -> None:
        if slot == "screen":
            self.screen_at = self.clock.monotonic()
        subscribers = self._subscribers[slot]
        if not subscribers:
            return
        payload = EncodedPayload(
            slot=slot,
            kind=SLOT_KIND[slot],
            codec=codec.name,
            clock_rate=codec.clockRate,
            payload=packet.payload,
            timestamp=packet.timestamp,
            marker=bool(packet.marker),
            sequence=packet.sequence_number,
            ssrc=packet.ssrc,
            payload_type=packet.payload_type,
        )
        for callback in subscribers:
            callback(payload)

    def _bitrate_estimated(self, slot: str, bitrate: int) -> None:
        for callback in list(self._bitrate_listeners):
            callback(slot, bitrate)

    def _reported(self, slot: str, lost: float) -> None:
        for callback in list(self._loss_listeners):
            callback(slot, lost)

    def _keyframe_asked(self, slot: str) -> None:
        for callback in list(self._keyframe_listeners):
            callback(slot)

    def _announce_candidates(self, pc: RTCPeerConnection) -> None:
        if self.on_candidate is None:
            return
        seen: set[int] = set()
        for index, transceiver in enumerate(pc.getTransceivers()):
            gatherer = transceiver.sender.transport.transport.iceGatherer
            if id(gatherer) in seen:
                continue  # bundled: one transport for every m-line
            seen.add(id(gatherer))
            for candidate in gatherer.getLocalCandidates():
                self.on_candidate(
                    "candidate:" + candidate_to_sdp(candidate), transceiver.mid, index
                )
        self.on_candidate(None, None, None)

    async def _drop_connection(self) -> None:
        pc, self._pc = self._pc, None
        tracks, self._tracks = self._tracks, {}
        self._hooks = {}
        self._transceivers = {}
        for track in tracks.values():
            track.stop()
        if pc is not None:
            await pc.close()
