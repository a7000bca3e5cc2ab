"""The direct path's RTP parser (aiortc_fastpath.parse_rtp) against aiortc's own.

Whatever bytes arrive after SRTP, both accept the same packets and agree on
every field the direct path reads, or both refuse with ValueError; except that
aiortc also refuses malformed elements inside a well-framed extension block,
which parse_rtp skips unread by design (nothing on the direct path reads them).
"""

from __future__ import annotations

import struct

from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.webrtc.aiortc_fastpath import parse_rtp

FIELDS = ("version", "marker", "payload_type", "sequence_number", "timestamp", "ssrc")


def _same(data: bytes) -> None:
    try:
        theirs = RtpPacket.parse(data, HeaderExtensionsMap())
    except ValueError:
        theirs = None
    try:
        ours = parse_rtp(data)
    except ValueError:
        ours = None
    if ours is not None and theirs is None:
        # Only the extension elements may be what aiortc refused: parse_rtp skips the
        # block by its length and never reads inside it. Blank them and aiortc agrees.
        assert data[0] & 0x10, data.hex()
        start = 12 + 4 * (data[0] & 0x0F)
        length = 4 * int.from_bytes(data[start + 2 : start + 4], "big")
        blank = data[: start + 4] + bytes(length) + data[start + 4 + length :]
        theirs = RtpPacket.parse(blank, HeaderExtensionsMap())
    assert (ours is None) == (theirs is None), data.hex()
    if ours is not None and theirs is not None:
        for name in FIELDS:
            assert getattr(ours, name) == getattr(theirs, name), name
        assert ours.payload == theirs.payload
        assert ours.padding_size == theirs.padding_size


@st.composite
def rtp_like(draw: st.DrawFn) -> bytes:
    """Mostly well-formed headers (CSRCs, an extension block, padding), then damaged."""
    csrc = draw(st.integers(0, 15))
    extension = draw(st.booleans())
    padding = draw(st.booleans())
    first = (draw(st.sampled_from([2, 2, 2, 1, 3])) << 6) | (padding << 5) | (extension << 4)
    data = struct.pack("!BBHII", first | csrc, draw(st.integers(0, 255)), 1, 2, 3)
    data += draw(st.binary(min_size=0, max_size=4 * csrc + 4))
    if extension:
        data += struct.pack("!HH", 0xBEDE, draw(st.integers(0, 4)))
        data += draw(st.binary(max_size=20))
    data += draw(st.binary(max_size=40))
    if padding:
        data += bytes([draw(st.integers(0, 60))])
    cut = draw(st.integers(0, len(data)))
    return data[:cut] if draw(st.booleans()) else data


@settings(max_examples=400, deadline=None)
@given(rtp_like())
def test_parse_rtp_agrees_with_aiortc(data: bytes) -> None:
    _same(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_parse_rtp_agrees_with_aiortc_on_any_bytes(data: bytes) -> None:
    _same(data)


def test_a_browser_packet_with_extensions() -> None:
    packet = RtpPacket(payload_type=111, marker=1, sequence_number=7, timestamp=960, ssrc=42)
    packet.extensions.mid = "0"
    packet.extensions.abs_send_time = 123456
    packet.payload = b"opus"
    extensions_map = HeaderExtensionsMap()
    extensions_map.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
                RTCRtpHeaderExtensionParameters(
                    id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
                ),
            ]
        )
    )
    data = packet.serialize(extensions_map)
    assert data[0] & 0x10  # an extension block to skip
    _same(data)
    assert parse_rtp(data).payload == b"opus"
