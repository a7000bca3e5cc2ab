"""Runs the hostile-message corpus in tests/golden/sip against the parser.

Each file's expected outcome is in expectations.json; see the README there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridges.sip.message import (
    PARSE_REASONS,
    SipMessage,
    SipParseError,
    SipRequest,
    SipResponse,
    build_error_response,
    build_response,
    parse_message,
    validate_request,
)

CORPUS = Path(__file__).resolve().parents[2] / "golden" / "sip"
EXPECTATIONS: dict[str, dict[str, Any]] = json.loads((CORPUS / "expectations.json").read_text())
SUPPORTED = {"timer", "100rel", "replaces"}


def _req(m: SipMessage) -> SipRequest:
    assert isinstance(m, SipRequest)
    return m


def _resp(m: SipMessage) -> SipResponse:
    assert isinstance(m, SipResponse)
    return m


def _sdp_ok(m: SipMessage) -> bool:
    sdp = m.sdp()
    return sdp is not None and sdp.startswith(b"v=0\r\n") and b"m=audio" in sdp


CHECKS: dict[str, Callable[[SipMessage], object]] = {
    "method": lambda m: _req(m).method,
    "status": lambda m: _resp(m).status,
    "reason_phrase": lambda m: _resp(m).reason_phrase,
    "call_id": lambda m: m.call_id,
    "cseq_number": lambda m: m.cseq_number,
    "cseq_method": lambda m: m.cseq_method,
    "branch": lambda m: m.branch,
    "sent_by": lambda m: list(m.sent_by),
    "received": lambda m: m.top_via.received,
    "rport": lambda m: m.top_via.rport,
    "top_transport": lambda m: m.top_via.transport,
    "via_count": lambda m: len(m.vias),
    "from_tag": lambda m: m.from_tag,
    "to_tag": lambda m: m.to_tag,
    "from_display_name": lambda m: m.from_address.name,
    "from_user": lambda m: m.from_address.uri.user,
    "contact_count": lambda m: len(m.contacts),
    "contact_user": lambda m: m.contacts[0].uri.user,
    "max_forwards": lambda m: m.max_forwards,
    "supported": lambda m: m.supported,
    "content_type": lambda m: m.content_type,
    "body_len": lambda m: len(m.body),
    "body": lambda m: m.body.decode(),
    "sdp": _sdp_ok,
    "uri_user": lambda m: _req(m).parsed_uri.user,
    "uri_host": lambda m: _req(m).parsed_uri.host,
    "uri_port": lambda m: _req(m).parsed_uri.port,
    "uri_scheme": lambda m: _req(m).parsed_uri.scheme,
}

PARSE_OK = sorted(n for n, e in EXPECTATIONS.items() if e["outcome"] == "parse-ok")
ERRORS = sorted(n for n, e in EXPECTATIONS.items() if e["outcome"] == "error")


def test_the_corpus_is_complete_and_big_enough() -> None:
    on_disk = {p.name for p in CORPUS.glob("*.sip")}
    assert on_disk == set(EXPECTATIONS), "every .sip file has an expectation and vice versa"
    assert len(on_disk) >= 30
    assert len(PARSE_OK) >= 10
    assert len(ERRORS) >= 10
    for entry in EXPECTATIONS.values():
        assert entry["outcome"] in ("parse-ok", "error")
        if entry["outcome"] == "error":
            assert entry["reason"] in PARSE_REASONS
        for check in entry.get("checks", {}):
            assert check in CHECKS or check == "unsupported", check


@pytest.mark.parametrize("name", PARSE_OK)
def test_message_parses_as_expected(name: str) -> None:
    expect = EXPECTATIONS[name]
    msg = parse_message((CORPUS / name).read_bytes())
    for check, value in expect["checks"].items():
        if check == "unsupported":
            continue
        assert CHECKS[check](msg) == value, check
    # Round trip: what we print parses back to the same message, and printing is stable.
    again = parse_message(bytes(msg))
    assert again == msg
    assert bytes(again) == bytes(msg)


@pytest.mark.parametrize("name", PARSE_OK)
def test_request_validation_as_expected(name: str) -> None:
    expect = EXPECTATIONS[name]
    msg = parse_message((CORPUS / name).read_bytes())
    if not isinstance(msg, SipRequest):
        assert expect["validate"] is None
        return
    rejection = validate_request(msg, supported_extensions=SUPPORTED)
    assert (rejection.status if rejection else None) == expect["validate"]
    if "unsupported" in expect["checks"]:
        assert rejection is not None
        assert rejection.headers == (("Unsupported", expect["checks"]["unsupported"]),)
    status = rejection.status if rejection else 200
    answer = parse_message(bytes(build_response(msg, status, to_tag="t0rture", headers=())))
    assert isinstance(answer, SipResponse)
    assert answer.status == status
    assert (answer.call_id, answer.cseq, answer.vias) == (msg.call_id, msg.cseq, msg.vias)
    assert answer.from_tag == msg.from_tag
    assert answer.to_tag == (msg.to_tag or "t0rture")


@pytest.mark.parametrize("name", ERRORS)
def test_message_is_rejected_as_expected(name: str) -> None:
    expect = EXPECTATIONS[name]
    data = (CORPUS / name).read_bytes()
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    err = info.value
    assert (err.sip_status, err.reason, err.can_answer) == (
        expect["status"],
        expect["reason"],
        expect["can_answer"],
    )
    answer = build_error_response(data, err)
    if not expect["can_answer"]:
        assert answer is None
        return
    assert answer is not None
    assert answer.status == expect["status"]
    assert answer.branch == "z9hG4bKtort01"
    assert answer.call_id == "torture-7f3a91@ua1.example.org"
    assert bytes(answer).startswith(f"SIP/2.0 {expect['status']} ".encode())
    if not expect["answer_parses"]:
        # Best effort: a broken or missing From/To is copied as it came, so our
        # own strict parser may refuse the answer; the client matches on Via/CSeq.
        with pytest.raises(SipParseError):
            parse_message(bytes(answer))
        return
    reparsed = parse_message(bytes(answer))
    assert reparsed == answer
    assert reparsed.to_tag is not None
