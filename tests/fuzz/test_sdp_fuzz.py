"""Hypothesis fuzzing of the SDP parser and the offer/answer engine.

Hostile or broken input must only ever raise ``SdpError`` (parse) or a
``GatewayError`` with a SIP status (answer), never crash; and any model we
can build must survive serialization and parsing unchanged.
"""

from __future__ import annotations

import random
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError
from gateway.media.capabilities import LocalCapabilities
from gateway.media.negotiation import answer_result
from gateway.media.offer_answer import answer
from gateway.media.sdp import (
    Attribute,
    Bandwidth,
    Connection,
    MediaDescription,
    Origin,
    SessionDescription,
    Timing,
)
from gateway.media.sdp_attributes import DIRECTION_NAMES, SdpError
from gateway.media.sdp_parser import parse
from tests.unit.media.conftest import GOLDEN_FILES, make_local

GOLDEN_TEXTS = [p.read_text() for p in GOLDEN_FILES]
LOCAL: LocalCapabilities = make_local(random_bytes=random.Random(0).randbytes)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _exercise(sdp: SessionDescription) -> None:
    """Read every typed view and answer the SDP: only GatewayErrors may escape."""
    for media in sdp.media:
        _ = (media.payload_formats, media.crypto, media.rtcp, media.ptime, media.maxptime)
        _ = (media.candidates, media.fingerprints, media.direction, media.imageattrs)
    _ = (sdp.groups, sdp.fingerprints, sdp.direction)
    ours: SessionDescription | None = None
    try:
        ours = answer(sdp, LOCAL)
    except GatewayError as error:
        status = error.sip_status
    if ours is None:
        assert status in (400, 488)
        return
    assert parse(str(ours)) == ours
    answer_result(sdp, ours)


@FUZZ
@given(st.text())
def test_arbitrary_text_raises_only_sdp_error(text: str) -> None:
    try:
        sdp = parse(text)
    except SdpError:
        return
    _exercise(sdp)


@FUZZ
@given(st.binary())
def test_arbitrary_bytes_raise_only_sdp_error(data: bytes) -> None:
    try:
        sdp = parse(data)
    except SdpError:
        return
    assert bytes(sdp) is not None


_line_prefixes = st.sampled_from(
    ["v=", "o=", "s=", "c=", "b=", "t=", "r=", "m=", "a=", "a=rtpmap:", "a=fmtp:", "a=crypto:",
     "a=rtcp:", "a=ptime:", "a=sendonly", "a=rtcp-fb:", "a=candidate:", "a=imageattr:", "x="]
)  # fmt: skip


@FUZZ
@given(st.lists(st.tuples(_line_prefixes, st.text(max_size=40)), max_size=30))
def test_sdp_shaped_garbage_raises_only_sdp_error(lines: list[tuple[str, str]]) -> None:
    text = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n" + "".join(f"{p}{v}\r\n" for p, v in lines)
    try:
        sdp = parse(text)
    except SdpError:
        return
    _exercise(sdp)


@FUZZ
@given(
    st.sampled_from(GOLDEN_TEXTS),
    st.lists(
        st.tuples(st.integers(0, 400), st.sampled_from(["delete", "duplicate", "garble"])),
        min_size=1,
        max_size=4,
    ),
    st.text(max_size=12),
)
def test_mutated_golden_sdps_raise_only_gateway_errors(
    text: str, edits: list[tuple[int, str]], noise: str
) -> None:
    lines = text.splitlines()
    for position, edit in edits:
        index = position % len(lines)
        if edit == "delete":
            del lines[index]
        elif edit == "duplicate":
            lines.insert(index, lines[index])
        else:
            line = lines[index]
            cut = position % (len(line) + 1)
            lines[index] = line[:cut] + noise + line[cut:]
        if not lines:
            return
    try:
        sdp = parse("\r\n".join(lines))
    except SdpError:
        return
    _exercise(sdp)


# --- generated models round-trip -------------------------------------------

_token = st.text(string.ascii_letters + string.digits + "-.!%*_+`'~", min_size=1, max_size=12)
# Free text as SDP carries it: no CR, LF or NUL, nothing a parser strips.
_text = st.text(
    st.characters(blacklist_characters="\r\n\x00", blacklist_categories=["Cs"]), max_size=30
).filter(lambda s: s == s.rstrip())
_word = st.text(
    st.characters(blacklist_categories=["Cs", "Zs", "Zl", "Zp", "Cc"]), min_size=1, max_size=12
).filter(lambda s: not any(c.isspace() for c in s))
_checked = {"rtpmap", "fmtp", "rtcp-fb", "rtcp", "crypto", "ptime", "maxptime", "rtcp-mux"}
_attribute_name = _token.filter(lambda n: n not in _checked | DIRECTION_NAMES)
_payload_type = st.integers(0, 127).map(str)

_attributes = st.lists(
    st.one_of(
        st.builds(Attribute, _attribute_name, st.one_of(st.none(), _text)),
        st.sampled_from(sorted(DIRECTION_NAMES)).map(Attribute),
        st.builds(
            lambda pt, n, r: Attribute("rtpmap", f"{pt} {n}/{r}"),
            _payload_type,
            _token,
            st.integers(1, 96000),
        ),
        st.builds(
            lambda pt, p: Attribute("fmtp", f"{pt} {p}".rstrip()),
            _payload_type,
            _text.filter(lambda s: s == s.strip()),
        ),
        st.just(Attribute("rtcp-mux")),
        st.integers(1, 200).map(lambda n: Attribute("ptime", str(n))),
    ),
    max_size=6,
).map(tuple)

_connection = st.builds(
    Connection,
    _word.filter(lambda w: "/" not in w),
    st.sampled_from(["IP4", "IP6"]),
    st.just("IN"),
    st.one_of(st.none(), st.sampled_from(["127", "127/3"])),
)
_bandwidth = st.builds(
    Bandwidth, st.sampled_from(["AS", "TIAS", "CT", "RS", "RR"]), st.integers(0, 10**9)
)


@st.composite
def _media(draw: st.DrawFn) -> MediaDescription:
    rtp = draw(st.booleans())
    proto = draw(
        st.sampled_from(["RTP/AVP", "RTP/SAVP", "RTP/AVPF", "UDP/TLS/RTP/SAVPF"])
        if rtp
        else st.sampled_from(["udptl", "UDP/BFCP", "TCP/BFCP", "UDP/DTLS/SCTP"])
    )
    fmt = draw(st.lists(_payload_type if rtp else _word, max_size=6))
    return MediaDescription(
        kind=draw(st.sampled_from(["audio", "video", "application", "image", "text"])),
        port=draw(st.integers(0, 65535)),
        proto=proto,
        fmt=tuple(fmt),
        port_count=draw(st.one_of(st.none(), st.integers(1, 8))),
        information=draw(st.one_of(st.none(), _text)),
        connections=tuple(draw(st.lists(_connection, max_size=2))),
        bandwidths=tuple(draw(st.lists(_bandwidth, max_size=2))),
        encryption_key=draw(st.one_of(st.none(), _text)),
        attributes=draw(_attributes),
    )


_session = st.builds(
    SessionDescription,
    origin=st.builds(
        Origin,
        _word,
        _word,
        st.integers(0, 2**64 - 1),
        _word,
        st.sampled_from(["IP4", "IP6"]),
        st.just("IN"),
    ),
    session_name=_text,
    information=st.one_of(st.none(), _text),
    uri=st.one_of(st.none(), _text),
    emails=st.lists(_text, max_size=2).map(tuple),
    phones=st.lists(_text, max_size=2).map(tuple),
    connection=st.one_of(st.none(), _connection),
    bandwidths=st.lists(_bandwidth, max_size=2).map(tuple),
    timings=st.lists(
        st.builds(
            Timing,
            st.integers(0, 2**40),
            st.integers(0, 2**40),
            st.lists(_text, max_size=2).map(tuple),
        ),
        max_size=2,
    ).map(tuple),
    time_zones=st.one_of(st.none(), _text),
    encryption_key=st.one_of(st.none(), _text),
    attributes=_attributes,
    media=st.lists(_media(), max_size=4).map(tuple),
)


@FUZZ
@given(_session)
def test_generated_models_round_trip(sdp: SessionDescription) -> None:
    assert parse(str(sdp)) == sdp
    assert parse(bytes(sdp)) == sdp
    _exercise(sdp)
