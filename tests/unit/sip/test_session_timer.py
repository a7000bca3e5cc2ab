"""RFC 4028 negotiation, sans-IO."""

from __future__ import annotations

from bridges.sip.message import SipRequest, build_response
from bridges.sip.outgoing import build_request, via_value
from bridges.sip.session_timer import (
    SessionTimer,
    after_422,
    negotiate_as_uac,
    negotiate_as_uas,
)


def invite(*headers: tuple[str, str]) -> SipRequest:
    return build_request(
        "INVITE", "sip:echo@127.0.0.1",
        via=via_value("udp", "127.0.0.1", 5070, "z9hG4bKst"),
        from_value="<sip:a@127.0.0.1>;tag=1", to_value="<sip:echo@127.0.0.1>",
        call_id="st-1", cseq=1, headers=list(headers),
    )  # fmt: skip


def test_too_brief_interval_gets_422_with_min_se() -> None:
    decision = negotiate_as_uas(invite(("Session-Expires", "60"), ("Supported", "timer")))
    assert decision.reject_status == 422
    assert ("Min-SE", "90") in decision.headers
    assert decision.timer is None


def test_uac_that_supports_timer_refreshes() -> None:
    decision = negotiate_as_uas(invite(("Session-Expires", "600"), ("Supported", "timer")))
    assert decision.reject_status is None
    assert ("Session-Expires", "600;refresher=uac") in decision.headers
    assert ("Require", "timer") in decision.headers
    assert decision.timer == SessionTimer(600, we_refresh=False)


def test_uac_without_timer_support_makes_us_refresh() -> None:
    decision = negotiate_as_uas(invite(("Session-Expires", "300")))
    assert decision.timer == SessionTimer(300, we_refresh=True)
    assert ("Require", "timer") not in decision.headers


def test_explicit_refresher_is_kept() -> None:
    decision = negotiate_as_uas(
        invite(("Session-Expires", "300;refresher=uas"), ("Supported", "timer"))
    )
    assert decision.timer == SessionTimer(300, we_refresh=True)


def test_no_session_timer_when_nobody_asks() -> None:
    decision = negotiate_as_uas(invite())
    assert decision == negotiate_as_uas(invite())
    assert decision.timer is None and decision.headers == ()


def test_uac_side_reads_the_2xx() -> None:
    ok = build_response(
        invite(), 200, to_tag="t", headers=[("Session-Expires", "1800;refresher=uas")]
    )
    assert negotiate_as_uac(ok) == SessionTimer(1800, we_refresh=False)
    ok = build_response(invite(), 200, to_tag="t", headers=[("Session-Expires", "900")])
    assert negotiate_as_uac(ok) == SessionTimer(900, we_refresh=True)
    assert negotiate_as_uac(build_response(invite(), 200, to_tag="t")) is None


def test_deadlines() -> None:
    assert SessionTimer(600, we_refresh=True).next_deadline(100.0) == 400.0
    assert SessionTimer(600, we_refresh=False).next_deadline(100.0) == 100.0 + 600 - 32
    assert SessionTimer(90, we_refresh=False).next_deadline(0.0) == 60.0


def test_after_422() -> None:
    too_brief = build_response(invite(), 422, headers=[("Min-SE", "120")])
    assert after_422(too_brief, 90) == 120
    assert after_422(too_brief, 120) is None
