"""DTMF in the three ways a gateway meets it, all sans-IO.

* RFC 4733 telephone-events: the 4-byte payload (:class:`TelephoneEvent`), a
  :class:`DtmfReceiver` that turns a packet stream into one digit per key
  press, and a :class:`DtmfSender` that turns digits into timed packets.
* SIP INFO bodies (``application/dtmf-relay`` and ``application/dtmf``), the
  fallback of peers that negotiate no telephone-event.
* :class:`InbandDtmfDetector`, the last resort for peers that only send tones
  inside the audio: Goertzel bins on 16-bit PCM with the ITU-T Q.24 checks.

Every digit found is counted in ``gatewayd_dtmf_events_total{method}`` and
handed out as a :class:`DtmfDigit`. Digits are never logged and never put in
an error message or a ``repr``: a key press is often a PIN.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from gateway.clock import Clock
from gateway.errors import BadRequest
from gateway.metrics import DTMF_EVENTS

DIGITS = "0123456789*#ABCD"
"""The 16 DTMF keys in RFC 4733 event-code order (event 10 is ``*``, 12 is ``A``)."""

Method = Literal["rfc4733", "info", "inband"]


class DtmfError(BadRequest):
    """A DTMF payload, INFO body or digit is malformed (SIP 400 unless said otherwise).

    Messages describe the defect, never the digit itself.
    """


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """One key press, however it arrived.

    ``duration`` is in seconds. The digit is left out of the ``repr`` so that a
    careless log line of the event leaks no PIN.
    """

    digit: str = field(repr=False)
    duration: float
    method: Method


def _found(digit: str, duration: float, method: Method) -> DtmfDigit:
    DTMF_EVENTS.labels(method=method).inc()
    return DtmfDigit(digit, duration, method)


def event_code(digit: str) -> int:
    """The RFC 4733 event code of a key (``"*"`` -> 10, ``"a"`` -> 12)."""
    code = DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if code < 0:
        raise DtmfError("not a DTMF digit")
    return code


# --- RFC 4733 payload -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """The RFC 4733 section 2.3 payload: event, E bit, volume (-dBm0), duration (ticks)."""

    event: int
    end: bool
    volume: int
    duration: int

    def __post_init__(self) -> None:
        if not (0 <= self.event <= 255 and 0 <= self.volume <= 63 and 0 <= self.duration <= 0xFFFF):
            raise DtmfError("telephone-event field out of range")

    @classmethod
    def parse(cls, data: bytes) -> TelephoneEvent:
        """Decode 4 bytes; the reserved R bit is ignored as the RFC asks."""
        # Exactly 4: RFC 2198 redundancy is not negotiated and RTP padding is
        # already stripped, so anything else is a broken or hostile sender.
        if len(data) != 4:
            raise DtmfError("telephone-event payload must be 4 bytes")
        return cls(data[0], bool(data[1] & 0x80), data[1] & 0x3F, int.from_bytes(data[2:4]))

    def __bytes__(self) -> bytes:
        flags = (0x80 if self.end else 0) | self.volume
        return bytes((self.event, flags)) + self.duration.to_bytes(2)

    @property
    def digit(self) -> str | None:
        """The key for events 0-15, None for the other telephone-events (flash, tones)."""
        return DIGITS[self.event] if self.event < len(DIGITS) else None


# --- RFC 4733 receiver ----------------------------------------------------------------------

_RECENT_EVENTS = 8  # finished event timestamps remembered to swallow late retransmissions
_MAX_MISORDER = 100  # packets older than the newest by up to this many are "late" (RFC 3550 A.1)


@dataclass(slots=True)
class _Event:
    timestamp: int
    code: int
    duration: int  # ticks of the current segment, the largest seen
    earlier: int  # ticks of the segments before it (events longer than 0xFFFF ticks)
    last_seen: float


class DtmfReceiver:
    """Telephone-event packets in, one :class:`DtmfDigit` per key press out.

    An event is identified by its RTP timestamp, which stays the same for all
    of its packets. The digit is handed out when the event ends: at the first
    end packet (the two retransmissions are swallowed), when a newer event
    starts before the end was seen, or ``timeout`` seconds after the last
    packet of an event whose end packets were all lost. A lost start packet
    does not matter: any update starts the event. Packets of an older event
    arriving after a newer one started are late and ignored, so digits come
    out in key order, never twice. Call :meth:`handle_timer` at
    :meth:`next_deadline`.
    """

    def __init__(self, clock_rate: int = 8000, *, timeout: float = 0.5) -> None:
        if clock_rate <= 0 or timeout <= 0:
            raise ValueError("clock_rate and timeout must be positive")
        self.clock_rate = clock_rate
        self.timeout = timeout
        self._active: _Event | None = None
        self._finished: deque[int] = deque(maxlen=_RECENT_EVENTS)
        self._newest_seq: int | None = None

    def reset(self) -> None:
        """Forget everything (the RTP source changed)."""
        self._active = None
        self._finished.clear()
        self._newest_seq = None

    def receive(
        self, timestamp: int, sequence: int, marker: bool, payload: bytes, now: float
    ) -> list[DtmfDigit]:
        """Feed one telephone-event packet; raise :class:`DtmfError` if the payload is bad.

        ``marker`` is accepted for completeness but not relied upon: the start
        packet that carries it is the one most often lost.
        """
        packet = TelephoneEvent.parse(payload)
        digits = self.handle_timer(now)
        late = self._is_late(sequence)
        active = self._active
        if timestamp in self._finished:
            return digits  # end retransmissions and stray updates of a finished event
        if active is not None and timestamp == active.timestamp:
            active.duration = max(active.duration, packet.duration)
            active.last_seen = now
        elif late:
            return digits  # an older event, reordered behind a newer one: too late
        elif active is not None and self._continues(active, timestamp, packet):
            # RFC 4733 2.5.1.3: a long event goes on in a new segment whose
            # timestamp is the old one plus the old segment's duration.
            self._finished.append(active.timestamp)
            active.earlier += (timestamp - active.timestamp) & 0xFFFFFFFF
            active.timestamp, active.duration, active.last_seen = timestamp, packet.duration, now
        else:
            if active is not None:
                digits.extend(self._finish())  # its end packets were all lost
            self._active = _Event(timestamp, packet.event, packet.duration, 0, now)
        if packet.end:
            digits.extend(self._finish())
        return digits

    def next_deadline(self) -> float | None:
        """When an event without an end packet times out, if one is open."""
        return None if self._active is None else self._active.last_seen + self.timeout

    def handle_timer(self, now: float) -> list[DtmfDigit]:
        """End the open event if its end packets never came."""
        deadline = self.next_deadline()
        return self._finish() if deadline is not None and now >= deadline else []

    def _is_late(self, sequence: int) -> bool:
        newest = self._newest_seq
        behind = 0 if newest is None else (newest - sequence) & 0xFFFF
        if 0 < behind <= _MAX_MISORDER:
            return True
        self._newest_seq = sequence  # newer, or so far off that the source restarted
        return False

    def _continues(self, active: _Event, timestamp: int, packet: TelephoneEvent) -> bool:
        gap = (timestamp - active.timestamp) & 0xFFFFFFFF
        # One update interval of slack: the segment's own last packets may be lost.
        slack = self.clock_rate // 10
        return (
            packet.event == active.code
            and 0 < gap <= active.duration + slack
            and (active.duration >= 0xFFFF - slack)
        )

    def _finish(self) -> list[DtmfDigit]:
        active, self._active = self._active, None
        if active is None:
            return []
        self._finished.append(active.timestamp)
        if active.code >= len(DIGITS):
            return []  # flash and other non-key events are not digits
        seconds = (active.earlier + active.duration) / self.clock_rate
        return [_found(DIGITS[active.code], seconds, "rfc4733")]


# --- RFC 4733 sender ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DtmfPacket:
    """One telephone-event packet to send: the RTP session adds SSRC and sequence number.

    Every packet, the end retransmissions included, takes the next sequence
    number: SRTP replay protection would drop a repeated one.
    """

    timestamp: int
    marker: bool
    payload: bytes = field(repr=False)  # the payload names the digit


class DtmfSender:
    """Digits in, timed RFC 4733 packets out.

    Each digit becomes: a start packet with the marker bit, an update every
    ``ptime`` with the duration so far, and the end packet sent three times
    (RFC 4733 2.5.1.4), all with the RTP timestamp of the event's start.
    The first packet already reports one ``ptime`` of tone so that it is sent
    without waiting. The next digit starts ``guard`` seconds after the tone
    ended, and not before the last end packet went out. The RTP timestamp
    advances with the injected clock from ``timestamp_base``, so the events
    sit on the timeline of the audio sent on the same SSRC. Durations longer
    than one segment (0xFFFF ticks, 1.36 s at 48 kHz) are cut to one segment.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        clock_rate: int = 8000,
        ptime: float = 0.02,
        duration: float = 0.1,
        guard: float = 0.05,
        volume: int = 10,
        timestamp_base: int = 0,
    ) -> None:
        if clock_rate <= 0 or ptime <= 0 or duration <= 0 or guard < 0 or not 0 <= volume <= 63:
            raise ValueError("invalid DTMF sender settings")
        self._clock = clock
        self.clock_rate, self.ptime, self.duration = clock_rate, ptime, duration
        self.guard, self.volume = guard, volume
        self._origin = clock.monotonic()
        self._timestamp_base = timestamp_base
        self._schedule: deque[tuple[float, DtmfPacket]] = deque()
        self._free_at = self._origin  # when the next digit may start

    def send(self, digits: str, duration: float | None = None) -> None:
        """Queue ``digits`` (``0-9 * # A-D``); nothing is queued if one is invalid."""
        codes = [event_code(digit) for digit in digits]
        tone = self.duration if duration is None else duration
        if tone <= 0:
            raise DtmfError("DTMF duration must be positive")
        for code in codes:
            self._schedule_event(code, tone)

    def next_deadline(self) -> float | None:
        """When the next packet is due, None when nothing is queued."""
        return self._schedule[0][0] if self._schedule else None

    def packets_due(self, now: float) -> list[DtmfPacket]:
        """Every packet whose time has come, in sending order."""
        due = []
        while self._schedule and self._schedule[0][0] <= now:
            due.append(self._schedule.popleft()[1])
        return due

    def _schedule_event(self, code: int, seconds: float) -> None:
        start = max(self._clock.monotonic(), self._free_at)
        timestamp = self._timestamp_base + round((start - self._origin) * self.clock_rate)
        timestamp &= 0xFFFFFFFF
        total = min(round(seconds * self.clock_rate), 0xFFFF)
        step = self.ptime * self.clock_rate
        updates = max(1, math.ceil(total / step))  # packets until the one that reaches `total`
        for index in range(updates + 2):
            ticks = min(round((index + 1) * step), total)
            end = index >= updates - 1
            payload = bytes(TelephoneEvent(code, end, self.volume, total if end else ticks))
            self._schedule.append(
                (start + index * self.ptime, DtmfPacket(timestamp, index == 0, payload))
            )
        last_sent = start + (updates + 1) * self.ptime
        self._free_at = max(start + total / self.clock_rate + self.guard, last_sent + self.ptime)


# --- SIP INFO -------------------------------------------------------------------------------

DTMF_RELAY = "application/dtmf-relay"
DTMF = "application/dtmf"
_MAX_INFO_BODY = 1024
_DEFAULT_INFO_DURATION = 0.25  # seconds, when a dtmf-relay body has no Duration line


def parse_info_body(content_type: str, body: bytes) -> DtmfDigit:
    """The digit of a SIP INFO body, counted; 415 for other content types, 400 if malformed.

    ``application/dtmf-relay`` is ``Signal=5\\r\\nDuration=160\\r\\n`` (Duration
    in ms, optional); Signal may also be an event code 10-15 as some phones
    send ``Signal=11`` for ``#``. ``application/dtmf`` is the bare key.
    """
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind not in (DTMF_RELAY, DTMF):
        raise DtmfError(
            "unsupported DTMF content type", sip_status=415, reason="Unsupported Media Type"
        )
    if len(body) > _MAX_INFO_BODY:
        raise DtmfError("DTMF INFO body too large")
    try:
        text = body.decode("ascii").strip()
    except UnicodeDecodeError:
        raise DtmfError("DTMF INFO body is not ASCII") from None
    if kind == DTMF:
        return _found(_signal(text), _DEFAULT_INFO_DURATION, "info")
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if not sep:
            if line.strip():
                raise DtmfError("dtmf-relay line without '='")
            continue
        fields[name.strip().lower()] = value.strip()
    if "signal" not in fields:
        raise DtmfError("dtmf-relay body without Signal")
    duration = _DEFAULT_INFO_DURATION
    if "duration" in fields:
        text_ms = fields["duration"]
        if not (text_ms.isascii() and text_ms.isdigit() and len(text_ms) <= 6):
            raise DtmfError("dtmf-relay Duration is not a number of milliseconds")
        duration = int(text_ms) / 1000
    return _found(_signal(fields["signal"]), duration, "info")


def _signal(text: str) -> str:
    if text.isascii() and text.isdigit() and 10 <= int(text) <= 15:
        return DIGITS[int(text)]
    return DIGITS[event_code(text)]


def build_dtmf_relay(digit: str, duration: float) -> bytes:
    """An ``application/dtmf-relay`` body (Duration in whole milliseconds)."""
    key = DIGITS[event_code(digit)]
    return f"Signal={key}\r\nDuration={max(1, round(duration * 1000))}\r\n".encode("ascii")


def build_dtmf(digit: str) -> bytes:
    """An ``application/dtmf`` body: the key alone."""
    return DIGITS[event_code(digit)].encode("ascii")


# --- in-band detection ----------------------------------------------------------------------

_ROWS = (697.0, 770.0, 852.0, 941.0)
_COLUMNS = (1209.0, 1336.0, 1477.0, 1633.0)
_KEYPAD = "123A456B789C*0#D"  # row-major: row index * 4 + column index
# 0 dBm0 as a 16-bit sine: G.711 full scale is +3.17 dBm0 (G.711 / G.168).
_DBM0_PEAK = 32768 * 10 ** (-3.17 / 20)
_WINDOW = 0.0128  # seconds: 102 samples at 8 kHz, bins 78 Hz apart, enough to split 697/770
_HOPS_PER_WINDOW = 3  # a window every 4.3 ms, fine enough to measure 20 vs 40 ms
# Tuned on synthetic tones at every alignment: 6 hit windows reject every
# 20 ms tone and accept every 40 ms tone (clean, +-1.5 % frequency, 15 dB SNR);
# 5 missed windows bridge a 10 ms drop-out and end the key on a 20 ms pause.
_KEY_DOWN_WINDOWS = 6
_KEY_UP_WINDOWS = 5
_NORMAL_TWIST = 10 ** (8 / 10)  # low group may be 8 dB above high (line loss)
_REVERSE_TWIST = 10 ** (4 / 10)  # high group may be 4 dB above low
_RELATIVE_PEAK = 10 ** (8 / 10)  # each tone 8 dB above the other bins of its group
_TONE_SHARE = 0.7  # the two tones carry 70 % of the window's power; speech spreads it


class InbandDtmfDetector:
    """A Goertzel DTMF detector for 16-bit PCM at 8, 16 or 48 kHz (any rate >= 8 kHz).

    Windows of 12.8 ms every 4.3 ms are scored at the eight DTMF frequencies
    computed at the stream's own rate (no resampling). A window is a hit for
    a key when both of its tones are at least ``min_level_dbm0`` (per tone),
    the twist is within +4/-8 dB, each tone stands 8 dB above the other bins
    of its group, and the two tones hold 70 % of the window's power. Six
    consecutive hits (about 40 ms of tone) press the key; five misses (a
    pause of about 20 ms) release it and hand the digit out, with its
    duration. Drop-outs up to 10 ms do not split a key press.
    """

    def __init__(self, sample_rate: int = 8000, *, min_level_dbm0: float = -36.0) -> None:
        if sample_rate < 8000:
            raise ValueError("in-band DTMF needs at least 8 kHz")
        self.sample_rate = sample_rate
        self._size = round(_WINDOW * sample_rate)
        self._hop = self._size // _HOPS_PER_WINDOW
        # The Goertzel recursion yields one DFT term per frequency; in numpy the
        # same term is a dot product with a cos/sin basis, computed for every
        # window at once instead of a Python loop over samples.
        angles = 2 * np.pi * np.outer(np.arange(self._size), _ROWS + _COLUMNS) / sample_rate
        self._basis = np.concatenate([np.cos(angles), np.sin(angles)], axis=1)
        self._min_power = (_DBM0_PEAK * 10 ** (min_level_dbm0 / 20)) ** 2 / 2
        self._pending = np.zeros(0)
        self._window = 0  # index of the next window since the stream began
        self._candidate, self._run = -1, 0
        self._down, self._first_hit, self._last_hit, self._misses = -1, 0, 0, 0

    def feed(self, samples: npt.NDArray[np.int16]) -> list[DtmfDigit]:
        """Analyse the next chunk of mono PCM (any length) and return released keys."""
        if samples.ndim != 1:
            raise ValueError("in-band DTMF expects mono samples")
        pending = np.concatenate([self._pending, samples.astype(np.float64)])
        count = (len(pending) - self._size) // self._hop + 1 if len(pending) >= self._size else 0
        self._pending = pending[count * self._hop :]
        if count == 0:
            return []
        views = np.lib.stride_tricks.sliding_window_view(pending, self._size)
        return self._track(self._classify(views[: count * self._hop : self._hop]))

    def flush(self) -> list[DtmfDigit]:
        """End of the stream: release a key still held."""
        return self._release() if self._down >= 0 else []

    def _classify(self, windows: npt.NDArray[np.float64]) -> npt.NDArray[np.intp]:
        """The key index heard in each window, or -1."""
        windows = windows - windows.mean(axis=1, keepdims=True)  # DC would dilute the share
        terms = windows @ self._basis
        power = (terms[:, :8] ** 2 + terms[:, 8:] ** 2) * (2 / self._size**2)  # sine power A^2/2
        total = np.mean(windows**2, axis=1)
        rows, cols = power[:, :4], power[:, 4:]
        row, col = rows.argmax(axis=1), cols.argmax(axis=1)
        low, high = rows.max(axis=1), cols.max(axis=1)
        low_next, high_next = np.sort(rows, axis=1)[:, -2], np.sort(cols, axis=1)[:, -2]
        hit = (
            (low >= self._min_power)
            & (high >= self._min_power)
            & (high <= low * _REVERSE_TWIST)
            & (low <= high * _NORMAL_TWIST)
            & (low >= low_next * _RELATIVE_PEAK)
            & (high >= high_next * _RELATIVE_PEAK)
            & (low + high >= _TONE_SHARE * total)
        )
        return np.where(hit, row * 4 + col, -1)

    def _track(self, keys: npt.NDArray[np.intp]) -> list[DtmfDigit]:
        # One step per 4.3 ms window, not per sample: the key state spans chunks.
        digits: list[DtmfDigit] = []
        for key in keys.tolist():
            self._run = self._run + 1 if key >= 0 and key == self._candidate else int(key >= 0)
            self._candidate = key
            if self._down >= 0:
                if key == self._down:
                    self._misses, self._last_hit = 0, self._window
                else:
                    self._misses += 1
                    if self._misses >= _KEY_UP_WINDOWS:
                        digits.extend(self._release())
            if self._down < 0 and self._run >= _KEY_DOWN_WINDOWS:
                self._down, self._misses = key, 0
                self._first_hit, self._last_hit = self._window - self._run + 1, self._window
            self._window += 1
        return digits

    def _release(self) -> list[DtmfDigit]:
        samples = (self._last_hit - self._first_hit) * self._hop + self._size
        key, self._down = self._down, -1
        return [_found(_KEYPAD[key], samples / self.sample_rate, "inband")]
