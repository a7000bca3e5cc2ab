"""Receive statistics of one remote RTP source (RFC 3550 A.1, A.3, A.8).

One ``RtpSource`` per SSRC heard on a leg: it decides whether a packet is
valid (sequence validation with probation, dropout and misorder limits,
wrap-around and restart), counts what was expected and what arrived, keeps
the interarrival jitter in timestamp units and remembers the last sender
report, and from that writes the report block the leg sends back.
"""

from __future__ import annotations

from aiortc.rtp import RtcpReceiverInfo, clamp_packets_lost

MIN_SEQUENTIAL = 2  # packets in sequence before a new source is valid
MAX_DROPOUT = 3000  # largest forward jump still taken as loss
MAX_MISORDER = 100  # largest backward step still taken as reordering
RTP_SEQ_MOD = 1 << 16


class RtpSource:
    """Sequence validation and loss/jitter statistics for one SSRC.

    The field names follow RFC 3550 A.1 so the code can be checked against
    it line by line.
    """

    __slots__ = (
        "bad_seq",
        "base_seq",
        "clock_rate",
        "cycles",
        "expected_prior",
        "jitter",
        "last_heard",
        "last_sr",
        "last_sr_at",
        "lost_counted",
        "max_seq",
        "probation",
        "received",
        "received_prior",
        "ssrc",
        "transit",
    )

    def __init__(self, ssrc: int, seq: int, clock_rate: int, now: float) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self._init_seq(seq)
        # A.1: a new source is on probation until MIN_SEQUENTIAL packets in a row.
        self.max_seq = (seq - 1) & 0xFFFF
        self.probation = MIN_SEQUENTIAL
        self.jitter = 0.0
        self.last_sr = 0  # middle 32 bits of the last SR's NTP time; 0: none yet
        self.last_sr_at = 0.0
        self.last_heard = now
        self.lost_counted = 0  # how much of ``lost`` already went into the metric

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = RTP_SEQ_MOD + 1  # so seq == bad_seq is false
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0
        self.transit: float | None = None  # a restart changes the timestamp base too

    @property
    def valid(self) -> bool:
        """Whether the source has left probation."""
        return self.probation == 0

    def update(self, seq: int, timestamp: int, now: float) -> bool:
        """Account for a packet; False if it is not valid (A.1 ``update_seq``).

        A packet on probation, or the first after a jump too large to be loss,
        is not valid: the caller should not forward it. Duplicates and late
        packets are valid and counted as received, as A.1 does (so ``lost``
        may go down, even below zero).
        """
        self.last_heard = now
        udelta = (seq - self.max_seq) & 0xFFFF
        if self.probation:
            if seq == (self.max_seq + 1) & 0xFFFF:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    self._update_jitter(timestamp, now)
                    return True
            else:
                self.probation = MIN_SEQUENTIAL - 1
                self.max_seq = seq
            return False
        if udelta < MAX_DROPOUT:
            # In order, with a permissible gap.
            if seq < self.max_seq:
                self.cycles += RTP_SEQ_MOD
            self.max_seq = seq
        elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
            # A very large jump: believe it only if the next packet follows it
            # (the sender restarted without changing SSRC).
            if seq != self.bad_seq:
                self.bad_seq = (seq + 1) & 0xFFFF
                return False
            self._init_seq(seq)
        # else: a duplicate or a reordered packet; counted, as in A.1.
        self.received += 1
        self._update_jitter(timestamp, now)
        return True

    def _update_jitter(self, timestamp: int, now: float) -> None:
        # A.8, in timestamp units; the difference is taken modulo 2^32 so a
        # timestamp wrap-around is not a jump of four billion.
        transit = now * self.clock_rate - timestamp
        if self.transit is not None:
            d = (transit - self.transit + 2**31) % 2**32 - 2**31
            self.jitter += (abs(d) - self.jitter) / 16.0
        self.transit = transit

    @property
    def extended_max(self) -> int:
        """Highest sequence number received, extended by the wrap count."""
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        """Packets expected since the source became valid (A.3)."""
        return self.extended_max - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost (A.3); negative after duplicates."""
        return self.expected - self.received

    def report_block(self, now: float) -> RtcpReceiverInfo:
        """The RFC 3550 §6.4.1 report block about this source, as of ``now``.

        Starts a new reporting interval for the fraction lost.
        """
        expected = self.expected
        expected_interval = expected - self.expected_prior
        self.expected_prior = expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = (lost_interval << 8) // expected_interval
        dlsr = 0
        if self.last_sr:
            dlsr = min(int((now - self.last_sr_at) * 65536), 0xFFFFFFFF)
        return RtcpReceiverInfo(
            ssrc=self.ssrc,
            fraction_lost=min(fraction, 255),
            packets_lost=clamp_packets_lost(self.lost),
            highest_sequence=self.extended_max & 0xFFFFFFFF,
            jitter=min(int(self.jitter), 0xFFFFFFFF),
            lsr=self.last_sr,
            dlsr=dlsr,
        )
