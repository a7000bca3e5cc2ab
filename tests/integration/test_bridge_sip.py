"""Dial-out through a SIP bridge against real programs: Kamailio challenges
our INVITE (digest, 407), baresip registered behind it answers, rings or
refuses. Media is checked both ways by the tones' frequencies (we play
440 Hz, baresip's ausine plays 1 kHz)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np
import pytest

from bridges.base import BridgeFull, DialEvent, DialState, OutboundParticipant, UnknownBridge
from bridges.service import BridgeService
from bridges.sip.bridge import SipParticipant
from bridges.sip.endpoint import SipEndpoint
from bridges.sip.trunks import TrunkManager
from gateway import metrics
from gateway.errors import Draining
from gateway.media.local import AudioListener, AudioPlayer, tone
from gateway.media.rtp_transport import RtpPortAllocator
from gateway.media.stream import MediaStream
from gateway.settings import Settings, load_settings
from mediacodecs.audio import Pcm
from mediacodecs.executor import MediaExecutor
from tests.support.aio import in_thread, wait_for
from tests.support.baresip import Baresip, dominant_frequency
from tests.support.kamailio import KamailioServer

pytestmark = pytest.mark.integration

OUR_TONE = 440
USERS = {"gw": "gw-secret", "bob": "bob-secret"}


def bridge_yaml(name: str, proxy: KamailioServer, **options: object) -> str:
    """One bridge to ``proxy`` as user gw; ``ext-<user>`` is rewritten to ``<user>``."""
    fields = {
        "max_calls": 4,
        "answer_timeout": 10,
        "codecs": "{audio: [PCMU], video: []}",
        **options,
    }
    extra = "".join(f"    {key}: {value}\n" for key, value in fields.items())
    return (
        f"  - name: {name}\n    type: sip\n    proxy: {proxy.address}\n"
        "    username: gw\n    password: ${env:GW_PW}\n"
        "    rewrite: [{match: '^ext-(\\w+)$', replace: '\\1'}]\n" + extra
    )


def settings_for(*bridges: str, rtp_timeout: int = 10) -> Settings:
    text = f"media: {{address: 127.0.0.1, rtp_timeout: {rtp_timeout}}}\nbridges:\n" + "".join(
        bridges
    )
    return load_settings(text, environ={"GW_PW": USERS["gw"]})


Start = Callable[[Settings], Awaitable[BridgeService]]


@pytest.fixture
async def bridges(sip: SipEndpoint) -> AsyncIterator[Start]:
    services: list[BridgeService] = []

    async def start(settings: Settings) -> BridgeService:
        service = BridgeService(sip, RtpPortAllocator(42000, 42999))
        await service.start(settings)
        services.append(service)
        return service

    yield start
    for service in services:
        await service.stop()
    await wait_for(lambda: sip.calls.active == 0, timeout=5)


def attempts(bridge: str, outcome: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "gatewayd_bridge_call_attempts_total", {"bridge": bridge, "outcome": outcome}
    )
    return value or 0.0


def active(bridge: str) -> float:
    value = metrics.REGISTRY.get_sample_value("gatewayd_bridge_calls_active", {"bridge": bridge})
    return value or 0.0


def setups(bridge: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "gatewayd_bridge_setup_seconds_count", {"bridge": bridge}
    )
    return value or 0.0


class Ear:
    """Plays our tone into a participant's audio and keeps what comes back."""

    def __init__(self, stream: MediaStream, executor: MediaExecutor) -> None:
        self.heard: list[Pcm] = []
        self.rate = 0
        self.player = AudioPlayer(stream, executor, tone(OUR_TONE))
        self.listener = AudioListener(stream, executor, on_pcm=self._heard)
        stream.on_rtp = self.listener.feed
        self.player.start()

    def _heard(self, pcm: Pcm, rate: int) -> None:
        self.heard.append(pcm.copy())
        self.rate = rate

    def peak(self) -> float:
        samples = np.concatenate(self.heard)[self.rate // 5 :].astype(np.float64)
        assert samples.size > self.rate // 2, f"only {samples.size} samples heard"
        spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
        return float(np.fft.rfftfreq(samples.size, 1 / self.rate)[int(np.argmax(spectrum))])


def states(events: list[DialEvent]) -> list[DialState]:
    return [e.state for e in events]


async def test_dial_out_through_kamailio_with_digest_auth_and_media_both_ways(
    bridges: Start,
    executor: MediaExecutor,
    kamailio: Callable[..., KamailioServer],
    baresip: Callable[..., Baresip],
) -> None:
    proxy = kamailio(USERS)
    bob = baresip("bob", registrar=proxy.address, password=USERS["bob"], codecs=("PCMU",))
    service = await bridges(settings_for(bridge_yaml("kam-media", proxy)))
    before = attempts("kam-media", "answered"), setups("kam-media")
    ports = service.allocator.available
    seen: list[tuple[OutboundParticipant, DialEvent]] = []
    participant = await service.registry.dial(
        "kam-media", "ext-bob", "interpreter", on_event=lambda p, e: seen.append((p, e))
    )
    assert isinstance(participant, SipParticipant)
    assert participant.media("audio") is None, "no media before the answer"
    assert await participant.wait_answered(timeout=10), participant.history
    call = participant.call
    assert call is not None and call.invite is not None
    assert call.invite.cseq_number == 2, "the INVITE was challenged (407) and retried"
    assert call.invite.uri == proxy.uri("bob"), "ext-bob was rewritten"
    assert active("kam-media") == 1
    audio = participant.media("audio")
    assert isinstance(audio, MediaStream) and audio.negotiated is not None
    assert audio.negotiated.codecs[0].name == "PCMU"
    assert participant.media("video") is None, "video is off on this bridge"
    ear = Ear(audio, executor)
    await asyncio.sleep(2.0)
    assert abs(ear.peak() - 1000) < 15, "baresip's tone did not arrive"
    assert ear.player.sent > 60
    await participant.hangup("done")
    ear.player.stop()
    await in_thread(lambda: bob.wait_event("CALL_CLOSED", timeout=5))
    assert await participant.wait_ended(timeout=2) is DialState.ENDED
    wav = await in_thread(lambda: bob.wait_recording(timeout=5))
    assert abs(dominant_frequency(wav) - OUR_TONE) < 15, "our tone is not in bob's recording"  # type: ignore[arg-type]
    assert states(participant.history)[0] is DialState.TRYING
    assert states(participant.history)[-2:] == [DialState.ANSWERED, DialState.ENDED]
    assert [e for _p, e in seen] == participant.history and {p for p, _e in seen} == {participant}
    assert attempts("kam-media", "answered") == before[0] + 1
    assert setups("kam-media") == before[1] + 1
    assert active("kam-media") == 0
    await wait_for(lambda: service.allocator.available == ports, timeout=2)  # RTP ports freed


async def test_busy_callee_is_reported_as_busy(
    bridges: Start,
    kamailio: Callable[..., KamailioServer],
    baresip: Callable[..., Baresip],
) -> None:
    proxy = kamailio(USERS)
    bob = baresip(
        "bob", registrar=proxy.address, password=USERS["bob"], codecs=("PCMU",), answermode="manual"
    )
    service = await bridges(settings_for(bridge_yaml("kam-busy", proxy)))
    before = attempts("kam-busy", "busy")
    participant = await service.registry.dial("kam-busy", "ext-bob", "guest")
    await in_thread(lambda: bob.wait_event("CALL_INCOMING", timeout=5))
    assert await participant.wait_state(DialState.RINGING, timeout=5) is DialState.RINGING
    await in_thread(bob.hangup)  # baresip refuses a ringing call with 486 Busy Here
    assert await participant.wait_ended(timeout=5) is DialState.BUSY
    final = participant.history[-1]
    assert final.status == 486
    assert not await participant.wait_answered(timeout=1)
    assert attempts("kam-busy", "busy") == before + 1
    assert active("kam-busy") == 0


async def test_cancel_while_ringing_ends_with_487(
    bridges: Start,
    kamailio: Callable[..., KamailioServer],
    baresip: Callable[..., Baresip],
) -> None:
    proxy = kamailio(USERS)
    bob = baresip(
        "bob", registrar=proxy.address, password=USERS["bob"], codecs=("PCMU",), answermode="manual"
    )
    service = await bridges(settings_for(bridge_yaml("kam-cancel", proxy)))
    before = attempts("kam-cancel", "cancelled")
    participant = await service.registry.dial("kam-cancel", "ext-bob", "guest")
    assert await participant.wait_state(DialState.RINGING, timeout=5) is DialState.RINGING
    await participant.cancel()
    assert await participant.wait_ended(timeout=5) is DialState.CANCELLED
    assert participant.history[-1].status == 487
    closed = await in_thread(lambda: bob.wait_event("CALL_CLOSED", timeout=5))
    assert closed is not None
    assert attempts("kam-cancel", "cancelled") == before + 1
    assert active("kam-cancel") == 0


async def test_unanswered_call_is_cancelled_after_answer_timeout(
    bridges: Start,
    kamailio: Callable[..., KamailioServer],
    baresip: Callable[..., Baresip],
) -> None:
    proxy = kamailio(USERS)
    baresip(
        "bob", registrar=proxy.address, password=USERS["bob"], codecs=("PCMU",), answermode="manual"
    )
    yaml_text = bridge_yaml("kam-timeout", proxy, answer_timeout=1.5)
    service = await bridges(settings_for(yaml_text))
    before = attempts("kam-timeout", "no_answer")
    participant = await service.registry.dial("kam-timeout", "ext-bob", "guest")
    assert await participant.wait_ended(timeout=6) is DialState.NO_ANSWER
    assert participant.history[-1].status == 487
    assert attempts("kam-timeout", "no_answer") == before + 1


async def test_max_calls_refuses_locally_and_frees_the_slot_when_a_call_ends(
    bridges: Start,
    sip: SipEndpoint,
    kamailio: Callable[..., KamailioServer],
    baresip: Callable[..., Baresip],
) -> None:
    proxy = kamailio(USERS)
    baresip(
        "bob", registrar=proxy.address, password=USERS["bob"], codecs=("PCMU",), answermode="manual"
    )
    service = await bridges(settings_for(bridge_yaml("kam-max", proxy, max_calls=1)))
    refused = attempts("kam-max", "refused")
    first = await service.registry.dial("kam-max", "ext-bob", "guest")
    calls_before = sip.calls.active
    with pytest.raises(BridgeFull) as info:
        await service.registry.dial("kam-max", "ext-bob", "guest")
    assert info.value.http_status == 503 and "max_calls" in info.value.message
    assert "bob" not in info.value.message, "no target in the error"
    assert sip.calls.active == calls_before, "nothing was sent for the refused dial"
    assert attempts("kam-max", "refused") == refused + 1
    assert active("kam-max") == 1
    await first.cancel()
    await first.wait_ended(timeout=5)
    second = await service.registry.dial("kam-max", "ext-bob", "guest")
    assert second.state is DialState.TRYING
    await second.cancel()
    assert await second.wait_ended(timeout=5) is DialState.CANCELLED
    assert active("kam-max") == 0


async def test_unknown_bridge_bad_target_and_draining_are_refused(
    bridges: Start, sip: SipEndpoint, kamailio: Callable[..., KamailioServer]
) -> None:
    proxy = kamailio(USERS)
    yaml_text = bridge_yaml("kam-refuse", proxy, reject_unmatched="true")
    service = await bridges(settings_for(yaml_text))
    with pytest.raises(UnknownBridge):
        await service.registry.dial("nope", "ext-bob", "guest")
    with pytest.raises(Exception, match="no rewrite rule") as info:
        await service.registry.dial("kam-refuse", "0301234", "guest")
    assert getattr(info.value, "http_status", None) == 400
    refused = attempts("kam-refuse", "refused")
    sip.calls.stop_accepting()
    with pytest.raises(Draining):
        await service.registry.dial("kam-refuse", "ext-bob", "guest")
    assert attempts("kam-refuse", "refused") == refused + 1
    assert active("kam-refuse") == 0


async def test_a_bridge_on_a_trunk_registers_once_and_dials_with_its_credentials(
    bridges: Start,
    sip: SipEndpoint,
    kamailio: Callable[..., KamailioServer],
    baresip: Callable[..., Baresip],
) -> None:
    proxy = kamailio(USERS)
    baresip("bob", registrar=proxy.address, password=USERS["bob"], codecs=("PCMU",))
    settings = load_settings(
        "media: {address: 127.0.0.1}\n"
        "sip:\n  trunks:\n"
        f"    - {{name: kam, registrar: 'sip:{proxy.address}', username: gw,"
        " password: '${env:GW_PW}', options_interval: 0,"
        f" aor: '{proxy.uri('gw')}'}}\n"
        "bridges:\n  - {name: kam-trunk, type: sip, trunk: kam,"
        " codecs: {audio: [PCMU], video: []}}\n",
        environ={"GW_PW": USERS["gw"]},
    )
    trunks = TrunkManager(sip, sip.clock)
    await trunks.start(settings.sip.trunks)
    try:
        await wait_for(lambda: trunks.is_up("kam") is True, timeout=5)
        service = await bridges(settings)
        participant = await service.registry.dial("kam-trunk", "bob", "guest")
        assert isinstance(participant, SipParticipant)
        assert await participant.wait_answered(timeout=10), participant.history
        call = participant.call
        assert call is not None and call.invite is not None
        assert (call.invite.headers.get("From") or "").startswith(f"<{proxy.uri('gw')}>")
        assert call.invite.cseq_number == 2, "challenged and answered with the trunk's password"
        await participant.hangup("done")
        assert await participant.wait_ended(timeout=5) is DialState.ENDED
    finally:
        await trunks.stop()
