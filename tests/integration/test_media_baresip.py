"""The media plane against real baresip: tones decoded both ways, transcoded
relays between two baresips with different codecs, DTMF.

The probe service plays a 440 Hz tone and decodes what it hears; baresip
sends a 1 kHz sine (ausine) and records what it receives (sndfile), so the
frequencies tell which side's audio arrived where. Relayed calls use two
baresips with different tones, so a reflected tone cannot pass for a relayed one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

from bridges.sip.call import SipCall
from bridges.sip.endpoint import SipEndpoint
from bridges.sip.media import SipMedia
from bridges.sip.relay import RelayService, RelayTarget
from gateway.media.capabilities import SrtpPolicy
from gateway.media.dtmf import DtmfDigit
from gateway.media.local import AudioListener, AudioPlayer, tone
from gateway.media.router import Router
from mediacodecs.audio import Pcm
from mediacodecs.executor import MediaExecutor
from tests.support.aio import in_thread, wait_for
from tests.support.baresip import Baresip, dominant_frequency

pytestmark = pytest.mark.integration

PROBE_TONE = 440


def spectrum_peak(pcm: Pcm, rate: int) -> float:
    samples = pcm[rate // 5 :].astype(np.float64)  # skip the first 200 ms
    assert samples.size > rate // 2, f"only {samples.size} samples heard"
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[int(np.argmax(spectrum))])


@dataclass
class Probe:
    """A SIP service that plays a tone and keeps what it hears."""

    executor: MediaExecutor
    srtp: str = "offer"
    heard: list[Pcm] = field(default_factory=list)
    rate: int = 0
    digits: list[DtmfDigit] = field(default_factory=list)
    media: list[SipMedia] = field(default_factory=list)
    players: list[AudioPlayer] = field(default_factory=list)

    async def handle(self, call: SipCall) -> None:
        media = await SipMedia("127.0.0.1", srtp=SrtpPolicy(self.srtp)).open()
        self.media.append(media)
        media.bind(call)
        media.on_dtmf = self.digits.append
        assert call.on_offer is not None
        body = await call.on_offer(call, call.remote_sdp)
        assert body is not None
        await call.answer(body)
        audio = media.streams[0]
        player = AudioPlayer(audio, self.executor, tone(PROBE_TONE))
        self.players.append(player)
        player.start()
        listener = AudioListener(audio, self.executor, on_pcm=self._heard)
        audio.on_rtp = listener.feed
        call.on_end.append(lambda _c: player.stop())

    def _heard(self, pcm: Pcm, rate: int) -> None:
        self.heard.append(pcm.copy())
        self.rate = rate

    def pcm(self) -> Pcm:
        return np.concatenate(self.heard) if self.heard else np.zeros(0, np.int16)


@pytest.mark.parametrize(
    ("codec", "mediaenc"),
    [("PCMU", None), ("PCMA", None), ("G722", None), ("opus", None), ("PCMU", "srtp-mand")],
)
async def test_tones_cross_both_ways_decoded(
    sip: SipEndpoint,
    executor: MediaExecutor,
    baresip: Callable[..., Baresip],
    codec: str,
    mediaenc: str | None,
) -> None:
    probe = Probe(executor)
    sip.services["probe"] = probe.handle
    port = sip.local_address("udp")[1]
    ua = baresip(f"t{codec.lower()}", codecs=(codec,), mediaenc=mediaenc)
    await in_thread(lambda: ua.dial(f"sip:probe@127.0.0.1:{port}"))
    await in_thread(lambda: ua.wait_event("CALL_ESTABLISHED", timeout=5))
    await asyncio.sleep(2.0)
    (media,) = probe.media
    negotiated = media.streams[0].negotiated
    assert negotiated is not None and negotiated.codecs[0].name.lower() == codec.lower()
    if mediaenc:
        assert negotiated.srtp is not None
    assert abs(spectrum_peak(probe.pcm(), probe.rate) - 1000) < 15, "baresip's tone not heard"
    assert probe.players[0].sent > 60
    await in_thread(ua.hangup)
    await in_thread(lambda: ua.wait_event("CALL_CLOSED", timeout=5))
    await wait_for(lambda: sip.calls.active == 0)
    wav = await in_thread(lambda: ua.wait_recording(timeout=5))
    assert abs(dominant_frequency(wav) - PROBE_TONE) < 15, "our tone is not in baresip's recording"  # type: ignore[arg-type]


async def test_dtmf_from_baresip_reaches_the_call(
    sip: SipEndpoint, executor: MediaExecutor, baresip: Callable[..., Baresip]
) -> None:
    probe = Probe(executor)
    sip.services["probe"] = probe.handle
    port = sip.local_address("udp")[1]
    ua = baresip("dtmf", codecs=("PCMU",))
    await in_thread(lambda: ua.dial(f"sip:probe@127.0.0.1:{port}"))
    await in_thread(lambda: ua.wait_event("CALL_ESTABLISHED", timeout=5))
    await asyncio.sleep(0.5)
    for digit in "1234#*9":
        await in_thread(lambda d=digit: ua.send_dtmf(d))  # type: ignore[misc]
        await asyncio.sleep(0.3)
    await wait_for(lambda: len(probe.digits) >= 7, timeout=5)
    assert "".join(d.digit for d in probe.digits) == "1234#*9"
    assert {d.method for d in probe.digits} == {"rfc4733"}
    await in_thread(ua.hangup)


@dataclass
class RelayRig:
    sip: SipEndpoint
    relay: RelayService
    router: Router


def _relay(sip: SipEndpoint, executor: MediaExecutor, callee: Baresip) -> RelayRig:
    router = Router(executor)
    target = RelayTarget(callee.contact_uri, ("127.0.0.1", callee.sip_port), answer_timeout=5)
    relay = RelayService(sip, target, router, lambda: SipMedia("127.0.0.1"))
    sip.services["relay"] = relay.handle
    return RelayRig(sip, relay, router)


@pytest.mark.parametrize(
    ("caller_codec", "callee_codec", "mode"),
    [
        ("opus", "PCMU", "transcode"),
        ("PCMA", "opus", "transcode"),
        ("G722", "PCMU", "transcode"),
        ("PCMU", "PCMU", "passthrough"),
    ],
)
async def test_relay_between_codecs(  # noqa: PLR0917 - fixtures and parameters
    sip: SipEndpoint,
    executor: MediaExecutor,
    baresip: Callable[..., Baresip],
    caller_codec: str,
    callee_codec: str,
    mode: str,
) -> None:
    callee = baresip("bob", codecs=(callee_codec,), tone_hz=600)
    caller = baresip("alice", codecs=(caller_codec,), tone_hz=1000)
    rig = _relay(sip, executor, callee)
    port = sip.local_address("udp")[1]
    await in_thread(lambda: caller.dial(f"sip:relay@127.0.0.1:{port}"))
    await in_thread(lambda: caller.wait_event("CALL_ESTABLISHED", timeout=8))
    await asyncio.sleep(2.5)
    routes = rig.router.routes()
    assert len(routes) == 2
    assert {route.mode for route in routes} == {mode}
    for route in routes:
        sent = route.stats.forwarded + route.stats.transcoded_out
        assert sent > 80, f"{route.stats}"
    await in_thread(caller.hangup)
    await in_thread(lambda: callee.wait_event("CALL_CLOSED", timeout=5))
    await wait_for(lambda: sip.calls.active == 0)
    assert rig.router.routes() == []
    heard_by_caller = await in_thread(lambda: caller.wait_recording(timeout=5))
    heard_by_callee = await in_thread(lambda: callee.wait_recording(timeout=5))
    assert abs(dominant_frequency(heard_by_caller) - 600) < 15  # type: ignore[arg-type]
    assert abs(dominant_frequency(heard_by_callee) - 1000) < 15  # type: ignore[arg-type]


async def test_relay_callee_busy_passes_status_and_frees_media(
    sip: SipEndpoint, executor: MediaExecutor, baresip: Callable[..., Baresip]
) -> None:
    callee = baresip("busy", codecs=("PCMU",), answermode="manual")
    caller = baresip("carol", codecs=("PCMU",))
    rig = _relay(sip, executor, callee)
    port = sip.local_address("udp")[1]
    await in_thread(lambda: caller.dial(f"sip:relay@127.0.0.1:{port}"))
    await in_thread(lambda: callee.wait_event("CALL_INCOMING", timeout=5))
    await in_thread(callee.hangup)  # reject while ringing
    closed = await in_thread(lambda: caller.wait_event("CALL_CLOSED", timeout=5))
    assert closed is not None
    await wait_for(lambda: sip.calls.active == 0)
    assert rig.relay.calls == {} and rig.router.routes() == []
