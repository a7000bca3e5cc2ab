"""The browser leg's state machine, its limits and metrics, and passthrough keyframe pacing."""

from __future__ import annotations

from typing import cast

import pytest

from gateway import metrics
from gateway.clock import FakeClock
from gateway.errors import Busy
from gateway.settings import WebRtcSettings
from gateway.webrtc.leg import _TRANSITIONS, LegState, LegStateError, WebRtcLeg
from gateway.webrtc.passthrough import KEYFRAME_INTERVAL, _Direction


def _gauge() -> float:
    return float(metrics.WEBRTC_LEGS_ACTIVE._value.get())


def test_every_state_has_a_row_and_closed_is_final() -> None:
    assert set(_TRANSITIONS) == set(LegState)
    assert _TRANSITIONS[LegState.CLOSED] == frozenset()
    for state, targets in _TRANSITIONS.items():
        assert LegState.NEW not in targets, state  # nothing goes back to NEW
        if state is not LegState.CLOSED:
            assert LegState.CLOSED in targets, state  # everything can hang up


async def test_illegal_transitions_raise() -> None:
    leg = WebRtcLeg(WebRtcSettings())
    with pytest.raises(LegStateError, match="new -> connected"):
        leg._set_state(LegState.CONNECTED)
    leg._set_state(LegState.CONNECTING)
    with pytest.raises(LegStateError, match="connecting -> offered"):
        leg._set_state(LegState.OFFERED)
    leg._set_state(LegState.FAILED)
    with pytest.raises(LegStateError):
        leg._set_state(LegState.CONNECTED)  # only an ICE restart leaves FAILED
    await leg.close()
    for state in LegState:
        with pytest.raises(LegStateError):
            leg._set_state(state)


async def test_operations_check_the_state() -> None:
    leg = WebRtcLeg(WebRtcSettings())
    seen: list[LegState] = []
    leg.on_state.append(lambda _leg, state: seen.append(state))
    with pytest.raises(LegStateError, match="answer while new"):
        await leg.accept_answer("v=0\r\n")
    with pytest.raises(LegStateError, match="candidate while new"):
        await leg.add_ice_candidate("candidate:1 1 udp 1 127.0.0.1 9 typ host", "0")
    assert not leg.send_payload("video", b"x", 0, True)  # nothing negotiated
    assert not leg.request_keyframe("video")
    assert leg.send_codec("video") is None
    await leg.close()
    await leg.close()  # idempotent
    assert seen == [LegState.CLOSED]
    with pytest.raises(LegStateError, match="offer while closed"):
        await leg.accept_offer("v=0\r\n")
    with pytest.raises(LegStateError, match="offer while closed"):
        await leg.create_offer()


async def test_failure_is_counted_and_the_gauge_follows_open_legs() -> None:
    before_gauge = _gauge()
    failures = metrics.ICE_FAILURES._value.get()
    leg = WebRtcLeg(WebRtcSettings())
    assert _gauge() == before_gauge + 1
    leg._set_state(LegState.CONNECTING)
    leg._set_state(LegState.FAILED)
    assert metrics.ICE_FAILURES._value.get() == failures + 1
    await leg.close()
    assert _gauge() == before_gauge


async def test_max_legs_refuses_with_busy() -> None:
    settings = WebRtcSettings(max_legs=2)
    legs = [WebRtcLeg(settings), WebRtcLeg(settings)]
    with pytest.raises(Busy):
        WebRtcLeg(settings)
    await legs[0].close()
    third = WebRtcLeg(settings)
    for leg in (legs[1], third):
        await leg.close()


class _FakeLeg:
    def __init__(self) -> None:
        self.requests: list[str] = []

    def request_keyframe(self, kind: str) -> bool:
        self.requests.append(kind)
        return True


def test_keyframe_requests_upstream_are_paced_on_the_injected_clock() -> None:
    clock = FakeClock()
    source = _FakeLeg()
    direction = _Direction(cast(WebRtcLeg, source), cast(WebRtcLeg, _FakeLeg()), clock)
    direction.keyframe_wanted("video")
    clock.advance(KEYFRAME_INTERVAL / 2)
    direction.keyframe_wanted("video")  # too soon: the first one is on its way
    direction.keyframe_wanted("audio")  # kinds are paced separately
    clock.advance(KEYFRAME_INTERVAL)
    direction.keyframe_wanted("video")
    assert source.requests == ["video", "audio", "video"]
    assert direction.stats.keyframe_requests == 3
    assert direction.stats.keyframe_requests_throttled == 1
