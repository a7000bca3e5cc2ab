"""One RTP stream of a leg, sans-IO: receive statistics, the send-side
rewrite, RTCP reports and feedback, and the inactivity timeout.

Fed datagrams and ``now`` (the injected clock's monotonic time), it returns
the datagrams to send and queues events; a transport owns the socket and arms
one timer at ``next_deadline()`` (the aioquic pattern). The send side is the
passthrough fast path: it rewrites the 12-byte header in place of building a
packet object, because a leg forwards 50-100 packets a second and a node runs
hundreds of legs per core.

The router forwards only packets ``receive_rtp`` found valid, so ``send_rtp``
sees no more than A.1 lets through. RTCP timing is RFC 3550 A.7 without timer
reconsideration (members are the remote sources plus us, senders those of
them heard validly plus us while we send), which is what a two-party leg
needs; RTP and RTCP each count toward a source's liveness (§6.3.5).
"""

from __future__ import annotations

import random
import struct
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from gateway.clock import Clock
from gateway.media.rtcp import (
    PSFB_PLI,
    RTCP_MIN_INTERVAL,
    SDES_CNAME,
    FirEntry,
    FirPacket,
    NackPacket,
    RembPacket,
    RtcpByePacket,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    SdesChunk,
    SdesPacket,
    ntp_middle,
    ntp_timestamp,
    parse_rtcp,
    picture_loss,
    rtcp_interval,
    serialize_rtcp,
)
from gateway.media.rtp import header_sizes, rewrite_header
from gateway.media.rtp_source import MAX_DROPOUT, MAX_MISORDER, RTP_SEQ_MOD, RtpSource
from gateway.metrics import RTP_LOST, RTP_PACKETS

_PACKETS_IN = RTP_PACKETS.labels(direction="in")
_PACKETS_OUT = RTP_PACKETS.labels(direction="out")
_HEADER = struct.Struct("!BBHII")
_UDP_IP_OVERHEAD = 28  # RFC 3550 §6.2: RTCP sizes include lower-layer headers
_MAX_REPORT_BLOCKS = 31
_SOURCE_TIMEOUT_INTERVALS = 5


@dataclass(frozen=True, slots=True)
class RtpSessionConfig:
    """What signaling decided for one stream of one leg.

    ``payload_map`` maps payload types arriving from the router to the ones
    negotiated on this leg (None: unchanged). ``session_bandwidth`` (bit/s,
    the SDP b=AS or a codec default) sets the RTCP share: 5% of it.
    ``inactivity_timeout`` (seconds, None: never) is how long the remote side
    may send no RTP before ``RtpTimeout``. ``strip_extensions`` drops RTP
    header extensions when forwarding: their IDs were agreed on the other
    leg and mean nothing (or something else) to this peer.
    """

    clock_rate: int
    cname: str
    kind: Literal["audio", "video"] = "audio"
    payload_map: Mapping[int, int] | None = None
    session_bandwidth: int = 64_000
    reduced_minimum: bool = False
    inactivity_timeout: float | None = 30.0
    strip_extensions: bool = True
    max_sources: int = 8

    def __post_init__(self) -> None:
        if self.clock_rate <= 0 or self.session_bandwidth <= 0 or self.max_sources <= 0:
            raise ValueError("clock rate, session bandwidth and max sources must be positive")
        if self.inactivity_timeout is not None and self.inactivity_timeout <= 0:
            raise ValueError("inactivity timeout must be positive or None")


# --- events for the media router ------------------------------------------------
@dataclass(frozen=True, slots=True)
class RtpTimeout:
    """No RTP from the peer for ``inactivity_timeout`` seconds: it is gone."""

    last_packet_at: float


@dataclass(frozen=True, slots=True)
class KeyframeRequested:
    """The peer asked for a keyframe of our stream (PLI or FIR)."""

    method: Literal["pli", "fir"]
    sender_ssrc: int


@dataclass(frozen=True, slots=True)
class NackReceived:
    """The peer lost packets of our stream.

    ``lost`` are our sequence numbers; ``upstream_lost`` the same packets in
    the numbering of ``upstream_ssrc`` (the source we forward now), for those
    sent since the last source switch — what the router asks that source for.
    """

    lost: tuple[int, ...]
    upstream_ssrc: int | None
    upstream_lost: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class BitrateEstimated:
    """The peer's receiver estimated maximum bitrate (REMB), in bit/s."""

    bitrate: int
    ssrcs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SourceLeft:
    """A remote source said BYE."""

    ssrc: int


RtpEvent = RtpTimeout | KeyframeRequested | NackReceived | BitrateEstimated | SourceLeft


@dataclass(slots=True)
class RemoteReport:
    """What the peer last reported about our stream (RFC 3550 §6.4)."""

    fraction_lost: int = 0
    packets_lost: int = 0
    jitter: int = 0
    round_trip_time: float | None = None  # seconds, from LSR/DLSR
    received_at: float | None = None


@dataclass(slots=True)
class SendCounters:
    """Sender statistics for SRs (RFC 3550 §6.4.1): payload octets only."""

    packets: int = 0
    octets: int = 0
    dropped_payload_type: int = 0  # arrived with a PT this leg did not negotiate


@dataclass(slots=True)
class _SendState:
    upstream_ssrc: int | None = None
    seq_offset: int = 0
    ts_offset: int = 0
    last_in_seq: int = 0
    last_out_seq: int = 0
    last_out_ts: int = 0
    last_sent_at: float | None = None
    segment_start: int = 0  # our first sequence number since the last switch
    switch_pending: bool = False
    counters: SendCounters = field(default_factory=SendCounters)


class RtpSession:
    """The RTP/RTCP state of one stream (one SSRC of ours) on one leg.

    ``clock`` is read once, to tie the monotonic ``now`` values every method
    takes to NTP wall-clock time for sender reports; ``rng`` draws our SSRC,
    initial sequence number and timestamp, and the RTCP interval jitter.
    """

    def __init__(self, config: RtpSessionConfig, *, clock: Clock, rng: random.Random) -> None:
        self.config = config
        self._rng = rng
        now = clock.monotonic()
        self._wall_offset = clock.time() - now
        self.ssrc = rng.getrandbits(32)
        self._payload_map = dict(config.payload_map) if config.payload_map is not None else None
        self._sources: dict[int, RtpSource] = {}
        self._events: deque[RtpEvent] = deque()
        self._outbox: list[bytes] = []
        self.remote = RemoteReport()
        self._send = _SendState()
        # RFC 3550 §5.1: the first sequence number and timestamp are random.
        self._send.last_out_seq = (rng.getrandbits(16) - 1) & 0xFFFF
        self._send.last_out_ts = rng.getrandbits(32)
        self._receiving = config.inactivity_timeout is not None
        self._last_rtp_at = now
        self._timed_out = False
        self._fir_seen: dict[int, int] = {}  # sender SSRC -> last FIR sequence number
        self._fir_seq = 0
        self._unflushed_in = 0
        self._unflushed_out = 0
        # RTCP scheduling state (RFC 3550 A.7).
        self._avg_rtcp_size = 100.0
        self._sent_since_report = False
        self._sent_in_previous = False
        self._initial = True
        self._last_interval = RTCP_MIN_INTERVAL
        self._next_rtcp = now + self._interval()

    # --- receive ----------------------------------------------------------------
    def receive_rtp(self, data: bytes | bytearray, now: float) -> bool:
        """Account for an RTP packet from the peer; True if it is valid and
        may be forwarded (RFC 3550 A.1). Malformed input raises ``RtpError``."""
        header_sizes(data)
        _, _, seq, timestamp, ssrc = _HEADER.unpack_from(data)
        self._last_rtp_at = now
        self._timed_out = False
        self._unflushed_in += 1
        source = self._sources.get(ssrc)
        if source is None:
            if ssrc == self.ssrc:
                self._resolve_collision(now)
            source = self._add_source(ssrc, seq, now)
        return source.update(seq, timestamp, now)

    def _add_source(self, ssrc: int, seq: int, now: float) -> RtpSource:
        if len(self._sources) >= self.config.max_sources:
            # A peer spraying SSRCs must not grow our memory: forget the quietest.
            quietest = min(self._sources.values(), key=lambda s: s.last_heard)
            del self._sources[quietest.ssrc]
        source = RtpSource(ssrc, seq, self.config.clock_rate, now)
        self._sources[ssrc] = source
        return source

    def _resolve_collision(self, now: float) -> None:
        # RFC 3550 §8.2: the peer uses our SSRC; leave with BYE, take another.
        old = self.ssrc
        self._outbox.append(self._compound(now, [RtcpByePacket(sources=[old])]))
        while self.ssrc == old:
            self.ssrc = self._rng.getrandbits(32)

    @property
    def sources(self) -> Mapping[int, RtpSource]:
        """The remote sources heard, by SSRC (read-only view)."""
        return self._sources

    def set_receiving(self, receiving: bool, now: float) -> None:
        """Arm or disarm the inactivity timeout: off while the peer holds the
        call (sendonly/inactive), re-armed from ``now`` when it resumes."""
        self._receiving = receiving and self.config.inactivity_timeout is not None
        self._last_rtp_at = now
        self._timed_out = False

    # --- send -------------------------------------------------------------------
    def send_rtp(self, data: bytes | bytearray, now: float) -> bytearray | None:
        """Our packet for an RTP packet the router hands us, or None if its
        payload type was not negotiated on this leg.

        Sequence numbers and timestamps stay continuous across a change of
        source (new SSRC upstream, a jump in its numbering, or
        ``switch_source``): the offset is recomputed so the first packet of
        the new source follows our last one, its timestamp advanced by the
        wall-clock time elapsed. Audio marks that packet (a new talkspurt,
        RFC 3551 §4.1); video does not, since the marker ends a frame there.
        """
        _, payload = header_sizes(data)
        _, second, seq, timestamp, ssrc = _HEADER.unpack_from(data)
        payload_type = second & 0x7F
        state = self._send
        if self._payload_map is not None:
            mapped = self._payload_map.get(payload_type)
            if mapped is None:
                state.counters.dropped_payload_type += 1
                return None
            payload_type = mapped
        marker = bool(second & 0x80)
        delta = (seq - state.last_in_seq) & 0xFFFF
        if (
            ssrc != state.upstream_ssrc
            or state.switch_pending
            or MAX_DROPOUT <= delta <= RTP_SEQ_MOD - MAX_MISORDER
        ):
            self._anchor(ssrc, seq, timestamp, now)
            marker = marker or self.config.kind == "audio"
            delta = 0
        out_seq = (seq + state.seq_offset) & 0xFFFF
        out_ts = (timestamp + state.ts_offset) & 0xFFFFFFFF
        if delta < MAX_DROPOUT:  # newest so far (not a late packet): the reference
            state.last_in_seq = seq
            state.last_out_seq = out_seq
            state.last_out_ts = out_ts
            state.last_sent_at = now
        state.counters.packets += 1
        state.counters.octets += payload
        self._sent_since_report = True
        self._unflushed_out += 1
        return rewrite_header(
            data,
            payload_type=payload_type,
            sequence_number=out_seq,
            timestamp=out_ts,
            ssrc=self.ssrc,
            marker=marker,
            strip_extension=self.config.strip_extensions,
        )

    def _anchor(self, ssrc: int, seq: int, timestamp: int, now: float) -> None:
        state = self._send
        next_seq = (state.last_out_seq + 1) & 0xFFFF
        next_ts = state.last_out_ts
        if state.last_sent_at is not None:
            # At least one tick, so no two sources share a timestamp.
            elapsed = round((now - state.last_sent_at) * self.config.clock_rate)
            next_ts += max(1, elapsed)
        state.seq_offset = (next_seq - seq) & 0xFFFF
        state.ts_offset = (next_ts - timestamp) & 0xFFFFFFFF
        state.upstream_ssrc = ssrc
        state.last_in_seq = (seq - 1) & 0xFFFF
        state.segment_start = next_seq
        state.switch_pending = False

    def switch_source(self) -> None:
        """The next packet starts a new source even if its SSRC is the same
        (e.g. passthrough to transcoded with a reused SSRC)."""
        self._send.switch_pending = True

    def set_payload_map(self, payload_map: Mapping[int, int] | None) -> None:
        """New payload type mapping after a renegotiation."""
        self._payload_map = dict(payload_map) if payload_map is not None else None

    @property
    def send_counters(self) -> SendCounters:
        """Packets and payload octets sent, as SRs report them."""
        return self._send.counters

    def upstream_sequence(self, seq: int) -> int | None:
        """The upstream sequence number of our packet ``seq``, if it was sent
        since the last source switch."""
        state = self._send
        if state.last_sent_at is None:
            return None
        sent = (state.last_out_seq - state.segment_start) & 0xFFFF
        if (seq - state.segment_start) & 0xFFFF > sent:
            return None
        return (seq - state.seq_offset) & 0xFFFF

    # --- RTCP in ----------------------------------------------------------------
    def handle_rtcp(self, data: bytes | bytearray, now: float) -> None:
        """Take in an RTCP datagram from the peer; malformed raises ``RtpError``."""
        packets = parse_rtcp(data)
        self._avg_rtcp_size += (len(data) + _UDP_IP_OVERHEAD - self._avg_rtcp_size) / 16
        for packet in packets:
            self._handle_packet(packet, now)

    def _handle_packet(self, packet: RtcpPacket, now: float) -> None:
        if isinstance(packet, RtcpSrPacket | RtcpRrPacket):
            source = self._sources.get(packet.ssrc)
            if source is not None:
                source.last_heard = now  # RTCP keeps a source alive (RFC 3550 §6.3.5)
                if isinstance(packet, RtcpSrPacket):
                    source.last_sr = ntp_middle(packet.sender_info.ntp_timestamp)
                    source.last_sr_at = now
            for block in packet.reports:
                if block.ssrc == self.ssrc:
                    self._take_report(block, now)
        elif isinstance(packet, RtcpByePacket):
            for ssrc in packet.sources:
                if self._sources.pop(ssrc, None) is not None:
                    self._events.append(SourceLeft(ssrc))
        elif isinstance(packet, NackPacket):
            if packet.media_ssrc == self.ssrc and packet.lost:
                self._events.append(self._nack_event(packet.lost))
        elif isinstance(packet, FirPacket):
            for entry in packet.entries:
                # RFC 5104 §4.3.1.1: a repeated sequence number is a retransmission.
                if entry.ssrc == self.ssrc and self._fir_seen.get(packet.ssrc) != (
                    entry.sequence_number
                ):
                    self._fir_seen[packet.ssrc] = entry.sequence_number
                    self._events.append(KeyframeRequested("fir", packet.ssrc))
        elif isinstance(packet, RembPacket):
            self._events.append(BitrateEstimated(packet.bitrate, tuple(packet.ssrcs)))
        elif (
            isinstance(packet, RtcpPsfbPacket)
            and packet.fmt == PSFB_PLI
            and packet.media_ssrc == self.ssrc
        ):
            self._events.append(KeyframeRequested("pli", packet.ssrc))

    def _take_report(self, block: RtcpReceiverInfo, now: float) -> None:
        remote = self.remote
        remote.fraction_lost = block.fraction_lost
        remote.packets_lost = block.packets_lost
        remote.jitter = block.jitter
        remote.received_at = now
        if block.lsr:
            # RFC 3550 §6.4.1: RTT = arrival - LSR - DLSR, in 1/65536 s.
            arrival = ntp_middle(ntp_timestamp(now + self._wall_offset))
            rtt = (arrival - block.lsr - block.dlsr) & 0xFFFFFFFF
            if rtt < 0x80000000:  # otherwise the peer's figures are inconsistent
                remote.round_trip_time = rtt / 65536

    def _nack_event(self, lost: list[int]) -> NackReceived:
        upstream = [self.upstream_sequence(seq) for seq in lost]
        return NackReceived(
            lost=tuple(lost),
            upstream_ssrc=self._send.upstream_ssrc,
            upstream_lost=tuple(seq for seq in upstream if seq is not None),
        )

    # --- RTCP out ---------------------------------------------------------------
    def next_rtcp_deadline(self) -> float:
        """When the next regular RTCP report is due (monotonic seconds)."""
        return self._next_rtcp

    def next_deadline(self) -> float:
        """When ``handle_timer`` must run next: the RTCP report or the timeout."""
        deadline = self._next_rtcp
        timeout = self.config.inactivity_timeout
        if self._receiving and not self._timed_out and timeout is not None:
            deadline = min(deadline, self._last_rtp_at + timeout)
        return deadline

    def handle_timer(self, now: float) -> None:
        """Run what is due: the inactivity check, forgetting silent sources
        and the RTCP report."""
        timeout = self.config.inactivity_timeout
        if (
            self._receiving
            and not self._timed_out
            and timeout is not None
            and now >= self._last_rtp_at + timeout
        ):
            self._timed_out = True
            self._events.append(RtpTimeout(self._last_rtp_at))
        # RFC 3550 §6.3.5: a source silent for five report intervals is gone.
        horizon = now - _SOURCE_TIMEOUT_INTERVALS * max(RTCP_MIN_INTERVAL, self._last_interval)
        for ssrc in [s.ssrc for s in self._sources.values() if s.last_heard < horizon]:
            del self._sources[ssrc]
        if now >= self._next_rtcp:
            self._outbox.append(self._compound(now, []))
            self._sent_in_previous = self._sent_since_report
            self._sent_since_report = False
            self._initial = False
            self._next_rtcp = now + self._interval()
        self._flush_metrics()

    def request_keyframe(self, now: float, *, fir: bool = False) -> None:
        """Ask every valid remote source for a keyframe (PLI, or FIR for peers
        that only understand RFC 5104); the datagram goes to ``rtcp_to_send``."""
        sources = [s.ssrc for s in self._sources.values() if s.valid]
        if not sources:
            return
        feedback: list[RtcpPacket]
        if fir:
            self._fir_seq = (self._fir_seq + 1) & 0xFF
            feedback = [FirPacket(self.ssrc, [FirEntry(s, self._fir_seq) for s in sources])]
        else:
            feedback = [picture_loss(self.ssrc, s) for s in sources]
        self._outbox.append(self._compound(now, feedback))

    def request_retransmission(self, media_ssrc: int, lost: list[int], now: float) -> None:
        """Send a generic NACK for ``lost`` sequence numbers of ``media_ssrc``."""
        self._outbox.append(self._compound(now, [NackPacket(self.ssrc, media_ssrc, lost)]))

    def close(self, now: float) -> None:
        """Leave the session: a final report with BYE goes to ``rtcp_to_send``."""
        self._outbox.append(self._compound(now, [RtcpByePacket(sources=[self.ssrc])]))
        self._flush_metrics()

    def rtcp_to_send(self) -> list[bytes]:
        """RTCP datagrams built since the last call, oldest first."""
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> RtpEvent | None:
        """The next event for the media router, or None."""
        return self._events.popleft() if self._events else None

    def _compound(self, now: float, extra: list[RtcpPacket]) -> bytes:
        # RFC 3550 §6.1: every compound starts with SR or RR and carries CNAME.
        blocks = self._report_blocks(now)
        report: RtcpPacket
        if self._sent_since_report or self._sent_in_previous:
            state = self._send
            rtp_ts = state.last_out_ts
            if state.last_sent_at is not None:
                # The RTP time of "now", extrapolated from the last packet sent.
                elapsed = (now - state.last_sent_at) * self.config.clock_rate
                rtp_ts = (rtp_ts + int(elapsed)) & 0xFFFFFFFF
            info = RtcpSenderInfo(
                ntp_timestamp=ntp_timestamp(now + self._wall_offset),
                rtp_timestamp=rtp_ts,
                packet_count=state.counters.packets & 0xFFFFFFFF,
                octet_count=state.counters.octets & 0xFFFFFFFF,
            )
            report = RtcpSrPacket(ssrc=self.ssrc, sender_info=info, reports=blocks)
        else:
            report = RtcpRrPacket(ssrc=self.ssrc, reports=blocks)
        sdes = SdesPacket([SdesChunk(self.ssrc, [(SDES_CNAME, self.config.cname.encode())])])
        data = serialize_rtcp([report, sdes, *extra])
        self._avg_rtcp_size += (len(data) + _UDP_IP_OVERHEAD - self._avg_rtcp_size) / 16
        return data

    def _report_blocks(self, now: float) -> list[RtcpReceiverInfo]:
        blocks: list[RtcpReceiverInfo] = []
        lost_now = 0
        # Most recently heard first: they are the ones that matter if > 31.
        for source in sorted(self._sources.values(), key=lambda s: -s.last_heard):
            if not source.valid or len(blocks) == _MAX_REPORT_BLOCKS:
                continue
            blocks.append(source.report_block(now))
            if source.lost > source.lost_counted:
                lost_now += source.lost - source.lost_counted
                source.lost_counted = source.lost
        if lost_now:
            RTP_LOST.inc(lost_now)
        return blocks

    def _interval(self) -> float:
        self._last_interval = self._interval_draw()
        return self._last_interval

    def _interval_draw(self) -> float:
        senders = sum(1 for s in self._sources.values() if s.valid)
        we_sent = self._sent_since_report or self._sent_in_previous
        bandwidth = self.config.session_bandwidth
        return rtcp_interval(
            members=1 + len(self._sources),
            senders=senders + we_sent,
            rtcp_bandwidth=0.05 * bandwidth / 8,
            we_sent=we_sent,
            avg_rtcp_size=self._avg_rtcp_size,
            initial=self._initial,
            reduced_minimum=360_000 / bandwidth if self.config.reduced_minimum else None,
            random=self._rng.random(),
        )

    def _flush_metrics(self) -> None:
        # Batched: a prometheus counter takes a lock, too dear per packet.
        if self._unflushed_in:
            _PACKETS_IN.inc(self._unflushed_in)
            self._unflushed_in = 0
        if self._unflushed_out:
            _PACKETS_OUT.inc(self._unflushed_out)
            self._unflushed_out = 0
