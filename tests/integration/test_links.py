"""A browser leg linked to a SIP call through the media router (the room's ``connect``).

An aiortc "browser" (Opus, 440 Hz) talks to baresip (PCMU, 1 kHz ausine)
dialled out through Kamailio with digest auth: the router transcodes Opus
<-> PCMU both ways, and each side must hear the other's tone at its
frequency. Unlinking stops the media and leaves no route behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from bridges.service import BridgeService
from bridges.sip.bridge import SipParticipant
from bridges.sip.endpoint import SipEndpoint
from gateway.media.router import Router
from gateway.media.rtp_transport import RtpPortAllocator
from gateway.settings import WebRtcSettings
from gateway.webrtc.leg import WebRtcLeg
from gateway.webrtc.links import MediaLinker
from gateway.webrtc.port import WebRtcPort
from mediacodecs.executor import MediaExecutor
from tests.integration.test_bridge_sip import USERS, bridge_yaml, settings_for
from tests.support.aio import in_thread, wait_for
from tests.support.baresip import Baresip, dominant_frequency
from tests.support.kamailio import KamailioServer
from tests.support.webrtc import BrowserPeer, peer_to_answering_leg

pytestmark = pytest.mark.integration

WEBRTC = WebRtcSettings(ice_addresses=["127.0.0.1"], connect_timeout=15)


@pytest.fixture
async def service(sip: SipEndpoint) -> AsyncIterator[BridgeService]:
    bridges = BridgeService(sip, RtpPortAllocator(43000, 43999))
    yield bridges
    await bridges.stop()
    await wait_for(lambda: sip.calls.active == 0, timeout=5)


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
    leg = WebRtcLeg(WEBRTC, slots=("audio",))
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
