"""A bounded, adaptive jitter buffer, sans-IO.

Packets go in with :meth:`JitterBuffer.push` (sequence number, RTP
timestamp, payload, arrival time); :meth:`JitterBuffer.pop` hands out, at
each frame's playout time, either the :class:`Frame` or a :class:`Conceal`
marker telling the decoder that frames are missing so it can run its loss
concealment (or decode the next packet's Opus in-band FEC). The transport
arms a timer at :meth:`JitterBuffer.next_deadline`; nothing here reads a clock.

Playout time of a frame = its RTP time + the fastest transit seen in the last
few seconds + the target delay. The target follows the measured jitter: it
jumps up at once when packets come later than expected (a late packet is a
lost one) and decays slowly, between ``min_delay`` and ``max_delay``.

Why not aiortc's ``JitterBuffer``: it releases a frame as soon as the next one
starts, with a fixed prefetch and no notion of time, so it can neither adapt
its delay to the network nor tell the decoder *when* a frame is missing.

Video (``video=True``): packets with the same timestamp form one frame, and
the marker bit ends it (a timestamp change ends it too, for senders that
leave the marker out). A frame is handed out whole, its payloads in sequence
order for the depacketizer. A frame still incomplete at its playout time, or
one after missing packets (nothing proves where it starts), is dropped and
reported as a :class:`Conceal` whose ``count`` spans the sequence numbers
missing or dropped: video decoders conceal badly, so the caller should send a
PLI and wait for a keyframe. A frame without a hole and without an end yet
gets ``max_delay`` more to finish. Stragglers of a frame already handed out or
concealed are late. The first frame after a start or reset is trusted to
begin at the first packet seen; the depacketizer checks its start bits.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field

from gateway.metrics import MEDIA_QUEUE_DROPS

_MAX_DROPOUT = 3000  # RFC 3550 A.1: a forward jump beyond this is a new numbering
_MAX_MISORDER = 100  # ... and so is a backward one beyond this
_FLOOR_WINDOW = 4.0  # seconds over which the fastest transit is remembered
_PEAK_RELEASE = 1 / 128  # per packet; ~2.5 s at 50 packets/s, so the delay creeps down
_JITTER_GAIN = 1 / 16  # RFC 3550 6.4.1 interarrival jitter smoothing
_MAX_FRAME = 0.12  # seconds; the longest audio frame (Opus). A longer step is silence (DTX)


@dataclass(frozen=True, slots=True)
class Frame:
    """A frame ready for the decoder: one payload for audio, one per packet for video."""

    sequence: int  # of its first packet, 16 bits as received
    timestamp: int  # RTP timestamp, 32 bits as received
    payloads: tuple[bytes, ...] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Conceal:
    """``count`` frames (video: packets) starting at ``sequence`` are missing.

    For audio, ``timestamp`` is the estimated RTP timestamp of the first one
    and ``duration`` the ticks to conceal. ``fec`` is the payload of the packet
    that follows the last missing frame when it is already here: an Opus
    decoder recovers that last frame from its in-band FEC.
    """

    sequence: int
    timestamp: int
    duration: int
    count: int = 1
    fec: bytes | None = field(default=None, repr=False)


@dataclass(slots=True)
class JitterStats:
    """Counters of one buffer (the caller exports what it needs as metrics)."""

    received: int = 0
    frames: int = 0
    concealed: int = 0  # frames (video: packets) reported missing
    late: int = 0  # arrived after their turn, or stray packets of another numbering
    duplicates: int = 0
    dropped: int = 0  # packets dropped oldest-first because the buffer was full
    resets: int = 0  # the source changed (sequence or timeline jump)


@dataclass(slots=True)
class _Packet:
    timestamp: int  # unwrapped
    payload: bytes
    marker: bool


def _unwrap(value: int, reference: int, bits: int) -> int:
    """The unwrapped value nearest to ``reference`` with these low ``bits``."""
    modulus = 1 << bits
    delta = (value - reference) % modulus
    return reference + (delta - modulus if delta >= modulus // 2 else delta)


class JitterBuffer:
    """Reorders, times and bounds one RTP stream (one SSRC) before its decoder.

    ``capacity`` bounds the packets held; past it the oldest frame is dropped
    and counted (``gatewayd_media_queue_drops_total``), because a consumer
    that fell behind needs fresher media, not more of it. A duplicate of a
    packet still held counts as a duplicate; any packet whose turn has passed
    (a duplicate of a played one included) counts as late.

    ``clock_rate`` is the RTP clock of the payload type; ``min_delay`` and
    ``max_delay`` bound the target delay (seconds); ``frame_duration`` is the
    audio frame size assumed until one is measured; ``capacity`` defaults to
    64 packets for audio, 1024 for video.
    """

    def __init__(
        self,
        clock_rate: int,
        *,
        video: bool = False,
        min_delay: float = 0.02,
        max_delay: float = 0.2,
        capacity: int | None = None,
        frame_duration: float = 0.02,
    ) -> None:
        if clock_rate <= 0 or not 0 <= min_delay <= max_delay or frame_duration <= 0:
            raise ValueError("invalid jitter buffer settings")
        self.clock_rate = clock_rate
        self.video = video
        self.min_delay, self.max_delay = min_delay, max_delay
        # Video frames of a keyframe can span a hundred packets.
        self.capacity = capacity if capacity is not None else (1024 if video else 64)
        if self.capacity < 1:
            raise ValueError("capacity must be at least 1")
        # A timeline that moves by more than this at once is a new source.
        self._jump = max(1.0, 4 * max_delay)
        self._default_ticks = round(frame_duration * clock_rate)
        self._max_frame_ticks = round(_MAX_FRAME * clock_rate)
        self.stats = JitterStats()
        self.jitter = 0.0  # RFC 3550 interarrival jitter (steps capped at max_delay), seconds
        self._peak = 0.0  # recent worst delay above the fastest transit, seconds
        self._clear()

    def _clear(self) -> None:
        self._packets: dict[int, _Packet] = {}
        self._order: list[int] = []  # unwrapped sequence numbers held, ascending
        self._newest: int | None = None  # highest unwrapped sequence number seen
        self._timestamp_ref = 0  # unwrapped timestamp of the newest packet
        self._next: int | None = None  # unwrapped sequence number of the next frame out
        self._last_timestamp: int | None = None  # of the last frame out (or concealed)
        self._frame_ticks = self._default_ticks
        self._floor: deque[tuple[float, float]] = deque()  # (arrival, transit), transit rising
        self._last_transit: float | None = None
        self._probation: int | None = None

    def reset(self) -> None:
        """Forget the stream (the caller saw the SSRC change); statistics stay."""
        self._clear()
        self.stats.resets += 1

    @property
    def target_delay(self) -> float:
        """Seconds a frame waits behind the fastest packet: jitter-driven, within bounds."""
        return min(self.max_delay, max(self.min_delay, self._peak + self.jitter))

    def __len__(self) -> int:
        return len(self._order)

    # --- input ----------------------------------------------------------------

    def push(
        self,
        sequence: int,
        timestamp: int,
        payload: bytes,
        arrival_time: float,
        marker: bool = False,
    ) -> None:
        """Add one received packet; ``marker`` matters for video only."""
        self.stats.received += 1
        located = self._locate(sequence, timestamp)
        if located is None:
            self.stats.late += 1
            return
        seq, ts = located
        if seq in self._packets:
            self.stats.duplicates += 1
            return
        transit = arrival_time - ts / self.clock_rate
        late = self._is_late(seq, ts)
        if not late and self._floor and abs(transit - self._floor[0][1]) > self._jump:
            # Same numbering, another timeline: a re-INVITE to another media
            # server behind an SBC, a sender clock step, or a stall so long
            # that starting afresh beats playing it out.
            self.reset()
            seq, ts = self._start(sequence, timestamp)
            transit = arrival_time - ts / self.clock_rate
        self._measure(transit, arrival_time)
        if late:
            self.stats.late += 1
            return
        if self._newest is None or seq > self._newest:
            self._newest, self._timestamp_ref = seq, ts
        self._packets[seq] = _Packet(ts, payload, marker)
        bisect.insort(self._order, seq)
        if len(self._order) > self.capacity:
            self._drop_oldest_frame()

    def _locate(self, sequence: int, timestamp: int) -> tuple[int, int] | None:
        """Unwrapped (sequence, timestamp), or None for a stray of another numbering."""
        newest = self._newest
        if newest is None:
            return self._start(sequence, timestamp)
        seq = _unwrap(sequence, newest, 16)
        if -_MAX_MISORDER <= seq - newest < _MAX_DROPOUT:
            return seq, _unwrap(timestamp, self._timestamp_ref, 32)
        # Two packets in a row of a new numbering mean the source restarted
        # (RFC 3550 A.1); a lone one is a stray.
        if self._probation != (sequence - 1) & 0xFFFF:
            self._probation = sequence
            return None
        self.reset()
        return self._start(sequence, timestamp)

    def _start(self, sequence: int, timestamp: int) -> tuple[int, int]:
        self._newest, self._timestamp_ref, self._probation = sequence, timestamp, None
        return sequence, timestamp

    def _is_late(self, seq: int, ts: int) -> bool:
        if self._next is not None and seq < self._next:
            return True
        last = self._last_timestamp
        return self.video and last is not None and ts <= last

    def _measure(self, transit: float, arrival: float) -> None:
        """Update the fastest transit, the RFC 3550 jitter and the delay peak."""
        floor = self._floor
        while floor and floor[-1][1] >= transit:
            floor.pop()  # never again the minimum: a faster packet came later
        floor.append((arrival, transit))
        while floor[0][0] < arrival - _FLOOR_WINDOW:
            floor.popleft()
        # Both estimates see at most max_delay per packet: beyond it a packet
        # is lost anyway, and one straggler must not hold the delay up for long.
        if self._last_transit is not None:
            change = min(abs(transit - self._last_transit), self.max_delay)
            self.jitter += (change - self.jitter) * _JITTER_GAIN
        self._last_transit = transit
        delay = min(transit - floor[0][1], self.max_delay)
        # Fast attack, slow release: one late burst raises the delay at once,
        # and it takes seconds of calm to give that latency back.
        self._peak = (
            delay if delay > self._peak else self._peak + (delay - self._peak) * _PEAK_RELEASE
        )

    def _drop_oldest_frame(self) -> None:
        last_seq = self._order.pop(0)
        first = self._packets.pop(last_seq).timestamp
        dropped = 1
        # Audio frames are one packet each, whatever their timestamps.
        while self.video and self._order and self._packets[self._order[0]].timestamp == first:
            last_seq = self._order.pop(0)
            del self._packets[last_seq]
            dropped += 1
        self.stats.dropped += dropped
        MEDIA_QUEUE_DROPS.inc(dropped)
        # Not concealed: the consumer is behind, so skipping ahead is the point.
        self._next, self._last_timestamp = last_seq + 1, first

    # --- output ---------------------------------------------------------------

    def _due(self, timestamp: int) -> float:
        return timestamp / self.clock_rate + self._floor[0][1] + self.target_delay

    def _gap_ticks(self, head_seq: int, head: _Packet) -> tuple[int, int]:
        """(first missing timestamp, ticks per frame) of the audio frames before ``head``."""
        assert self._next is not None and self._last_timestamp is not None
        span = head_seq - self._next + 1
        ticks = round((head.timestamp - self._last_timestamp) / span)
        if not 0 < ticks <= self._max_frame_ticks:
            # Timestamps went backwards, or the gap spans a silence (DTX): the
            # missing frames are the usual size, just before ``head``.
            ticks = self._frame_ticks
        return head.timestamp - (head_seq - self._next) * ticks, ticks

    def next_deadline(self) -> float | None:
        """When :meth:`pop` will have something, None while the buffer is empty.

        Re-read it after every push: a new packet may move it.
        """
        if not self._order:
            return None
        head_seq = self._order[0]
        head = self._packets[head_seq]
        if self.video:
            gap = self._next is not None and head_seq > self._next
            return self._due(head.timestamp) + self._video_grace(gap)
        if self._next is None or head_seq == self._next:
            return self._due(head.timestamp)
        return self._due(self._gap_ticks(head_seq, head)[0])

    def pop(self, now: float) -> Frame | Conceal | None:
        """The next frame or loss marker if its playout time has come, else None.

        Call it until it returns None. A gap is reported only once a later
        packet proves it: with nothing buffered, loss and silence (DTX) look
        alike and the caller decides.
        """
        if not self._order:
            return None
        head_seq = self._order[0]
        head = self._packets[head_seq]
        if self._next is None:
            self._next = head_seq
        if self.video:
            return self._pop_video_frame(head_seq, head, now)
        if head_seq > self._next:
            return self._conceal_audio_gap(head_seq, head, now)
        if now < self._due(head.timestamp):
            return None
        self._order.pop(0)
        del self._packets[head_seq]
        step = None if self._last_timestamp is None else head.timestamp - self._last_timestamp
        if step is not None and 0 < step <= self._max_frame_ticks:
            self._frame_ticks = step  # the sender's frame size; a longer step is DTX
        self._next, self._last_timestamp = head_seq + 1, head.timestamp
        self.stats.frames += 1
        return Frame(head_seq & 0xFFFF, head.timestamp & 0xFFFFFFFF, (head.payload,))

    def _conceal_audio_gap(self, head_seq: int, head: _Packet, now: float) -> Conceal | None:
        assert self._next is not None
        first, ticks = self._gap_ticks(head_seq, head)
        if now < self._due(first):  # the same test as next_deadline(), so a timer never spins
            return None
        # Every missing frame already due goes in one marker: a caller that
        # pops late gets one concealment of the right length, not a burst.
        playable = (now - self._floor[0][1] - self.target_delay) * self.clock_rate
        count = max(1, min(head_seq - self._next, int((playable - first) // ticks) + 1))
        fec = head.payload if count == head_seq - self._next else None
        conceal = Conceal(self._next & 0xFFFF, first & 0xFFFFFFFF, count * ticks, count, fec)
        self._next += count
        self._last_timestamp = first + (count - 1) * ticks
        self.stats.concealed += count
        return conceal

    def _video_head(self) -> tuple[int, bool, bool]:
        """How many packets the head frame has here, whether it is whole, whether it may grow.

        Frames do not interleave, so the head frame is the leading run of
        packets with its timestamp. It is whole when it has no hole and ends
        with the marker, or the very next sequence number is here with
        another timestamp (a sender that leaves the marker out). It may still
        grow when it has no hole, no end and nothing after it is here yet.
        """
        head_seq = self._order[0]
        timestamp = self._packets[head_seq].timestamp
        taken = 1
        while taken < len(self._order) and (
            self._packets[self._order[taken]].timestamp == timestamp
        ):
            taken += 1
        last = self._order[taken - 1]
        contiguous = last - head_seq + 1 == taken
        ended = self._packets[last].marker or last + 1 in self._packets
        return taken, contiguous and ended, contiguous and not ended and taken == len(self._order)

    def _video_grace(self, gap: bool) -> float:
        # A frame that may still grow gets max_delay more to show its end, for
        # senders without the marker bit; a frame with a hole before or in it
        # has nothing to wait for.
        return self.max_delay if not gap and self._video_head()[2] else 0.0

    def _pop_video_frame(self, head_seq: int, head: _Packet, now: float) -> Frame | Conceal | None:
        assert self._next is not None
        gap = head_seq - self._next  # packets missing just before this frame
        if now < self._due(head.timestamp) + self._video_grace(gap > 0):
            return None
        taken, whole, _ = self._video_head()
        seqs = self._order[:taken]
        del self._order[:taken]
        packets = [self._packets.pop(seq) for seq in seqs]  # whole or not, they all leave
        first, self._next, self._last_timestamp = self._next, seqs[-1] + 1, head.timestamp
        if whole and not gap:
            self.stats.frames += 1
            payloads = tuple(packet.payload for packet in packets)
            return Frame(head_seq & 0xFFFF, head.timestamp & 0xFFFFFFFF, payloads)
        # After a gap nothing proves where this frame starts (the lost packets
        # may be its first ones), so it is concealed along with the gap.
        count = self._next - first
        self.stats.concealed += count
        return Conceal(first & 0xFFFF, head.timestamp & 0xFFFFFFFF, 0, count)
