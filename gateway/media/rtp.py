"""RTP packets (RFC 3550 §5.1) with header extensions (RFC 8285), and the
per-packet fast path a forwarding leg uses.

``RtpPacket`` is our own rather than ``aiortc.rtp.RtpPacket`` because a
gateway forwards packets it did not make and aiortc's class loses or
corrupts parts of them: it keeps only the header extensions named in a
configured map (with the default map every extension is dropped on parse, so
re-serializing removes them), ignores RFC 8285 two-byte "appbits" profiles
(0x1001-0x100F) and the ID 15 stop rule, fills padding with random bytes (so a
packet never serializes the same way twice), lets more than 15 CSRCs or a
payload type above 127 spill silently into the X and M bits, and raises
ValueError / struct.error / UnicodeDecodeError on bad input. Here the
extension block is kept as raw bytes (parsed only when asked), so forwarding
costs nothing for extensions nobody reads, and every malformed input raises
``RtpError``.

The fast path (``header_sizes`` and ``rewrite_header``) works on the 12-byte
fixed header with one precompiled ``struct`` call and never builds a packet
object: that is what a passthrough leg runs 50-100 times a second.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.errors import BadRequest

RTP_VERSION = 2
HEADER_SIZE = 12
ONE_BYTE_PROFILE = 0xBEDE
TWO_BYTE_PROFILE = 0x1000  # the low 4 bits are "appbits" (RFC 8285 §4.3)
MAX_CSRC = 15
_ONE_BYTE_STOP_ID = 15  # RFC 8285 §4.2: reserved, stops parsing of the block

_HEADER = struct.Struct("!BBHII")
_AFTER_FIRST_BYTE = struct.Struct("!BHII")  # marker/PT, seq, timestamp, SSRC
_EXTENSION_HEADER = struct.Struct("!HH")


class RtpError(BadRequest):
    """An RTP or RTCP packet is malformed, or cannot be built as asked.

    The only exception the RTP/RTCP parsers raise: a transport catches it,
    counts the packet and drops it.
    """


def is_rtcp(data: bytes | bytearray) -> bool:
    """Whether a datagram on a muxed RTP/RTCP port is RTCP (RFC 5761 §4).

    RTCP packet types 192-223 appear where RTP has marker + payload types
    64-95, which RFC 5761 forbids for RTP on a muxed port.
    """
    return len(data) >= 2 and 192 <= data[1] <= 223


@dataclass(frozen=True, slots=True)
class HeaderExtension:
    """One RFC 8285 header extension element: local ID and raw value."""

    id: int
    value: bytes


def parse_header_extensions(profile: int, data: bytes) -> list[HeaderExtension]:
    """The elements of an RFC 8285 extension block (one-byte or two-byte form).

    Padding bytes (ID 0) are skipped; in the one-byte form ID 15 ends the
    block (RFC 8285 §4.2). A profile that is not RFC 8285 (an RFC 3550
    application-specific extension) has no elements to give and raises.
    """
    elements: list[HeaderExtension] = []
    size = len(data)
    pos = 0
    if profile == ONE_BYTE_PROFILE:
        while pos < size:
            first = data[pos]
            ext_id = first >> 4
            if ext_id == 0:
                pos += 1
                continue
            if ext_id == _ONE_BYTE_STOP_ID:
                break
            end = pos + 1 + (first & 0x0F) + 1
            if end > size:
                raise RtpError(f"RTP one-byte extension element {ext_id} is truncated")
            elements.append(HeaderExtension(ext_id, bytes(data[pos + 1 : end])))
            pos = end
    elif profile & 0xFFF0 == TWO_BYTE_PROFILE:
        while pos < size:
            ext_id = data[pos]
            if ext_id == 0:
                pos += 1
                continue
            if pos + 2 > size:
                raise RtpError(f"RTP two-byte extension element {ext_id} is truncated")
            end = pos + 2 + data[pos + 1]
            if end > size:
                raise RtpError(f"RTP two-byte extension element {ext_id} is truncated")
            elements.append(HeaderExtension(ext_id, bytes(data[pos + 2 : end])))
            pos = end
    else:
        raise RtpError(f"RTP extension profile 0x{profile:04x} is not RFC 8285")
    return elements


def pack_header_extensions(
    elements: Sequence[HeaderExtension], *, two_byte: bool = False
) -> tuple[int, bytes]:
    """Profile and block for ``elements``, zero-padded to 32 bits.

    The one-byte form is used when every element allows it (ID 1-14, 1-16
    octets) unless ``two_byte`` asks otherwise (the peer negotiated
    extmap-allow-mixed and wants it).
    """
    one_byte = not two_byte and all(1 <= e.id <= 14 and 1 <= len(e.value) <= 16 for e in elements)
    block = bytearray()
    for element in elements:
        if one_byte:
            block.append((element.id << 4) | (len(element.value) - 1))
        elif 1 <= element.id <= 255 and len(element.value) <= 255:
            block += bytes((element.id, len(element.value)))
        else:
            raise RtpError(
                f"RTP extension element {element.id} with {len(element.value)} octets "
                "fits neither RFC 8285 form"
            )
        block += element.value
    block += bytes(-len(block) % 4)
    return (ONE_BYTE_PROFILE if one_byte else TWO_BYTE_PROFILE), bytes(block)


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet.

    ``extension_profile`` is None when the packet has no header extension;
    otherwise ``extension_data`` is the raw block (a multiple of 4 octets),
    kept as received so a forwarded packet loses nothing; read it through
    ``header_extensions``. ``padding`` counts the padding octets including the
    final count octet (0: no padding); we write zeros before the count, as
    RFC 3550 leaves their value open.
    """

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension_profile: int | None = None
    extension_data: bytes = b""
    padding: int = 0

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> RtpPacket:
        """Parse one RTP packet; anything malformed raises ``RtpError``."""
        data = bytes(data)
        header_size, payload_size = header_sizes(data)
        first, second, seq, timestamp, ssrc = _HEADER.unpack_from(data)
        count = first & 0x0F
        csrc = struct.unpack_from(f"!{count}I", data, HEADER_SIZE) if count else ()
        profile: int | None = None
        extension = b""
        if first & 0x10:
            pos = HEADER_SIZE + 4 * count
            profile = _EXTENSION_HEADER.unpack_from(data, pos)[0]
            extension = data[pos + 4 : header_size]
        return cls(
            payload_type=second & 0x7F,
            sequence_number=seq,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=data[header_size : header_size + payload_size],
            marker=bool(second & 0x80),
            csrc=tuple(csrc),
            extension_profile=profile,
            extension_data=extension,
            padding=len(data) - header_size - payload_size,
        )

    def __bytes__(self) -> bytes:
        """The packet on the wire; values out of range raise ``RtpError``."""
        if not 0 <= self.payload_type <= 127:
            raise RtpError(f"RTP payload type {self.payload_type} is out of range")
        if len(self.csrc) > MAX_CSRC:
            raise RtpError(f"RTP allows {MAX_CSRC} CSRCs, not {len(self.csrc)}")
        if not 0 <= self.padding <= 255:
            raise RtpError(f"RTP padding of {self.padding} octets is out of range")
        first = (RTP_VERSION << 6) | len(self.csrc)
        if self.padding:
            first |= 0x20
        if self.extension_profile is not None:
            first |= 0x10
        try:
            out = bytearray(
                _HEADER.pack(
                    first,
                    (0x80 if self.marker else 0) | self.payload_type,
                    self.sequence_number,
                    self.timestamp,
                    self.ssrc,
                )
            )
            if self.csrc:
                out += struct.pack(f"!{len(self.csrc)}I", *self.csrc)
            if self.extension_profile is not None:
                if len(self.extension_data) % 4:
                    raise RtpError("RTP extension block is not a multiple of 32 bits")
                out += _EXTENSION_HEADER.pack(self.extension_profile, len(self.extension_data) // 4)
                out += self.extension_data
        except struct.error as error:
            raise RtpError(f"RTP header field out of range: {error}") from None
        out += self.payload
        if self.padding:
            out += bytes(self.padding - 1)
            out.append(self.padding)
        return bytes(out)

    @property
    def header_extensions(self) -> list[HeaderExtension]:
        """The RFC 8285 elements of the extension block (empty without one)."""
        if self.extension_profile is None:
            return []
        return parse_header_extensions(self.extension_profile, self.extension_data)

    def set_header_extensions(
        self, elements: Sequence[HeaderExtension], *, two_byte: bool = False
    ) -> None:
        """Replace the extension block (no elements: no extension at all)."""
        if not elements:
            self.extension_profile, self.extension_data = None, b""
            return
        self.extension_profile, self.extension_data = pack_header_extensions(
            elements, two_byte=two_byte
        )


def header_sizes(data: bytes | bytearray) -> tuple[int, int]:
    """Sizes of the header (with CSRCs and extension) and of the payload
    (without padding) of an RTP packet, after checking that they fit.

    The cheap validity check for the fast path: it reads at most two words
    beyond the fixed header and raises ``RtpError`` if the packet is not RTP
    version 2 or its lengths do not add up (RFC 3550 A.1 header checks).
    """
    size = len(data)
    if size < HEADER_SIZE:
        raise RtpError(f"RTP packet of {size} octets is shorter than its header")
    first = data[0]
    if first >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {first >> 6} is not 2")
    header = HEADER_SIZE + 4 * (first & 0x0F)
    if first & 0x10:
        if header + 4 > size:
            raise RtpError("RTP extension header is truncated")
        header += 4 + 4 * ((data[header + 2] << 8) | data[header + 3])
    if header > size:
        raise RtpError("RTP header (CSRC list or extension) is longer than the packet")
    payload = size - header
    if first & 0x20:
        padding = data[-1]
        if padding == 0 or padding > payload:
            raise RtpError(f"RTP padding count {padding} does not fit the packet")
        payload -= padding
    return header, payload


def rewrite_header(
    data: bytes | bytearray,
    *,
    payload_type: int,
    sequence_number: int,
    timestamp: int,
    ssrc: int,
    marker: bool,
    strip_extension: bool = False,
) -> bytearray:
    """A copy of RTP packet ``data`` with new PT, marker, seq, timestamp and SSRC.

    Payload, CSRCs and padding are copied untouched; the header extension
    too, unless ``strip_extension`` (a leg that negotiated no extmap must not
    receive IDs whose meaning was agreed on another leg). ``data`` must have
    passed ``header_sizes``; values are masked to their field widths, since
    the caller computes them with modular arithmetic anyway.
    """
    if strip_extension and data[0] & 0x10:
        cut = HEADER_SIZE + 4 * (data[0] & 0x0F)
        end = cut + 4 + 4 * ((data[cut + 2] << 8) | data[cut + 3])
        out = bytearray(data[:cut])
        out += data[end:]
        out[0] &= 0xEF
    else:
        out = bytearray(data)
    _AFTER_FIRST_BYTE.pack_into(
        out,
        1,
        (0x80 if marker else 0) | (payload_type & 0x7F),
        sequence_number & 0xFFFF,
        timestamp & 0xFFFFFFFF,
        ssrc & 0xFFFFFFFF,
    )
    return out


class RtpWriter:
    """Numbers the packets of one locally made stream (a transcoder's or a
    player's output): fixed random SSRC, consecutive sequence numbers.

    The sending leg's RTP session rewrites SSRC, sequence and timestamp
    again, so this only has to be consistent within itself."""

    __slots__ = ("payload_type", "sequence", "ssrc")

    def __init__(self, payload_type: int, ssrc: int) -> None:
        self.payload_type = payload_type & 0x7F
        self.ssrc = ssrc & 0xFFFFFFFF
        self.sequence = 0

    def packet(self, payload: bytes, timestamp: int, marker: bool = False) -> bytearray:
        """The next packet carrying ``payload``."""
        self.sequence = (self.sequence + 1) & 0xFFFF
        out = bytearray(HEADER_SIZE + len(payload))
        _HEADER.pack_into(
            out,
            0,
            RTP_VERSION << 6,
            (0x80 if marker else 0) | self.payload_type,
            self.sequence,
            timestamp & 0xFFFFFFFF,
            self.ssrc,
        )
        out[HEADER_SIZE:] = payload
        return out
