"""RTCP packets (RFC 3550 §6, RFC 4585, RFC 5104, REMB) and the RFC 3550
A.7 report interval.

Reused from aiortc, because they are right once their input has the right
length: sender and receiver reports (``RtcpSrPacket``, ``RtcpRrPacket`` with
``RtcpSenderInfo`` / ``RtcpReceiverInfo`` blocks), BYE (``RtcpByePacket``),
payload-specific feedback such as PLI (``RtcpPsfbPacket``) and the REMB FCI
helpers. They are re-exported here under plain names.

Our own, and why:
- ``parse_rtcp``: aiortc's compound parser raises ValueError / struct.error,
  rejects an SR or RR that carries a profile-specific extension (RFC 3550
  §6.4.1 allows one) and reads every RTPFB format as a NACK, so a
  transport-wide congestion control packet (fmt 15) becomes a list of
  phantom losses. Ours checks every length first and raises only ``RtpError``.
- ``SdesPacket``: aiortc does not start each chunk on a 32-bit boundary when
  writing, and reads the null octet that ends a chunk as an item header, so
  an RFC-aligned SDES with two chunks fails to parse.
- ``NackPacket``: aiortc's NACK gives sequence numbers above 65535 after a
  wrap-around and cannot serialize a loss list that crosses it.
- ``FirPacket``: aiortc has no FIR (RFC 5104 §4.3.1) beyond raw FCI bytes.
- ``RembPacket``: a typed REMB; aiortc leaves it as raw FCI.

Every ``__bytes__`` yields one complete RTCP packet; ``parse(body, count)``
takes what follows the 4-octet common header, with the header's 5-bit count
(or feedback format) field — the convention of aiortc's classes, so both kinds
sit in one list.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiortc.rtp import (
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    pack_remb_fci,
    unpack_remb_fci,
)

from gateway.media.rtp import RTP_VERSION, RtpError

__all__ = [
    "FirEntry",
    "FirPacket",
    "Goodbye",
    "NackPacket",
    "PayloadFeedback",
    "ReceiverReport",
    "RembPacket",
    "ReportBlock",
    "RtcpByePacket",
    "RtcpPacket",
    "RtcpPsfbPacket",
    "RtcpReceiverInfo",
    "RtcpRrPacket",
    "RtcpSenderInfo",
    "RtcpSrPacket",
    "SdesChunk",
    "SdesPacket",
    "SenderInfo",
    "SenderReport",
    "ntp_middle",
    "ntp_timestamp",
    "parse_rtcp",
    "picture_loss",
    "rtcp_interval",
    "serialize_rtcp",
]

# Plain names for the aiortc classes we reuse as they are.
SenderReport = RtcpSrPacket
ReceiverReport = RtcpRrPacket
SenderInfo = RtcpSenderInfo
ReportBlock = RtcpReceiverInfo
Goodbye = RtcpByePacket
PayloadFeedback = RtcpPsfbPacket

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_RTPFB = 205
RTCP_PSFB = 206
RTPFB_NACK = 1
PSFB_PLI = 1
PSFB_FIR = 4
PSFB_AFB = 15  # application layer feedback; REMB lives here
SDES_CNAME = 1
MAX_COUNT = 31  # the 5-bit count field

_COMMON_HEADER = struct.Struct("!BBH")
_TWO_SSRC = struct.Struct("!II")
_NACK_ITEM = struct.Struct("!HH")
_FIR_ITEM = struct.Struct("!IB3x")
_SSRC = struct.Struct("!I")
_NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01


def _header(packet_type: int, count: int, body: bytes) -> bytes:
    if count > MAX_COUNT:
        raise RtpError(f"RTCP count {count} does not fit 5 bits")
    return _COMMON_HEADER.pack((RTP_VERSION << 6) | count, packet_type, len(body) // 4) + body


@dataclass
class SdesChunk:
    """The SDES items of one source, as (type, value) pairs."""

    ssrc: int
    items: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def cname(self) -> bytes | None:
        """The CNAME item, if the chunk has one."""
        return next((value for kind, value in self.items if kind == SDES_CNAME), None)


@dataclass
class SdesPacket:
    """Source description (RFC 3550 §6.5); each chunk 32-bit aligned."""

    chunks: list[SdesChunk] = field(default_factory=list)

    def __bytes__(self) -> bytes:
        body = bytearray()
        for chunk in self.chunks:
            body += _SSRC.pack(chunk.ssrc)
            for kind, value in chunk.items:
                if not 1 <= kind <= 255 or len(value) > 255:
                    raise RtpError(f"SDES item {kind} of {len(value)} octets is out of range")
                body += bytes((kind, len(value)))
                body += value
            # At least one null octet ends the item list, more pad to 32 bits.
            body += bytes(4 - len(body) % 4)
        return _header(RTCP_SDES, len(self.chunks), bytes(body))

    @classmethod
    def parse(cls, body: bytes, count: int) -> SdesPacket:
        """Chunks of an SDES body; a chunk cut short by the end of the body
        keeps the items it had (some stacks omit the final null octet)."""
        chunks: list[SdesChunk] = []
        pos, size = 0, len(body)
        for _ in range(count):
            if pos + 4 > size:
                raise RtpError("RTCP SDES chunk is truncated")
            chunk = SdesChunk(_SSRC.unpack_from(body, pos)[0])
            pos += 4
            while pos < size:
                kind = body[pos]
                if kind == 0:
                    pos = (pos + 4) & ~3  # the null octet, then padding to 32 bits
                    break
                if pos + 2 > size or pos + 2 + body[pos + 1] > size:
                    raise RtpError(f"RTCP SDES item {kind} is truncated")
                end = pos + 2 + body[pos + 1]
                chunk.items.append((kind, body[pos + 2 : end]))
                pos = end
            chunks.append(chunk)
        return cls(chunks)


@dataclass
class NackPacket:
    """Generic NACK (RFC 4585 §6.2.1): sequence numbers the receiver lost."""

    ssrc: int
    media_ssrc: int
    lost: list[int] = field(default_factory=list)

    def __bytes__(self) -> bytes:
        body = bytearray(_TWO_SSRC.pack(self.ssrc, self.media_ssrc))
        pid: int | None = None
        blp = 0
        for seq in self.lost:
            distance = (seq - pid) & 0xFFFF if pid is not None else 0
            if pid is not None and 1 <= distance <= 16:
                blp |= 1 << (distance - 1)
                continue
            if pid is not None:
                body += _NACK_ITEM.pack(pid, blp)
            pid, blp = seq & 0xFFFF, 0
        if pid is not None:
            body += _NACK_ITEM.pack(pid, blp)
        return _header(RTCP_RTPFB, RTPFB_NACK, bytes(body))

    @classmethod
    def parse(cls, body: bytes, count: int) -> NackPacket:
        """The loss list of a NACK body (``count`` is the feedback format)."""
        if len(body) < 8:
            raise RtpError("RTCP NACK is shorter than its two SSRCs")
        ssrc, media_ssrc = _TWO_SSRC.unpack_from(body)
        lost: list[int] = []
        for pos in range(8, len(body) - 3, 4):
            pid, blp = _NACK_ITEM.unpack_from(body, pos)
            lost.append(pid)
            lost.extend((pid + bit + 1) & 0xFFFF for bit in range(16) if blp >> bit & 1)
        return cls(ssrc, media_ssrc, lost)


@dataclass
class FirEntry:
    """One FIR request: the media sender asked, and the request's number."""

    ssrc: int
    sequence_number: int


@dataclass
class FirPacket:
    """Full intra request (RFC 5104 §4.3.1).

    The media source SSRC of the common feedback header is 0 on the wire:
    the targets are in the entries.
    """

    ssrc: int
    entries: list[FirEntry] = field(default_factory=list)

    def __bytes__(self) -> bytes:
        body = _TWO_SSRC.pack(self.ssrc, 0) + b"".join(
            _FIR_ITEM.pack(e.ssrc, e.sequence_number) for e in self.entries
        )
        return _header(RTCP_PSFB, PSFB_FIR, body)

    @classmethod
    def parse(cls, body: bytes, count: int) -> FirPacket:
        """The entries of a FIR body (``count`` is the feedback format)."""
        if len(body) < 8:
            raise RtpError("RTCP FIR is shorter than its two SSRCs")
        entries = [
            FirEntry(*_FIR_ITEM.unpack_from(body, pos)) for pos in range(8, len(body) - 7, 8)
        ]
        return cls(_SSRC.unpack_from(body)[0], entries)


@dataclass
class RembPacket:
    """Receiver estimated maximum bitrate (draft-alvestrand-rmcat-remb).

    ``bitrate`` is in bit/s; the wire keeps an 18-bit mantissa, so large
    values lose their low bits.
    """

    ssrc: int
    bitrate: int
    ssrcs: list[int] = field(default_factory=list)

    def __bytes__(self) -> bytes:
        if len(self.ssrcs) > 255 or self.bitrate < 0:
            raise RtpError("REMB takes at most 255 SSRCs and a positive bitrate")
        body = _TWO_SSRC.pack(self.ssrc, 0) + pack_remb_fci(self.bitrate, self.ssrcs)
        return _header(RTCP_PSFB, PSFB_AFB, body)

    @classmethod
    def parse(cls, body: bytes, count: int) -> RembPacket:
        """A REMB body; its SSRC list must be complete."""
        if len(body) < 16 or body[8:12] != b"REMB" or len(body) < 16 + 4 * body[12]:
            raise RtpError("RTCP REMB is truncated")
        bitrate, ssrcs = unpack_remb_fci(body[8:])
        return cls(_SSRC.unpack_from(body)[0], bitrate, ssrcs)


RtcpPacket = (
    RtcpSrPacket
    | RtcpRrPacket
    | SdesPacket
    | RtcpByePacket
    | NackPacket
    | RtcpPsfbPacket
    | FirPacket
    | RembPacket
)


def parse_rtcp(data: bytes | bytearray | memoryview) -> list[RtcpPacket]:
    """The packets of a compound (or reduced-size, RFC 5506) RTCP datagram.

    Types and feedback formats we have no use for (APP, XR, transport-cc...)
    are skipped after their framing is checked, as RFC 3550 §6.1 asks.
    """
    data = bytes(data)
    size = len(data)
    if size < 4:
        raise RtpError(f"RTCP datagram of {size} octets is shorter than a header")
    packets: list[RtcpPacket] = []
    pos = 0
    while pos < size:
        if pos + 4 > size:
            raise RtpError("RTCP packet header is truncated")
        first, packet_type, length = _COMMON_HEADER.unpack_from(data, pos)
        if first >> 6 != RTP_VERSION:
            raise RtpError(f"RTCP version {first >> 6} is not 2")
        end = pos + 4 + 4 * length
        if end > size:
            raise RtpError(f"RTCP packet type {packet_type} is longer than the datagram")
        body = data[pos + 4 : end]
        if first & 0x20:
            if not body or not 1 <= body[-1] <= len(body):
                raise RtpError("RTCP padding count does not fit the packet")
            body = body[: -body[-1]]
        packet = _parse_one(packet_type, first & 0x1F, body)
        if packet is not None:
            packets.append(packet)
        pos = end
    return packets


def _parse_one(packet_type: int, count: int, body: bytes) -> RtcpPacket | None:
    if packet_type in (RTCP_SR, RTCP_RR):
        fixed = 24 if packet_type == RTCP_SR else 4
        need = fixed + 24 * count
        if len(body) < need:
            raise RtpError(f"RTCP report with {count} blocks is truncated")
        # A profile-specific extension may follow the blocks; we have no use for it.
        if packet_type == RTCP_SR:
            return RtcpSrPacket.parse(body[:need], count)
        return RtcpRrPacket.parse(body[:need], count)
    if packet_type == RTCP_SDES:
        return SdesPacket.parse(body, count)
    if packet_type == RTCP_BYE:
        if len(body) < 4 * count:
            raise RtpError(f"RTCP BYE with {count} sources is truncated")
        return RtcpByePacket.parse(body, count)  # the optional reason is ignored
    if packet_type == RTCP_RTPFB:
        return NackPacket.parse(body, count) if count == RTPFB_NACK else None
    if packet_type == RTCP_PSFB:
        if count == PSFB_FIR:
            return FirPacket.parse(body, count)
        if count == PSFB_AFB and body[8:12] == b"REMB":
            return RembPacket.parse(body, count)
        if len(body) < 8:
            raise RtpError("RTCP payload-specific feedback is shorter than its two SSRCs")
        return RtcpPsfbPacket.parse(body, count)
    return None


def serialize_rtcp(packets: Iterable[RtcpPacket]) -> bytes:
    """One compound datagram; a value that does not fit raises ``RtpError``."""
    out = bytearray()
    for packet in packets:
        if isinstance(packet, RtcpSrPacket | RtcpRrPacket) and len(packet.reports) > MAX_COUNT:
            raise RtpError(f"an RTCP report carries at most {MAX_COUNT} blocks")
        try:
            out += bytes(packet)
        except (struct.error, ValueError, OverflowError) as error:
            raise RtpError(f"RTCP field out of range: {error}") from None
    return bytes(out)


def picture_loss(ssrc: int, media_ssrc: int) -> RtcpPsfbPacket:
    """A PLI (RFC 4585 §6.3.1) from ``ssrc`` asking ``media_ssrc`` for a keyframe."""
    return RtcpPsfbPacket(fmt=PSFB_PLI, ssrc=ssrc, media_ssrc=media_ssrc)


def ntp_timestamp(wall: float) -> int:
    """64-bit NTP timestamp (RFC 3550 §4) for a Unix wall-clock time."""
    return int((wall + _NTP_EPOCH_OFFSET) * 65536.0 * 65536.0) & 0xFFFF_FFFF_FFFF_FFFF


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp: the LSR field of a report block."""
    return (ntp >> 16) & 0xFFFF_FFFF


RTCP_MIN_INTERVAL = 5.0  # seconds, RFC 3550 §6.2
_COMPENSATION = math.e - 1.5  # RFC 3550 A.7: makes up for timer reconsideration's bias


def rtcp_interval(
    *,
    members: int,
    senders: int,
    rtcp_bandwidth: float,
    we_sent: bool,
    avg_rtcp_size: float,
    initial: bool,
    reduced_minimum: float | None,
    random: float,
) -> float:
    """The randomized RTCP report interval of RFC 3550 A.7, in seconds.

    ``rtcp_bandwidth`` is in octets/s (5% of the session bandwidth),
    ``avg_rtcp_size`` in octets with UDP/IP overhead, ``random`` uniform in
    [0, 1). ``reduced_minimum`` (RFC 3550 §6.2: 360 / session kbit/s) replaces
    the 5 s minimum, which is otherwise halved before the first report.
    Timer reconsideration (A.7's forward/reverse steps on member changes) is
    not done: a gateway leg has two members and a stable sender set.
    """
    minimum = RTCP_MIN_INTERVAL
    if reduced_minimum is not None:
        minimum = reduced_minimum
    elif initial:
        minimum /= 2
    n = members
    # Senders get a quarter of the RTCP bandwidth when they are few.
    if senders <= members * 0.25:
        if we_sent:
            rtcp_bandwidth *= 0.25
            n = senders
        else:
            rtcp_bandwidth *= 0.75
            n -= senders
    deterministic = max(avg_rtcp_size * n / rtcp_bandwidth, minimum)
    return deterministic * (random + 0.5) / _COMPENSATION
