"""Property tests for the SIP message layer (hypothesis).

- any bytes: ``parse_message`` raises nothing but ``SipParseError``, and what
  does parse survives every accessor and prints back to an equal message;
- generated valid messages round-trip with their values intact;
- the stream framer gives the same frames whatever the chunking.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridges.sip.framing import SipStreamFramer
from bridges.sip.message import (
    SipMessage,
    SipParseError,
    SipRequest,
    SipResponse,
    build_error_response,
    build_response,
    parse_message,
    validate_request,
)

CORPUS = sorted((Path(__file__).resolve().parents[1] / "golden" / "sip").glob("*.sip"))
SEEDS = [p.read_bytes() for p in CORPUS if p.stat().st_size < 8192]
# SIP_FUZZ_EXAMPLES=20000 for a deeper run than the default quick one.
FUZZ = settings(
    max_examples=int(os.environ.get("SIP_FUZZ_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# --- any bytes -----------------------------------------------------------------------


def _touch_everything(msg: SipMessage) -> None:
    """Call every accessor; each may only fail with SipParseError."""
    getters: list[Callable[[], object]] = [
        lambda: msg.call_id, lambda: msg.cseq, lambda: msg.top_via, lambda: msg.vias,
        lambda: msg.branch, lambda: msg.sent_by, lambda: msg.from_tag, lambda: msg.to_tag,
        lambda: msg.from_address, lambda: msg.to_address, lambda: msg.contacts,
        lambda: msg.max_forwards, lambda: msg.content_type, lambda: msg.require,
        lambda: msg.supported, msg.sdp, lambda: msg.top_via.rport,
    ]  # fmt: skip
    if isinstance(msg, SipRequest):
        getters.append(lambda: msg.parsed_uri)
    for get in getters:
        with contextlib.suppress(SipParseError):
            get()


def _check_any_bytes(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except SipParseError as err:
        error = err
    else:
        _check_parsed(msg)
        return
    answer = build_error_response(data, error)
    if answer is not None:
        assert answer.status == error.sip_status
        assert bytes(answer).startswith(b"SIP/2.0 ")


def _check_parsed(msg: SipRequest | SipResponse) -> None:
    _touch_everything(msg)
    printed = bytes(msg)
    assert parse_message(printed) == msg
    if isinstance(msg, SipRequest):
        validate_request(msg, supported_extensions={"timer"})
        reply = parse_message(bytes(build_response(msg, 200, to_tag="fuzz")))
        assert isinstance(reply, SipResponse)
        assert reply.status == 200


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_only_raise_parse_errors(data: bytes) -> None:
    _check_any_bytes(data)


@st.composite
def mutated_seed(draw: st.DrawFn) -> bytes:
    """A corpus message with a few bytes inserted, deleted or overwritten."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    alphabet = st.sampled_from(list(b'\r\n \t:;,<>"@%0[]=/\\\x00\xff') + list(range(256)))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        if op == "insert":
            data[pos:pos] = bytes(draw(st.lists(alphabet, min_size=1, max_size=4)))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif pos < len(data):
            data[pos] = draw(alphabet)
    return bytes(data)


@FUZZ
@given(mutated_seed())
def test_mutated_corpus_messages_only_raise_parse_errors(data: bytes) -> None:
    _check_any_bytes(data)


# --- generated valid messages --------------------------------------------------------

TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~", min_size=1, max_size=12)  # fmt: skip
LABEL = st.from_regex(r"[a-z]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
HOST = st.one_of(
    st.lists(LABEL, min_size=1, max_size=3).map(".".join),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
    st.sampled_from(["[2001:db8::1]", "[::1]", "[2001:db8:0:0:8:800:200c:417a]"]),
)
USER = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()&=+$,;?/", min_size=1, max_size=10)
PORT = st.one_of(st.none(), st.integers(1, 65535))
DISPLAY = st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), max_size=12)
# Header values are stored without surrounding SP/HTAB, as the parser strips them.
FREE_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), max_size=40).map(
    lambda s: s.strip(" \t")
)


def _hostport(host: str, port: int | None) -> str:
    return host if port is None else f"{host}:{port}"


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def valid_message(draw: st.DrawFn) -> tuple[SipRequest | SipResponse, dict[str, object]]:
    method = draw(st.sampled_from(["INVITE", "OPTIONS", "BYE", "REGISTER"]) | TOKEN)
    branch = "z9hG4bK" + draw(TOKEN)
    host, port = draw(HOST), draw(PORT)
    from_tag, to_tag = draw(TOKEN), draw(st.none() | TOKEN)
    cseq = draw(st.integers(0, 2**31 - 1))
    call_id = draw(TOKEN) + "@" + draw(HOST)
    display = draw(DISPLAY)
    vias = [
        f"SIP/2.0/{draw(st.sampled_from(['UDP', 'TCP', 'TLS', 'WS']))} "
        f"{_hostport(host, port)};branch={branch}" + draw(st.sampled_from(["", ";rport"]))
    ]
    vias += [f"SIP/2.0/UDP {draw(HOST)};branch=z9hG4bK{i}" for i in range(draw(st.integers(0, 3)))]
    headers: list[tuple[str, str]] = [("Via", v) for v in vias]
    if draw(st.booleans()) and len(vias) > 1:  # comma-fold the Vias into one line
        headers = [("v", ", ".join(vias))]
    headers += [
        ("f" if draw(st.booleans()) else "From",
         f"{_quote(display)} <sip:{draw(USER)}@{draw(HOST)}>;tag={from_tag}"),
        ("To", f"<sip:{draw(USER)}@{draw(HOST)}>" + (f";tag={to_tag}" if to_tag else "")),
        ("i" if draw(st.booleans()) else "Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
        ("Max-Forwards", str(draw(st.integers(0, 255)))),
    ]  # fmt: skip
    headers += [(f"X-{draw(TOKEN)}", draw(FREE_TEXT)) for _ in range(draw(st.integers(0, 3)))]
    body = draw(st.binary(max_size=300))
    expected: dict[str, object] = {
        "branch": branch, "sent_by": (host, port), "from_tag": from_tag, "to_tag": to_tag,
        "cseq": (cseq, method), "call_id": call_id, "display": display, "body": body,
        "via_count": len(vias),
    }  # fmt: skip
    msg: SipRequest | SipResponse
    if draw(st.booleans()):
        uri = f"sip:{draw(USER)}@{_hostport(draw(HOST), draw(PORT))}"
        msg = SipRequest(method, uri, headers, body)
    else:
        msg = SipResponse(draw(st.integers(100, 699)), draw(FREE_TEXT), headers, body)
    return msg, expected


@FUZZ
@given(valid_message())
def test_generated_messages_round_trip(
    case: tuple[SipRequest | SipResponse, dict[str, object]],
) -> None:
    msg, expected = case
    parsed = parse_message(bytes(msg))
    assert parsed == msg
    assert bytes(parse_message(bytes(parsed))) == bytes(parsed)
    assert parsed.branch == expected["branch"]
    assert parsed.sent_by == expected["sent_by"]
    assert (parsed.from_tag, parsed.to_tag) == (expected["from_tag"], expected["to_tag"])
    assert (parsed.cseq_number, parsed.cseq_method) == expected["cseq"]
    assert parsed.call_id == expected["call_id"]
    assert parsed.from_address.name == expected["display"]
    assert parsed.body == expected["body"]
    assert len(parsed.vias) == expected["via_count"]


# --- framing -------------------------------------------------------------------------


@st.composite
def stream_and_cuts(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    pieces = []
    for _ in range(draw(st.integers(1, 5))):
        pieces.append(draw(st.sampled_from([b"\r\n", b"\r\n\r\n", b""])))
        msg, _ = draw(valid_message())
        pieces.append(bytes(msg))
    stream = b"".join(pieces)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    return stream, cuts


@FUZZ
@given(stream_and_cuts())
def test_framer_output_does_not_depend_on_chunking(case: tuple[bytes, list[int]]) -> None:
    stream, cuts = case
    whole = SipStreamFramer().feed(stream)
    framer = SipStreamFramer()
    chunked: list[bytes | None] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        chunked += framer.feed(stream[start:end])
    assert chunked == whole
    assert framer.buffered == 0
    assert all(parse_message(frame) is not None for frame in whole if frame is not None)


@FUZZ
@given(st.binary(max_size=512), st.lists(st.integers(0, 512), max_size=8))
def test_framer_on_garbage_only_raises_parse_errors(data: bytes, cuts: list[int]) -> None:
    framer = SipStreamFramer(max_header_bytes=1024, max_body_bytes=1024)
    try:
        for start, end in zip([0, *sorted(cuts)], [*sorted(cuts), len(data)], strict=True):
            framer.feed(data[start:end])
    except SipParseError:
        assert framer.failed
