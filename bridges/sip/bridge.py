"""The SIP bridge: dial out from a room to a SIP proxy, trunk or device.

``SipBridge.dial(target, role)`` rewrites the target with the bridge's
rules, opens the call's RTP streams (``SipMedia``, restricted to the
bridge's codecs and SRTP policy), locates the proxy (RFC 3263) and sends the
INVITE through the node's ``SipEndpoint``, which answers 401/407 with the
bridge's digest credentials. It returns a ``SipParticipant`` at once; its
``DialEvent``s report trying, ringing, answered or the refusal, and its
``media(kind)`` streams are ``RoutedStream``s for ``gateway.media.router``.

Every participant keeps the ``SipProfile`` it was dialled with; a reload
gives the bridge a new profile for the next dials only. Metrics:
``gatewayd_bridge_calls_active{bridge}``,
``gatewayd_bridge_call_attempts_total{bridge,outcome}``,
``gatewayd_bridge_setup_seconds{bridge}``. Logs carry the bridge name, the
participant id and statuses, never the dialled number or URI.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

from bridges.base import (
    BridgeFull,
    BridgeSettings,
    DialCallback,
    DialEvent,
    DialState,
    UnknownBridge,
)
from bridges.sip.call import CallState, SipCall
from bridges.sip.endpoint import SipEndpoint
from bridges.sip.media import SipMedia
from bridges.sip.participant import SipCallParticipant
from bridges.sip.profile import SipProfile, build_profile, rewrite_target
from bridges.sip.resolver import SipResolver
from gateway import metrics
from gateway.errors import Draining, GatewayError, Unavailable
from gateway.log import get_logger
from gateway.media.dtmf import build_dtmf_relay, event_code
from gateway.media.router import RoutedStream
from gateway.media.rtp_transport import RtpPortAllocator, RtpPortsExhausted
from gateway.settings import Settings

__all__ = ["SipBridge", "SipParticipant"]

log = get_logger(__name__)

_BUSY = frozenset({486, 600})
_NO_ANSWER = frozenset({408, 480})


class SipParticipant(SipCallParticipant):
    """One dialled-out SIP call (``bridges.base.OutboundParticipant``)."""

    def __init__(
        self,
        bridge: SipBridge,
        profile: SipProfile,
        role: str,
        on_event: DialCallback | None,
    ) -> None:
        super().__init__(
            role, "out-", None if on_event is None else (lambda event: on_event(self, event))
        )
        self._bridge = bridge
        self.profile = profile
        self.call: SipCall | None = None
        self.sip_media: SipMedia | None = None
        self._invite_sent = 0.0
        self._answered_at: float | None = None
        self._giving_up: DialState | None = None  # why we CANCELled
        self._answer_task: asyncio.Task[None] | None = None

    # --- OutboundParticipant (the rest in SipCallParticipant) ----------------------------
    @property
    def bridge(self) -> str:
        """The bridge's name."""
        return self.profile.name

    @property
    def setup_seconds(self) -> float | None:
        """INVITE sent -> 200 OK received, once answered (the histogram's figure)."""
        if self._answered_at is None:
            return None
        return self._answered_at - self._invite_sent

    def media(self, kind: str) -> RoutedStream | None:
        """The negotiated ``kind`` stream once answered (None before, or if refused)."""
        if self.state is not DialState.ANSWERED or self.sip_media is None:
            return None
        return self.sip_media.negotiated(kind)

    async def cancel(self) -> None:
        """CANCEL the INVITE while it rings (the callee's 487 ends it); BYE once answered."""
        await self._give_up(DialState.CANCELLED, "cancelled")

    async def hangup(self, reason: str = "hangup") -> None:
        """End the call whatever its state."""
        await self._give_up(DialState.CANCELLED, reason)

    async def send_dtmf(self, digits: str) -> None:
        """Key presses: SIP INFO (application/dtmf-relay) on ``dtmf: info`` bridges.

        RFC 4733 and in-band sending need the room's audio path and come with it.
        """
        for digit in digits:
            event_code(digit)  # a bad digit fails before any is sent
        call = self.call
        if call is None or call.state is not CallState.ESTABLISHED:
            raise GatewayError("DTMF needs an answered call", http_status=409, sip_status=481)
        if self.profile.dtmf != "info":
            raise GatewayError(
                f"sending DTMF as {self.profile.dtmf} is not implemented yet",
                http_status=501,
                sip_status=501,
            )
        for digit in digits:
            await call.info(build_dtmf_relay(digit, 0.1), "application/dtmf-relay")

    # --- setting up ------------------------------------------------------------------------
    async def start(self, uri: str) -> None:
        """Open the media, locate the proxy, send the INVITE; raises if nothing was sent."""
        bridge, profile = self._bridge, self.profile
        media = SipMedia(
            profile.media_address,
            media_host6=profile.media_address6,
            allocator=bridge.allocator,
            srtp=profile.srtp,
            rtp_timeout=profile.rtp_timeout,
        )
        try:
            await media.open()
            assert media.local is not None
            media.local = dataclasses.replace(
                media.local, audio_codecs=profile.audio_codecs, video_codecs=profile.video_codecs
            )
            call = await self._invite(uri, media)
        except RtpPortsExhausted as exc:
            media.close()
            raise Unavailable(f"bridge {profile.name}: {exc}") from exc
        except BaseException:
            media.close()
            raise
        self.call, self.sip_media = call, media
        media.bind(call)
        self._wrap_answer(call)
        call.on_provisional = self._provisional
        call.on_end.append(self._ended)
        for stream in media.streams:
            stream.on_timeout = lambda _s: self._media_timeout()
        self._progress.emit(DialEvent(DialState.TRYING))
        self._answer_task = asyncio.get_running_loop().create_task(
            self._await_answer(call), name=f"dial-{self.participant_id}"
        )

    async def _invite(self, uri: str, media: SipMedia) -> SipCall:
        bridge, profile = self._bridge, self.profile
        endpoint = bridge.endpoint
        endpoint.calls.admit()  # a draining node dials nobody
        targets = await bridge.resolver.resolve(profile.proxy_uri, transport=profile.transport)
        error: OSError | None = None
        for target in targets:  # RFC 3263 §4.3: the next target when one refuses
            try:
                if target.transport != "udp":
                    await endpoint.flow_to(
                        target.transport, target.address, server_name=profile.server_name
                    )
                self._invite_sent = endpoint.clock.monotonic()
                return await endpoint.invite(
                    uri,
                    media.offer(),
                    remote=target.address,
                    transport=target.transport,
                    credentials=profile.credentials,
                    routes=profile.routes_for(uri),
                    from_uri=profile.from_uri,
                    from_user=profile.credentials[0] if profile.credentials else "gatewayd",
                )
            except OSError as exc:
                error = exc
        raise Unavailable(f"bridge {profile.name}: proxy unreachable ({error})")

    def _wrap_answer(self, call: SipCall) -> None:
        apply = call.on_answer

        def on_answer(c: SipCall, sdp: bytes) -> None:
            self._answered_at = self._bridge.endpoint.clock.monotonic()
            if apply is not None:
                apply(c, sdp)

        call.on_answer = on_answer

    # --- progress --------------------------------------------------------------------------
    def _provisional(self, _call: SipCall, status: int) -> None:
        if status in (180, 183):
            self._progress.emit(DialEvent(DialState.RINGING, status))

    async def _await_answer(self, call: SipCall) -> None:
        try:
            await call.wait_answered(self.profile.answer_timeout)
        except TimeoutError:
            self._giving_up = DialState.NO_ANSWER
            await call.hangup("no answer")
            return
        if call.state is not CallState.ESTABLISHED:
            return
        media = self.sip_media
        if media is not None and not any(s.negotiated is not None for s in media.streams):
            # The callee's answer left no usable stream (logged by SipMedia): end it.
            self._giving_up = DialState.FAILED
            await call.hangup("no common media")
            return
        self._answered(call)

    def _answered(self, call: SipCall) -> None:
        if self.state is DialState.ANSWERED or self._progress.final:
            return
        now = self._bridge.endpoint.clock.monotonic()
        setup = (self._answered_at or now) - self._invite_sent
        metrics.BRIDGE_SETUP_SECONDS.labels(bridge=self.bridge).observe(max(0.0, setup))
        self._bridge.count(self, "answered")
        self._progress.emit(DialEvent(DialState.ANSWERED, call.final_status))
        log.info(
            "bridge call answered",
            bridge=self.bridge,
            participant=self.participant_id,
            call_id=call.call_id,
            setup_ms=round(setup * 1000),
        )

    async def _give_up(self, why: DialState, reason: str) -> None:
        call = self.call
        if call is None or call.state is CallState.ENDED:
            return
        if call.state in (CallState.CALLING, CallState.EARLY) and self._giving_up is None:
            self._giving_up = why
        await call.hangup(reason)

    def _media_timeout(self) -> None:
        call = self.call
        if call is not None and call.state is CallState.ESTABLISHED:
            log.info("bridge call: no RTP, hanging up", participant=self.participant_id)
            self._bridge.endpoint.hangup_soon(call, "rtp timeout")

    def _ended(self, call: SipCall) -> None:
        status = call.final_status
        answered = self.state is DialState.ANSWERED
        # Answered and ended before our wait woke up (a BYE right after the 200).
        crossed = call.answered.is_set() and status is not None and status < 300
        if not answered and crossed and self._giving_up is None:
            self._answered(call)
            answered = True
        if answered:
            event = DialEvent(DialState.ENDED, None, call.end_reason or "")
        else:
            state = self._outcome(status)
            self._bridge.count(self, str(state))
            event = DialEvent(state, status, call.end_reason or "")
        self._progress.emit(event)
        if self._answer_task is not None and not self._answer_task.done():
            self._answer_task.cancel()
        self._bridge.release(self)
        log.info(
            "bridge call ended",
            bridge=self.bridge,
            participant=self.participant_id,
            call_id=call.call_id,
            state=event.state.value,
            status=status,
            reason=call.end_reason,
        )

    def _outcome(self, status: int | None) -> DialState:
        if self._giving_up is not None:
            return self._giving_up
        if status in _BUSY:
            return DialState.BUSY
        if status in _NO_ANSWER:
            return DialState.NO_ANSWER
        return DialState.FAILED


class SipBridge:
    """A ``bridges.base.Bridge`` of type ``sip`` on the node's ``SipEndpoint``."""

    def __init__(
        self,
        config: BridgeSettings,
        settings: Settings,
        *,
        endpoint: SipEndpoint,
        allocator: RtpPortAllocator,
        resolver: SipResolver,
    ) -> None:
        self.endpoint = endpoint
        self.allocator = allocator
        self.resolver = resolver
        self.profile = build_profile(config, settings)
        self.participants: set[SipParticipant] = set()
        self.retired = False
        metrics.BRIDGE_CALLS_ACTIVE.labels(bridge=self.name)
        for outcome in metrics.BRIDGE_OUTCOMES:
            metrics.BRIDGE_CALL_ATTEMPTS.labels(bridge=self.name, outcome=outcome)

    @property
    def name(self) -> str:
        """The configured name."""
        return self.profile.name

    @property
    def active(self) -> int:
        """Calls ringing or answered."""
        return len(self.participants)

    @property
    def max_calls(self) -> int:
        """The limit for new dials."""
        return self.profile.max_calls

    async def dial(
        self, target: str, role: str, *, on_event: DialCallback | None = None
    ) -> SipParticipant:
        """Start a call; see ``bridges.base.Bridge.dial``."""
        profile = self.profile
        if self.retired:
            raise UnknownBridge(f"bridge {profile.name!r} was removed from the configuration")
        uri = rewrite_target(
            target, profile.rules, domain=profile.domain, reject_unmatched=profile.reject_unmatched
        )
        if self.active >= profile.max_calls:
            metrics.BRIDGE_CALL_ATTEMPTS.labels(bridge=self.name, outcome="refused").inc()
            log.info("bridge full: dial refused", bridge=self.name, max_calls=profile.max_calls)
            raise BridgeFull(
                f"bridge {profile.name!r} has {self.active} calls, its max_calls",
                retry_after=30,
            )
        participant = SipParticipant(self, profile, role, on_event)
        self.participants.add(participant)  # the slot is taken before the first await
        metrics.BRIDGE_CALLS_ACTIVE.labels(bridge=self.name).inc()
        try:
            await participant.start(uri)
        except BaseException as exc:
            self.release(participant)
            outcome = "refused" if isinstance(exc, Draining) else "failed"
            metrics.BRIDGE_CALL_ATTEMPTS.labels(bridge=self.name, outcome=outcome).inc()
            log.info(
                "bridge dial failed before the INVITE",
                bridge=self.name,
                participant=participant.participant_id,
                error=type(exc).__name__,
            )
            raise
        log.info(
            "bridge dialling",
            bridge=self.name,
            participant=participant.participant_id,
            role=role,
            call_id=participant.call.call_id if participant.call else None,
        )
        return participant

    def count(self, participant: SipParticipant, outcome: str) -> None:
        """One attempt more for ``outcome`` (the participant's own bridge name)."""
        metrics.BRIDGE_CALL_ATTEMPTS.labels(bridge=participant.bridge, outcome=outcome).inc()

    def release(self, participant: SipParticipant) -> None:
        """The participant's call is over: free its slot (idempotent)."""
        if participant in self.participants:
            self.participants.discard(participant)
            metrics.BRIDGE_CALLS_ACTIVE.labels(bridge=participant.bridge).dec()

    def reconfigure(self, config: BridgeSettings, settings: Settings) -> None:
        """New dials use the new settings; calls in progress keep their profile."""
        profile = build_profile(config, settings)
        if profile != self.profile:
            log.info("bridge reconfigured", bridge=self.name, calls_active=self.active)
        self.profile = profile

    def retire(self) -> None:
        """No new dials; running calls continue."""
        self.retired = True

    async def close(self) -> None:
        """Hang up every call of this bridge."""
        for participant in list(self.participants):
            with contextlib.suppress(Exception):
                await participant.hangup("bridge closed")
