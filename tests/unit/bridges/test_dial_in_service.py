"""The dial-in service's wiring hook, its start checks and the lobby's tones."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bridges.sip.dialin import DialInService, add_dial_in
from bridges.sip.dialin_leg import WAITING, tones
from bridges.sip.endpoint import SipEndpoint
from gateway.app import StartupError
from gateway.calls import CallRegistry
from gateway.clock import FakeClock
from gateway.media.rtp_transport import RtpPortAllocator
from gateway.rooms.directory import RoomDirectory
from gateway.rooms.room import Rooms
from gateway.settings import load_settings
from gateway.store.service import StoreService


class FakeGateway:
    def __init__(self) -> None:
        self.services: list[Any] = [StoreService()]


async def _nothing(_appointment_id: str) -> Any:
    return None


def _directory() -> RoomDirectory:
    return RoomDirectory(Rooms(FakeClock()), _nothing)


async def test_add_dial_in_appends_a_service_that_answers_the_lobby_until_stopped() -> None:
    gateway, endpoint = FakeGateway(), SipEndpoint(CallRegistry())
    service = add_dial_in(gateway, endpoint, RtpPortAllocator(30000, 30010), _directory())
    assert gateway.services[-1] is service
    await service.start(load_settings("sip:\n  dial_in:\n    lobby_user: desk\n"))
    assert "desk" in endpoint.services and endpoint.on_incoming_call is not None
    assert service.executor is not None  # its own: no media service in this gateway
    await service.reload(load_settings("sip:\n  dial_in:\n    lobby_user: ''\n"))
    assert "desk" not in endpoint.services
    await service.stop()
    assert endpoint.on_incoming_call is None and service.executor is None


async def test_lobby_user_may_not_be_the_echo_user() -> None:
    service = DialInService(
        SipEndpoint(CallRegistry()), _directory(), lambda: None,  # type: ignore[arg-type,return-value]
        allocator=RtpPortAllocator(30000, 30010),
    )  # fmt: skip
    with pytest.raises(StartupError, match="lobby_user"):
        await service.start(load_settings("sip:\n  dial_in:\n    lobby_user: echo\n"))


def test_tones_play_once_or_repeat() -> None:
    once = tones(((1000.0, 0.01), (None, 0.01)))
    first = once(480, 48000)  # 10 ms tone, 10 ms silence
    assert np.abs(first[:480]).max() > 5000 and not first[480:].any()
    assert not once(960, 48000).any()  # then silence for ever
    looping = tones(WAITING, repeat=True)
    second = [looping(48000, 48000) for _ in range(6)]  # 1 s on, 4 s off, again
    assert np.abs(second[0]).max() > 5000 and not second[1].any() and not second[4].any()
    assert np.abs(second[5]).max() > 5000
