"""The browser signaling WebSocket (``/ws``, protocol in docs/signaling.md).

One ``SignalingSession`` per socket: it authenticates the ``hello`` (citizen
link token, or agent session cookie plus CSRF token), puts the participant
in the appointment's room, and turns messages into room actions and WebRTC
leg operations. Every frame is size-capped by aiohttp (``max_msg_size``),
rate-limited by a token bucket, and checked before use; a bad frame gets an
``error`` and the socket stays open, a flood gets closed with 1008.

Outgoing frames go through a bounded queue and one writer task, so a slow
browser cannot make the room wait; a browser that lets 256 frames pile up is
disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from gateway.clock import Clock, SystemClock
from gateway.errors import GatewayError
from gateway.log import get_logger
from gateway.rooms.room import Message, Participant, Role, Room, Rooms
from gateway.settings import Settings
from gateway.store.appointments import LinkExpired, LinkNotYet, iso
from gateway.web import auth
from gateway.web.keys import CALLS, DIALER, SETTINGS, STORE, Dialer
from gateway.webrtc.echo import Echo
from gateway.webrtc.group import repeat
from gateway.webrtc.ice import ice_servers
from gateway.webrtc.leg import LegState, WebRtcLeg
from gateway.webrtc.passthrough import Passthrough
from gateway.webrtc.quality import Mode, QualityMonitor

log = get_logger(__name__)

PROTOCOL_VERSION = 1
MAX_FRAME = 64 * 1024
OUTBOX = 256
RATE, BURST = 20.0, 60.0  # frames per second, bucket size
MAX_SDP = 60_000

ROOMS = web.AppKey("rooms", Rooms)
#: What a browser sends at most in each quality mode ("low": data-saving, PRODUCT.md F23).
LIMITS = {
    "low": {"max_kbps": 200, "max_width": 320, "max_height": 240, "max_fps": 15},
    "high": {"max_kbps": 1500, "max_width": 1280, "max_height": 720, "max_fps": 30},
    "audio": {"max_kbps": 0, "max_width": 0, "max_height": 0, "max_fps": 0},  # no video
}
_closing: set[asyncio.Task[None]] = set()  # leg closes that outlive a cancelled handler
#: Test calls (device test, /test page) at once on this node, and how long each may last.
MAX_TEST_CALLS = 20
TEST_CALL_SECONDS = 30.0
_TEST_CALL_TYPES = frozenset({"hello", "offer", "candidate", "hangup"})
_test_calls: set[SignalingSession] = set()
routes = web.RouteTableDef()


class ProtocolError(GatewayError):
    """A frame that breaks docs/signaling.md."""

    http_status = 400
    reason = "bad_message"

    def __init__(self, message: str, code: str = "bad_message", **fields: Any) -> None:
        super().__init__(message)
        self.code = code
        self.fields = fields


def _text(message: Message, key: str, limit: int, *, optional: bool = False) -> str | None:
    value = message.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise ProtocolError(f"{key} must be a string of at most {limit} characters")
    return value


def connect_legs(a: Any, b: Any) -> Callable[[], None]:
    """The room's ``connect`` for two browsers: forward encoded media both ways."""
    return Passthrough(a, b).close


class TestCall:
    """A session's test call: its time limit and, once connected, its echo."""

    def __init__(self, timer: asyncio.TimerHandle) -> None:
        self.timer = timer
        self.echo: Echo | None = None

    def linked(self, leg: WebRtcLeg, state: LegState) -> None:
        if self.echo is not None:
            self.echo.close()
            self.echo = None
        if state is LegState.CONNECTED:
            self.echo = Echo(leg)

    def close(self) -> None:
        self.timer.cancel()
        if self.echo is not None:
            self.echo.close()
            self.echo = None


class _Bucket:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.tokens = BURST
        self.at = clock.monotonic()

    def take(self) -> bool:
        now = self.clock.monotonic()
        self.tokens = min(BURST, self.tokens + (now - self.at) * RATE)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class SignalingSession:
    """One browser's socket, from hello to close."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse, clock: Clock) -> None:
        self.request = request
        self.ws = ws
        self.clock = clock
        self.settings: Settings = request.app[SETTINGS]()
        self.outbox: asyncio.Queue[Message | None] = asyncio.Queue(OUTBOX)
        self.room: Room | None = None
        self.participant: Participant | None = None
        self.leg: WebRtcLeg | None = None
        self.call_id = ""
        self.receive_cap: int | None = None  # bit/s of video this browser is sent at most
        self.test_call: TestCall | None = None
        self.monitor = QualityMonitor(clock, self._quality_changed)
        self._ticking: Callable[[], None] | None = None  # stops the monitor's clock
        self._bucket = _Bucket(clock)

    # --- the socket ------------------------------------------------------------------------
    def send(self, message: Message) -> None:
        """Queue a frame for the browser; a browser that stopped reading is dropped."""
        try:
            self.outbox.put_nowait({"v": PROTOCOL_VERSION, **message})
        except asyncio.QueueFull:
            log.info("signaling: browser not reading, closing", call_id=self.call_id)
            asyncio.get_running_loop().create_task(self.ws.close(code=1008))

    async def _writer(self) -> None:
        while (message := await self.outbox.get()) is not None:
            if self.ws.closed:
                return
            await self.ws.send_str(json.dumps(message))
            if message["type"] == "ended":
                # The call is over for this browser: closing the socket ends the
                # reader, whose clean-up closes the leg and leaves the registry.
                await self.ws.close()
                return

    async def run(self) -> None:
        """Serve the socket until it closes, then clean up."""
        writer = asyncio.get_running_loop().create_task(self._writer())
        try:
            async for frame in self.ws:
                if frame.type is not WSMsgType.TEXT:
                    if frame.type is WSMsgType.BINARY:
                        self.send({"type": "error", "code": "bad_message",
                                   "message": "text frames only"})  # fmt: skip
                    continue
                if not self._bucket.take():
                    self.send({"type": "error", "code": "rate_limited", "message": "too fast"})
                    await asyncio.sleep(0.05)  # let the error go out first
                    await self.ws.close(code=1008, message=b"rate limited")
                    break
                await self._frame(frame.data)
        finally:
            await self._cleanup()
            if self.outbox.full():
                writer.cancel()
            else:
                self.outbox.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await writer

    async def _frame(self, data: str) -> None:
        try:
            try:
                message = json.loads(data)
            except ValueError:
                raise ProtocolError("not JSON") from None
            if not isinstance(message, dict) or message.get("v") != PROTOCOL_VERSION:
                raise ProtocolError(f"a JSON object with v={PROTOCOL_VERSION} is expected")
            kind = message.get("type")
            handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
            if handler is None:
                raise ProtocolError(f"unknown message type {kind!r}")
            if self.test_call is not None and kind not in _TEST_CALL_TYPES:
                raise ProtocolError(f"{kind} has no meaning in a test call")
            if kind != "hello" and self.participant is None and self.test_call is None:
                raise ProtocolError("say hello first", "not_joined")
            await handler(self, message)
        except ProtocolError as exc:
            self.send({"type": "error", "code": exc.code, "message": exc.message, **exc.fields})
        except GatewayError as exc:
            self.send({"type": "error", "code": exc.reason.lower().replace(" ", "_"),
                       "message": exc.message})  # fmt: skip

    # --- joining ---------------------------------------------------------------------------------
    async def hello(self, message: Message) -> None:
        """Authenticate and join the appointment's room."""
        if self.participant is not None:
            raise ProtocolError("already joined")
        role = message.get("role")
        if role == "test":
            self._start_test_call()
            return
        store = self.request.app[STORE]
        if role == "citizen":
            token = _text(message, "token", 64) or ""
            try:
                appointment = await store.appointments.by_token(token)
            except LinkExpired as exc:
                raise ProtocolError(exc.message, "expired") from None
            except LinkNotYet as exc:
                opens = iso(exc.opens_at)
                raise ProtocolError(exc.message, "too_early", opens_at=opens) from None
            except GatewayError:
                raise ProtocolError("no such appointment", "not_found") from None
            joined_as = Role.CITIZEN
        elif role == "agent":
            session = await store.agents.session(self.request.cookies.get(auth.SESSION_COOKIE, ""))
            csrf = _text(message, "csrf", 64)
            if session is None or csrf != session.csrf_token:
                raise ProtocolError("log in first", "unauthorized")
            try:
                appointment = await store.appointments.get(_text(message, "appointment", 64) or "")
            except GatewayError:
                raise ProtocolError("no such appointment", "not_found") from None
            joined_as = Role.AGENT
        else:
            raise ProtocolError("role must be citizen, agent or test")
        calls = self.request.app[CALLS]
        calls.admit()
        self.room = self.request.app[ROOMS].get(appointment.id)
        self.participant = self.room.join(joined_as, self.send)
        self.call_id = "web-" + self.participant.id
        calls.add(self)
        self.send({
            "type": "welcome",
            "participant": self.participant.id,
            "role": joined_as.value,
            "appointment": {"id": appointment.id, "language": appointment.language},
            "ice_servers": self._ice_servers(self.participant.id),
        })  # fmt: skip
        if joined_as is Role.AGENT:
            dialer = self.request.app.get(DIALER)
            roles = [r.value for r in Role if r is not Role.AGENT]
            bridges = dialer.bridges() if dialer is not None else []
            self.send({"type": "bridges", "bridges": bridges, "roles": roles})
            self.send(self.room.lobby())
        log.info("signaling: joined", call_id=self.call_id, role=joined_as.value)

    def _ice_servers(self, user: str) -> list[Message]:
        servers = ice_servers(
            list(self.settings.webrtc.ice_servers), user=user, now=self.clock.time()
        )
        return [{"urls": s.urls, "username": s.username, "credential": s.credential}
                for s in servers]  # fmt: skip

    def _start_test_call(self) -> None:
        """The device test's call: no appointment, the browser's media comes back to it."""
        if self.test_call is not None:
            raise ProtocolError("already joined")
        if len(_test_calls) >= MAX_TEST_CALLS:
            raise ProtocolError("too many test calls right now; try again in a minute", "busy")
        calls = self.request.app[CALLS]
        calls.admit()
        self.call_id = "test-" + secrets.token_hex(6)
        self.test_call = TestCall(
            asyncio.get_running_loop().call_later(TEST_CALL_SECONDS, self._test_call_over)
        )
        _test_calls.add(self)
        calls.add(self)
        self.send({"type": "welcome", "participant": self.call_id, "role": "test",
                   "ice_servers": self._ice_servers(self.call_id)})  # fmt: skip
        log.info("signaling: test call", call_id=self.call_id)

    def _test_call_over(self) -> None:
        self.send({"type": "ended", "reason": "test_time_limit", "by": "gateway"})

    # --- media -----------------------------------------------------------------------------------
    def _in_call(self) -> tuple[Room, Participant]:
        room, participant = self.room, self.participant
        assert room is not None and participant is not None
        if participant.presence.value != "admitted":
            raise ProtocolError("media starts once you are admitted", "not_admitted")
        return room, participant

    async def offer(self, message: Message) -> None:
        """The browser's offer (first, ICE restart): answer it from our leg."""
        if self.test_call is None:
            self._in_call()
        sdp = _text(message, "sdp", MAX_SDP) or ""
        if self.leg is None or self.leg.state is LegState.CLOSED:
            self.leg = WebRtcLeg(self.settings.webrtc, leg_id=self.call_id)
            self.leg.on_candidate = self._local_candidate
            self.leg.on_prefer = lambda kind, codec: self.send(
                {"type": "renegotiate", "prefer": {kind: codec}}
            )
            self.leg.on_state.append(self._leg_state)
            self.leg.set_receive_cap(self.receive_cap)
            self.leg.on_bitrate_estimate(self._estimated)
            self.leg.on_loss_report(self._lost)
            self.leg.video_paused = self.monitor.mode == "audio"
            if self._ticking is None:
                self._ticking = repeat(1.0, self.monitor.tick)
        answer = await self.leg.accept_offer(sdp)
        self.send({"type": "answer", "sdp": answer})

    def _lost(self, slot: str, fraction: float) -> None:
        if slot == "video" and self.test_call is None:
            self.monitor.loss(fraction)

    def _estimated(self, slot: str, bps: int) -> None:
        if slot == "video" and self.test_call is None:
            self.monitor.estimate(bps)

    async def answer(self, message: Message) -> None:
        """The browser's answer to an offer of ours (a renegotiation)."""
        if self.leg is None:
            raise ProtocolError("no offer of ours to answer")
        await self.leg.accept_answer(_text(message, "sdp", MAX_SDP) or "")

    def _leg_state(self, leg: WebRtcLeg, state: LegState) -> None:
        # Media is linked once the transport is up (again, after an ICE restart):
        # linking asks both browsers for a keyframe, which must find a path.
        if self.test_call is not None:
            self.test_call.linked(leg, state)
            return
        room, participant = self.room, self.participant
        if room is None or participant is None or participant.presence.value != "admitted":
            return
        if state is LegState.CONNECTED:
            room.set_leg(participant, leg)
        elif state in (LegState.FAILED, LegState.CLOSED):
            room.set_leg(participant, None)

    def _local_candidate(self, candidate: str | None, mid: str | None, index: int | None) -> None:
        body = None if candidate is None else {
            "candidate": candidate, "sdpMid": mid, "sdpMLineIndex": index,
        }  # fmt: skip
        self.send({"type": "candidate", "candidate": body})

    async def candidate(self, message: Message) -> None:
        """A trickled candidate from the browser."""
        if self.leg is None:
            raise ProtocolError("send the offer before candidates")
        body = message.get("candidate")
        if body is None:
            await self.leg.add_ice_candidate(None)
            return
        if not isinstance(body, dict):
            raise ProtocolError("candidate must be an object or null")
        index = body.get("sdpMLineIndex")
        if index is not None and not isinstance(index, int):
            raise ProtocolError("sdpMLineIndex must be a number")
        await self.leg.add_ice_candidate(
            _text(body, "candidate", 1000), _text(body, "sdpMid", 64, optional=True), index
        )

    # --- the room ------------------------------------------------------------------------------
    async def admit(self, message: Message) -> None:
        """Agent lets a waiting citizen in."""
        assert self.room is not None and self.participant is not None
        self.room.admit(self.participant, _text(message, "participant", 64) or "")

    async def reject(self, message: Message) -> None:
        """Agent sends a waiting citizen away."""
        assert self.room is not None and self.participant is not None
        self.room.reject(self.participant, _text(message, "participant", 64) or "")

    async def chat(self, message: Message) -> None:
        """A chat line."""
        assert self.room is not None and self.participant is not None
        self.room.chat(self.participant, _text(message, "text", 4000) or "")

    async def device(self, message: Message) -> None:
        """Device status (camera, mic, browser, network quality)."""
        assert self.room is not None and self.participant is not None
        status = message.get("status")
        if not isinstance(status, dict) or len(json.dumps(status)) > 2000:
            raise ProtocolError("status must be a small object")
        self.room.device(self.participant, status)

    async def relay(self, message: Message) -> None:
        """mute / screen: told to the other side."""
        assert self.room is not None and self.participant is not None
        kind = message["type"]
        flags: Message = {k: message[k] for k in ("audio", "video", "on") if k in message}
        if not all(isinstance(v, bool) for v in flags.values()):
            raise ProtocolError(f"{kind} flags must be true or false")
        self.room.relay(self.participant, {"type": kind, **flags})

    async def quality(self, message: Message) -> None:
        """high / low: the user's choice (the data-saving toggle)."""
        mode = message.get("mode")
        if mode not in ("high", "low"):
            raise ProtocolError("mode must be high or low")
        self.monitor.choose(mode)

    def _quality_changed(self, mode: Mode, reason: str) -> None:
        """Apply a quality mode, chosen by the user or by the monitor (``reason``)."""
        limits = LIMITS[mode]
        # What this browser sends (it caps itself), and what it is sent (the
        # gateway keeps the other browsers' encoders under the same budget).
        self.send({"type": "limits", "mode": mode, "reason": reason, **limits})
        self.receive_cap = limits["max_kbps"] * 1000 if mode == "low" else None
        if self.leg is not None:
            self.leg.set_receive_cap(self.receive_cap)
            self.leg.video_paused = mode == "audio"
        room, participant = self.room, self.participant
        if room is not None and participant is not None:
            room.relay(participant, {"type": "quality", "mode": mode, "reason": reason})
            # the agents' device status shows it
            room.device(participant, {**participant.device, "quality": mode})
        log.info("signaling: quality", call_id=self.call_id, mode=mode, reason=reason)

    def _dialer(self) -> tuple[Room, Dialer]:
        room, participant = self.room, self.participant
        assert room is not None and participant is not None
        dialer = self.request.app.get(DIALER)
        if participant.role is not Role.AGENT or dialer is None:
            raise ProtocolError("only an agent may add participants", "forbidden")
        return room, dialer

    async def dial(self, message: Message) -> None:
        """An agent adds a participant through a bridge (SIP URI or number)."""
        room, dialer = self._dialer()
        bridge = _text(message, "bridge", 64) or ""
        uri = (_text(message, "uri", 256) or "").strip()
        role_name = message.get("role", Role.GUEST.value)
        if role_name not in {r.value for r in Role if r is not Role.AGENT} or not uri:
            raise ProtocolError("dial needs a bridge, a uri and a role other than agent")
        dial_id = await dialer.dial(room.appointment_id, bridge, uri, Role(role_name))
        # The progress frames may have gone out already: this one names the target.
        state = dialer.state(room.appointment_id, dial_id)["state"]
        self.send({"type": "dial", "id": dial_id, "bridge": bridge, "role": role_name,
                   "state": state, "uri": uri})  # fmt: skip

    async def dial_cancel(self, message: Message) -> None:
        """An agent cancels a ringing dial-out or hangs up an answered one."""
        room, dialer = self._dialer()
        await dialer.cancel(room.appointment_id, _text(message, "id", 64) or "")

    async def hang_up(self, _message: Message) -> None:
        """End the call for everyone."""
        if self.test_call is not None:
            self.send({"type": "ended", "reason": "hangup", "by": "test"})
            return
        assert self.room is not None and self.participant is not None
        self.room.hangup(self.participant)

    # --- the end ---------------------------------------------------------------------------------
    async def _cleanup(self) -> None:
        if self._ticking is not None:
            self._ticking()
            self._ticking = None
        # The bookkeeping first and without awaiting: aiohttp may cancel the
        # handler once the browser's connection is gone.
        if self.room is not None and self.participant is not None:
            self.room.leave(self.participant)
            self.request.app[ROOMS].forget_if_empty(self.room)
        if self.call_id:
            self.request.app[CALLS].remove(self.call_id)
        if self.test_call is not None:
            self.test_call.close()
            _test_calls.discard(self)
        if self.leg is not None:
            closing = asyncio.get_running_loop().create_task(self.leg.close())
            _closing.add(closing)
            closing.add_done_callback(_closing.discard)
            await asyncio.shield(closing)

    async def hangup(self, reason: str) -> None:
        """``gateway.calls.Call``: the node ends this browser's call (drain timeout)."""
        room, participant = self.room, self.participant
        if room is not None and participant is not None and not room.ended:
            room.hangup(participant, reason)  # "ended" to everyone, this browser too
        else:
            self.send({"type": "ended", "reason": reason, "by": "gateway"})
        await asyncio.sleep(0.05)  # the writer sends it and closes; if it cannot:
        await self.ws.close()


_HANDLERS: dict[str, Callable[[SignalingSession, Message], Any]] = {
    "hello": SignalingSession.hello,
    "offer": SignalingSession.offer,
    "candidate": SignalingSession.candidate,
    "answer": SignalingSession.answer,
    "admit": SignalingSession.admit,
    "reject": SignalingSession.reject,
    "chat": SignalingSession.chat,
    "device": SignalingSession.device,
    "mute": SignalingSession.relay,
    "screen": SignalingSession.relay,
    "quality": SignalingSession.quality,
    "hangup": SignalingSession.hang_up,
    "dial": SignalingSession.dial,
    "dial-cancel": SignalingSession.dial_cancel,
}


@routes.get("/ws")
async def websocket(request: web.Request) -> web.WebSocketResponse:
    """The signaling socket."""
    ws = web.WebSocketResponse(max_msg_size=MAX_FRAME, heartbeat=20.0)
    await ws.prepare(request)
    await SignalingSession(request, ws, SystemClock()).run()
    return ws


def setup(app: web.Application, clock: Clock | None = None, rooms: Rooms | None = None) -> None:
    """Add the socket and the rooms (the node's, shared with SIP and WHIP) to the web app."""
    # (not ``rooms or ...``: an empty Rooms is falsy, it has a length)
    app[ROOMS] = rooms if rooms is not None else Rooms(clock or SystemClock(), connect_legs)
    app.add_routes(routes)
