"""A browser leg linked to a SIP call through the media router (the room's ``connect``).

An aiortc "browser" (Opus, 440 Hz) talks to baresip (PCMU, 1 kHz ausine)
dialled out through Kamailio with digest auth: the router transcodes Opus
<-> PCMU both ways, and each side must hear the other's tone at its
frequency. Unlinking stops the media and leaves no route behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from bridges.service import BridgeService
from bridges.sip.bridge import SipParticipant
from gateway.media.router import Router
from gateway.webrtc.group import GroupMedia
from gateway.webrtc.leg import WebRtcLeg
from gateway.webrtc.links import MediaLinker
from gateway.webrtc.port import WebRtcPort
from mediacodecs.executor import MediaExecutor
from tests.integration.test_bridge_sip import USERS, bridge_yaml, settings_for
from tests.support.aio import in_thread, wait_for
from tests.support.baresip import Baresip, dominant_frequency
from tests.support.kamailio import KamailioServer
from tests.support.webrtc import LEG_SETTINGS, BrowserPeer, peer_to_answering_leg

pytestmark = pytest.mark.integration


async def test_browser_and_sip_phone_hear_each_other_through_the_router(
    service: BridgeService,
    executor: MediaExecutor,
    kamailio: Callable[..., KamailioServer],
    baresip: Callable[..., Baresip],
) -> None:
    proxy = kamailio(USERS)
    bob = baresip("bob", registrar=proxy.address, password=USERS["bob"], codecs=("PCMU",))
    await service.start(settings_for(bridge_yaml("desk", proxy)))
    peer = BrowserPeer(video=False)
    leg = WebRtcLeg(LEG_SETTINGS, slots=("audio",))
    await peer_to_answering_leg(peer, leg)
    await asyncio.wait_for(leg.connected.wait(), 15)
    phone = await service.registry.dial("desk", "ext-bob", "interpreter")
    assert isinstance(phone, SipParticipant)
    assert await phone.wait_answered(timeout=10), phone.history

    router = Router(executor)
    unlink = MediaLinker(router)(leg, phone)
    routes = router.routes()
    assert len(routes) == 2, "one route each way, audio only"
    port = next(r.source for r in routes if isinstance(r.source, WebRtcPort))
    assert port.negotiated is not None and port.negotiated.codecs[0].name == "opus"

    await wait_for(lambda: len(peer.heard) > 100, timeout=10)
    await asyncio.sleep(1.0)
    assert abs(peer.dominant_frequency() - 1000) < 15, "baresip's tone not heard in the browser"
    assert {r.mode for r in routes} == {"transcode"}
    assert port.sent > 50

    unlink()
    assert router.routes() == []
    sent = port.sent
    await asyncio.sleep(0.3)
    assert port.sent == sent, "media went on after unlinking"
    await phone.hangup("done")
    await in_thread(lambda: bob.wait_event("CALL_CLOSED", timeout=5))
    wav = await in_thread(lambda: bob.wait_recording(timeout=5))
    assert abs(dominant_frequency(wav) - 440) < 15, "the browser's tone not in baresip's recording"  # type: ignore[arg-type]
    for closable in (leg, peer):
        await closable.close()


def _strength(wav: object, frequency: float) -> float:
    import wave

    import numpy as np

    with wave.open(str(wav)) as w:
        rate, channels = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    samples = data.reshape(-1, channels)[rate // 2 :, 0].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    freqs = np.fft.rfftfreq(samples.size, 1 / rate)
    band = spectrum[(freqs > frequency - 10) & (freqs < frequency + 10)]
    return float(band.max() / spectrum.max())


async def test_three_parties_each_hear_the_other_two_and_see_a_speaker(
    service: BridgeService,
    executor: MediaExecutor,
    kamailio: Callable[..., KamailioServer],
    baresip: Callable[..., Baresip],
) -> None:
    """Two browsers (440 and 700 Hz, with video) and a phone (PCMU, 1 kHz) in one group:
    mix-minus audio, whatever the codec; each browser sees the other's video."""
    proxy = kamailio(USERS)
    bob = baresip("bob", registrar=proxy.address, password=USERS["bob"], codecs=("PCMU",))
    await service.start(settings_for(bridge_yaml("desk", proxy)))
    peers = [BrowserPeer(tone_hz=440), BrowserPeer(tone_hz=700)]
    legs = [WebRtcLeg(LEG_SETTINGS), WebRtcLeg(LEG_SETTINGS)]
    for peer, leg in zip(peers, legs, strict=True):
        await peer_to_answering_leg(peer, leg)
    await asyncio.wait_for(asyncio.gather(*(leg.connected.wait() for leg in legs)), 15)
    phone = await service.registry.dial("desk", "ext-bob", "interpreter")
    assert await phone.wait_answered(timeout=10), phone.history

    group = GroupMedia(Router(executor), [legs[0], legs[1], phone])
    await wait_for(lambda: all(len(p.heard) > 150 for p in peers), timeout=15)
    await asyncio.sleep(1.5)
    a, b = peers
    assert all(m.sent > 50 for m in group.mixer.members.values()), "every member gets the mix"
    assert a.strength(700) > 0.2 and a.strength(1000) > 0.2, "A must hear B and the phone"
    assert a.strength(440) < 0.1, "A must not hear itself"
    assert b.strength(440) > 0.2 and b.strength(1000) > 0.2, "B must hear A and the phone"
    assert b.strength(700) < 0.1, "B must not hear itself"
    frames = [p.video_frames for p in peers]
    await asyncio.sleep(1.0)
    assert all(p.video_frames > f + 10 for p, f in zip(peers, frames, strict=True)), frames

    group.close()
    await phone.hangup("done")
    await in_thread(lambda: bob.wait_event("CALL_CLOSED", timeout=5))
    wav = await in_thread(lambda: bob.wait_recording(timeout=5))
    assert _strength(wav, 440) > 0.2 and _strength(wav, 700) > 0.2, "the phone hears both"
    assert _strength(wav, 1000) < 0.1, "the phone does not hear itself"
    for leg in legs:
        await leg.close()
    for peer in peers:
        await peer.close()
