"""DTMF: RFC 4733 payload, receiver and sender, SIP INFO bodies, in-band detector.

In-band tests use tones, noise and speech-like sound synthesized with numpy,
with fixed seeds so that a failure reproduces.
"""

from __future__ import annotations

import random

import numpy as np
import numpy.typing as npt
import pytest

from gateway.clock import FakeClock
from gateway.media.dtmf import (
    DIGITS,
    DtmfDigit,
    DtmfError,
    DtmfPacket,
    DtmfReceiver,
    DtmfSender,
    InbandDtmfDetector,
    TelephoneEvent,
    build_dtmf,
    build_dtmf_relay,
    event_code,
    parse_info_body,
)
from gateway.metrics import REGISTRY


def dtmf_count(method: str) -> float:
    return REGISTRY.get_sample_value("gatewayd_dtmf_events_total", {"method": method}) or 0.0


def keys(digits: list[DtmfDigit]) -> str:
    return "".join(d.digit for d in digits)


# --- payload --------------------------------------------------------------------------------


def test_payload_golden_bytes() -> None:
    event = TelephoneEvent(event=5, end=True, volume=10, duration=800)
    assert bytes(event) == b"\x05\x8a\x03\x20"
    assert TelephoneEvent.parse(b"\x05\x8a\x03\x20") == event
    assert TelephoneEvent.parse(b"\x0b\x00\xff\xff") == TelephoneEvent(11, False, 0, 0xFFFF)


def test_payload_ignores_the_reserved_bit() -> None:
    assert TelephoneEvent.parse(b"\x01\x4a\x00\xa0") == TelephoneEvent(1, False, 10, 160)


@pytest.mark.parametrize("data", [b"", b"\x01\x0a\x00", b"\x01\x0a\x00\xa0\x00"])
def test_payload_of_wrong_length_is_rejected(data: bytes) -> None:
    with pytest.raises(DtmfError) as caught:
        TelephoneEvent.parse(data)
    assert caught.value.sip_status == 400


@pytest.mark.parametrize(
    ("event", "volume", "duration"), [(256, 0, 0), (0, 64, 0), (0, 0, 0x10000), (-1, 0, 0)]
)
def test_payload_fields_out_of_range_are_rejected(event: int, volume: int, duration: int) -> None:
    with pytest.raises(DtmfError):
        TelephoneEvent(event, False, volume, duration)


def test_event_codes_and_digits() -> None:
    assert [TelephoneEvent(code, False, 0, 0).digit for code in range(16)] == list(DIGITS)
    assert TelephoneEvent(16, False, 0, 0).digit is None  # flash
    assert event_code("*") == 10
    assert event_code("#") == 11
    assert event_code("a") == 12
    for bad in ("", "E", "12", " "):
        with pytest.raises(DtmfError):
            event_code(bad)


def test_a_digit_never_shows_in_a_repr() -> None:
    digit = DtmfDigit("#", 0.1, "inband")
    assert "#" not in repr(digit)
    assert "digit" not in repr(digit)
    assert "payload" not in repr(DtmfPacket(0, True, b"\x07\x0a\x00\xa0"))


# --- sender ---------------------------------------------------------------------------------


def drain(sender: DtmfSender, clock: FakeClock) -> list[tuple[float, DtmfPacket]]:
    """Run the sender's timer as a transport would: wake at each deadline."""
    sent = []
    while (deadline := sender.next_deadline()) is not None:
        clock.set(max(deadline, clock.monotonic()))
        sent += [(clock.monotonic(), packet) for packet in sender.packets_due(clock.monotonic())]
    return sent


def test_sender_packets_for_one_digit() -> None:
    clock = FakeClock()
    sender = DtmfSender(clock, clock_rate=8000, ptime=0.02, duration=0.1, volume=10)
    sender.send("5")
    sent = drain(sender, clock)
    events = [TelephoneEvent.parse(p.payload) for _, p in sent]
    assert [p.marker for _, p in sent] == [True] + [False] * 6
    assert {p.timestamp for _, p in sent} == {0}
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert {(e.event, e.volume) for e in events} == {(5, 10)}
    times = [t - 1000.0 for t, _ in sent]
    assert times == pytest.approx([0.0, 0.02, 0.04, 0.06, 0.08, 0.10, 0.12])


def test_sender_durations_are_in_ticks_of_the_clock_rate() -> None:
    clock = FakeClock()
    sender = DtmfSender(clock, clock_rate=48000, ptime=0.05, duration=0.12)
    sender.send("#")
    events = [TelephoneEvent.parse(p.payload) for _, p in drain(sender, clock)]
    assert [e.duration for e in events] == [2400, 4800, 5760, 5760, 5760]
    assert events[0].event == 11


def test_sender_leaves_a_guard_gap_and_follows_the_clock() -> None:
    clock = FakeClock()
    sender = DtmfSender(clock, ptime=0.02, duration=0.1, guard=0.05, timestamp_base=1000)
    clock.advance(0.5)
    sender.send("12")
    sent = drain(sender, clock)
    starts = [(t, p.timestamp) for t, p in sent if p.marker]
    assert len(starts) == 2
    assert starts[0][0] == pytest.approx(1000.5)
    assert starts[0][1] == 1000 + 4000
    assert starts[1][0] - starts[0][0] == pytest.approx(0.15)
    assert starts[1][1] - starts[0][1] == 1200  # 150 ms at 8 kHz
    second = [p for _, p in sent if p.timestamp == starts[1][1]]
    assert all(p.timestamp > starts[0][1] for p in second)
    # A digit sent later, when the sender is idle, starts at once.
    clock.advance(1.0)
    sender.send("3", duration=0.06)
    assert sender.next_deadline() == clock.monotonic()


def test_sender_timestamp_wraps() -> None:
    clock = FakeClock()
    sender = DtmfSender(clock, timestamp_base=0xFFFFFF00)
    clock.advance(0.1)
    sender.send("0")
    assert {p.timestamp for _, p in drain(sender, clock)} == {(0xFFFFFF00 + 800) & 0xFFFFFFFF}


def test_sender_cuts_durations_to_one_segment() -> None:
    clock = FakeClock()
    sender = DtmfSender(clock, clock_rate=48000, ptime=0.05)
    sender.send("9", duration=2.0)
    events = [TelephoneEvent.parse(p.payload) for _, p in drain(sender, clock)]
    assert events[-1].duration == 0xFFFF
    assert [e.end for e in events].count(True) == 3


def test_sender_rejects_a_bad_digit_without_queueing_any() -> None:
    sender = DtmfSender(FakeClock())
    with pytest.raises(DtmfError) as caught:
        sender.send("12x")
    assert "x" not in str(caught.value)
    assert sender.next_deadline() is None
    with pytest.raises(DtmfError):
        sender.send("1", duration=0)


# --- receiver -------------------------------------------------------------------------------

Packet = tuple[int, int, bool, bytes]  # timestamp, sequence, marker, payload


def packets_for(digits: str, clock_rate: int = 8000, *, seq: int = 100) -> list[Packet]:
    """The packets our sender makes for ``digits``, numbered from ``seq``."""
    clock = FakeClock()
    sender = DtmfSender(clock, clock_rate=clock_rate, timestamp_base=12345)
    sender.send(digits)
    return [
        (p.timestamp, (seq + i) & 0xFFFF, p.marker, p.payload)
        for i, (_, p) in enumerate(drain(sender, clock))
    ]


def feed(receiver: DtmfReceiver, packets: list[Packet], now: float = 0.0) -> list[DtmfDigit]:
    out: list[DtmfDigit] = []
    for i, (timestamp, seq, marker, payload) in enumerate(packets):
        out += receiver.receive(timestamp, seq, marker, payload, now + i * 0.02)
    return out


@pytest.mark.parametrize("clock_rate", [8000, 48000])
def test_receiver_gives_each_digit_once(clock_rate: int) -> None:
    before = dtmf_count("rfc4733")
    receiver = DtmfReceiver(clock_rate)
    digits = feed(receiver, packets_for(DIGITS, clock_rate))
    assert keys(digits) == DIGITS
    assert [d.duration for d in digits] == [pytest.approx(0.1)] * 16
    assert {d.method for d in digits} == {"rfc4733"}
    assert dtmf_count("rfc4733") == before + 16
    assert receiver.next_deadline() is None


def test_receiver_hands_out_the_digit_at_the_first_end_packet() -> None:
    receiver = DtmfReceiver()
    packets = packets_for("4")
    assert feed(receiver, packets[:4]) == []
    assert keys(receiver.receive(*packets[4], now=1.0)) == "4"
    assert feed(receiver, packets[5:], now=1.0) == []


def test_receiver_starts_from_an_update_when_the_start_is_lost() -> None:
    packets = packets_for("78")
    without_starts = [p for p in packets if not p[2]]
    assert keys(feed(DtmfReceiver(), without_starts)) == "78"
    only_ends = [p for p in packets if TelephoneEvent.parse(p[3]).end]
    assert keys(feed(DtmfReceiver(), only_ends)) == "78"


def test_receiver_survives_reordering_within_an_event() -> None:
    packets = packets_for("6")
    shuffled = [packets[4], packets[0], packets[2], packets[1], packets[6], packets[3], packets[5]]
    digits = feed(DtmfReceiver(), shuffled)
    assert keys(digits) == "6"
    assert digits[0].duration == pytest.approx(0.1)


def test_receiver_ignores_an_older_event_reordered_behind_a_newer_one() -> None:
    first, second = packets_for("12")[:7], packets_for("12")[7:]
    receiver = DtmfReceiver()
    out = feed(receiver, [*second[:2], *first, *second[2:]])
    assert keys(out) == "2"  # the "1" was entirely late: dropped, never out of order


def test_receiver_times_out_an_event_without_end() -> None:
    packets = packets_for("9")
    receiver = DtmfReceiver(timeout=0.5)
    assert feed(receiver, packets[:3]) == []
    deadline = receiver.next_deadline()
    assert deadline is not None
    assert deadline == pytest.approx(0.04 + 0.5)
    assert receiver.handle_timer(deadline - 0.01) == []
    digits = receiver.handle_timer(deadline)
    assert keys(digits) == "9"
    assert digits[0].duration == pytest.approx(0.06)
    # The end packets limping in afterwards do not repeat it.
    assert feed(receiver, packets[3:], now=1.0) == []


def test_receiver_ends_an_event_when_the_next_one_starts() -> None:
    packets = packets_for("33")
    no_ends = [p for p in packets if not TelephoneEvent.parse(p[3]).end]
    receiver = DtmfReceiver()
    assert keys(feed(receiver, no_ends)) == "3"
    assert keys(receiver.handle_timer(10.0)) == "3"


def test_receiver_handles_sequence_wrap() -> None:
    assert keys(feed(DtmfReceiver(), packets_for("*#0", seq=0xFFF8))) == "*#0"


def test_receiver_joins_the_segments_of_a_long_event() -> None:
    # RFC 4733 2.5.1.3: past 0xFFFF ticks the event goes on in a new segment
    # whose timestamp is the old one plus 0xFFFF; no E bit between segments.
    def te(duration: int, end: bool) -> bytes:
        return bytes(TelephoneEvent(1, end, 10, duration))

    stream = [(1000, 1, True, te(2400, False)), (1000, 2, False, te(0xFFFF, False))]
    stream += [(1000, 3, False, te(0xFFFF, False))]
    stream += [(1000 + 0xFFFF, 4 + i, False, te(24000, i > 0)) for i in range(4)]
    digits = feed(DtmfReceiver(48000), stream)
    assert keys(digits) == "1"
    assert digits[0].duration == pytest.approx((0xFFFF + 24000) / 48000)


def test_receiver_ignores_non_key_events_and_rejects_bad_payloads() -> None:
    receiver = DtmfReceiver()
    flash = bytes(TelephoneEvent(16, True, 10, 800))
    assert receiver.receive(500, 1, True, flash, 0.0) == []
    with pytest.raises(DtmfError):
        receiver.receive(600, 2, True, b"\x01", 0.0)


def test_receiver_reset_forgets_the_source() -> None:
    receiver = DtmfReceiver()
    packets = packets_for("5")
    feed(receiver, packets)
    receiver.reset()
    # A new source that happens to reuse the timestamp is a new key press.
    assert keys(feed(receiver, packets)) == "5"


# --- SIP INFO -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "digit", "duration"),
    [
        (b"Signal=5\r\nDuration=160\r\n", "5", 0.16),
        (b"signal= *\nduration = 250", "*", 0.25),
        (b"Signal=11\r\nDuration=100\r\n", "#", 0.1),
        (b"Signal=d\r\n", "D", 0.25),
        (b"Duration=80\r\nSignal=0", "0", 0.08),
    ],
)
def test_parse_dtmf_relay(body: bytes, digit: str, duration: float) -> None:
    before = dtmf_count("info")
    parsed = parse_info_body("Application/DTMF-Relay", body)
    assert parsed.duration == pytest.approx(duration)
    assert (parsed.digit, parsed.method) == (
        digit,
        "info",
    )
    assert dtmf_count("info") == before + 1


def test_parse_application_dtmf() -> None:
    assert parse_info_body("application/dtmf; charset=us-ascii", b"#\r\n").digit == "#"


@pytest.mark.parametrize(
    "body",
    [
        b"Duration=160",
        b"Signal=5\r\nDuration=abc",
        b"Signal=5\r\nDuration=-5",
        b"Signal=16",
        b"Signal=55",
        b"Signal=\xff",
        b"Signal=5\r\ngarbage",
        b"Signal=5\r\n" + b"X=1\r\n" * 500,
    ],
)
def test_malformed_dtmf_relay_is_400(body: bytes) -> None:
    with pytest.raises(DtmfError) as caught:
        parse_info_body("application/dtmf-relay", body)
    assert caught.value.sip_status == 400
    assert "5" not in caught.value.message


def test_other_info_bodies_are_415() -> None:
    with pytest.raises(DtmfError) as caught:
        parse_info_body("application/media_control+xml", b"<x/>")
    assert caught.value.sip_status == 415


def test_build_info_bodies_round_trip() -> None:
    assert build_dtmf_relay("5", 0.16) == b"Signal=5\r\nDuration=160\r\n"
    assert build_dtmf("a") == b"A"
    for digit in DIGITS:
        relay = parse_info_body("application/dtmf-relay", build_dtmf_relay(digit, 0.2))
        assert relay.digit == digit
        assert relay.duration == pytest.approx(0.2)
        assert parse_info_body("application/dtmf", build_dtmf(digit)).digit == digit


# --- in-band --------------------------------------------------------------------------------

ROWS = (697.0, 770.0, 852.0, 941.0)
COLUMNS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = "123A456B789C*0#D"
DBM0 = 32768 * 10 ** (-3.17 / 20)


def tone(
    key: str,
    seconds: float,
    rate: int = 8000,
    *,
    low_dbm0: float = -10.0,
    high_dbm0: float | None = None,
    detune: float = 0.0,
    seed: int = 0,
) -> npt.NDArray[np.float64]:
    index = KEYPAD.index(key)
    t = np.arange(round(seconds * rate)) / rate
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, 2)
    high = low_dbm0 if high_dbm0 is None else high_dbm0
    low_wave = np.sin(2 * np.pi * ROWS[index // 4] * (1 + detune) * t + phase[0])
    high_wave = np.sin(2 * np.pi * COLUMNS[index % 4] * (1 + detune) * t + phase[1])
    wave: npt.NDArray[np.float64] = DBM0 * (
        10 ** (low_dbm0 / 20) * low_wave + 10 ** (high / 20) * high_wave
    )
    return wave


def silence(seconds: float, rate: int = 8000) -> npt.NDArray[np.float64]:
    return np.zeros(round(seconds * rate))


def pcm(signal: npt.NDArray[np.float64]) -> npt.NDArray[np.int16]:
    return np.clip(np.round(signal), -32768, 32767).astype(np.int16)


def detect(signal: npt.NDArray[np.float64], rate: int = 8000) -> list[DtmfDigit]:
    detector = InbandDtmfDetector(rate)
    return detector.feed(pcm(signal)) + detector.flush()


def keyed(
    digits: str, rate: int = 8000, on: float = 0.08, off: float = 0.06, **kw: float
) -> npt.NDArray[np.float64]:
    parts = [silence(0.03, rate)]
    for i, key in enumerate(digits):
        parts += [tone(key, on, rate, seed=i, **kw), silence(off, rate)]
    return np.concatenate(parts)


def speech_like(seconds: float, rate: int, seed: int) -> npt.NDArray[np.float64]:
    """Voiced speech: harmonics of a gliding pitch shaped by moving formants,
    syllable-rate amplitude, a little breath noise; loud (about -10 dBm0)."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    knots = np.linspace(0, seconds, int(seconds * 4) + 2)
    f0 = np.interp(t, knots, rng.uniform(85, 260, len(knots)))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    syllables = np.linspace(0, seconds, int(seconds * 5) + 2)
    formants = [
        (np.interp(t, syllables, rng.uniform(300, 850, len(syllables))), 90.0),
        (np.interp(t, syllables, rng.uniform(900, 2300, len(syllables))), 120.0),
        (np.full_like(t, 2600.0), 200.0),
    ]
    voice = np.zeros_like(t)
    for harmonic in range(1, 45):
        freq = harmonic * f0
        gain = sum(1 / np.sqrt(1 + ((freq - f) / (bw / 2)) ** 2) for f, bw in formants)
        voice += gain / np.sqrt(harmonic) * (freq < 3600) * np.sin(harmonic * phase)
    voice *= np.clip(1.2 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)), 0, 1)
    voice = voice / np.sqrt(np.mean(voice**2)) * DBM0 * 10 ** (-10 / 20)
    noisy: npt.NDArray[np.float64] = voice + rng.normal(0, 0.05 * np.std(voice), len(t))
    return noisy


@pytest.mark.parametrize("level", [-3.0, -10.0, -20.0, -30.0])
def test_inband_detects_all_16_digits_at_several_levels(level: float) -> None:
    before = dtmf_count("inband")
    digits = detect(keyed(KEYPAD, low_dbm0=level))
    assert keys(digits) == KEYPAD
    assert all(0.07 <= d.duration <= 0.1 for d in digits)
    assert {d.method for d in digits} == {"inband"}
    assert dtmf_count("inband") == before + 16


@pytest.mark.parametrize("rate", [16000, 48000])
def test_inband_works_at_wideband_rates(rate: int) -> None:
    assert keys(detect(keyed(KEYPAD, rate), rate)) == KEYPAD


def test_inband_detects_through_white_noise() -> None:
    rng = np.random.default_rng(3)
    signal = keyed(KEYPAD, low_dbm0=-20.0)
    tone_power = 2 * (DBM0 * 10 ** (-20 / 20)) ** 2 / 2
    noisy = signal + rng.normal(0, np.sqrt(tone_power / 10 ** (15 / 10)), len(signal))  # 15 dB SNR
    assert keys(detect(noisy)) == KEYPAD


def test_inband_accepts_detuning_and_twist_within_limits() -> None:
    assert keys(detect(keyed(KEYPAD, detune=0.015))) == KEYPAD
    assert keys(detect(keyed(KEYPAD, detune=-0.015))) == KEYPAD
    assert keys(detect(keyed(KEYPAD, low_dbm0=-10, high_dbm0=-16))) == KEYPAD  # low 6 dB up
    assert keys(detect(keyed(KEYPAD, low_dbm0=-13, high_dbm0=-10))) == KEYPAD  # high 3 dB up


def test_inband_rejects_excessive_twist_and_single_tones() -> None:
    assert detect(keyed(KEYPAD, low_dbm0=-10, high_dbm0=-22)) == []  # low 12 dB up
    assert detect(keyed(KEYPAD, low_dbm0=-17, high_dbm0=-10)) == []  # high 7 dB up
    t = np.arange(8000) / 8000
    assert detect(DBM0 * 0.3 * np.sin(2 * np.pi * 697 * t)) == []
    assert detect(DBM0 * 0.3 * np.sin(2 * np.pi * 1336 * t)) == []


def test_inband_rejects_a_third_tone_close_to_the_peak() -> None:
    # 697 + 1209 Hz is "1"; a 770 Hz tone only 6 dB weaker makes the row ambiguous.
    t = np.arange(800) / 8000
    amplitude = DBM0 * 10 ** (-10 / 20)
    third = amplitude / 2 * np.sin(2 * np.pi * 770 * t)
    assert keys(detect(tone("1", 0.1) + third)) == ""
    assert keys(detect(tone("1", 0.1) + third / 4)) == "1"  # 18 dB weaker: still a clean "1"


def test_inband_rejects_tones_below_the_level_floor() -> None:
    assert detect(keyed("159", low_dbm0=-42.0)) == []


@pytest.mark.parametrize("seconds", [0.010, 0.020])
def test_inband_rejects_too_short_tones(seconds: float) -> None:
    # Every alignment against the analysis windows, every key, loud.
    for offset in range(0, 34, 3):
        signal = keyed(KEYPAD, on=seconds, low_dbm0=-5.0)
        assert detect(np.concatenate([silence(offset / 8000), signal])) == [], offset


def test_inband_accepts_40_ms_tones_at_every_alignment() -> None:
    for offset in range(0, 34, 3):
        signal = np.concatenate([silence(offset / 8000), keyed(KEYPAD, on=0.04)])
        assert keys(detect(signal)) == KEYPAD, offset


def test_inband_ignores_speech_like_sound() -> None:
    for seed in range(3):
        assert detect(speech_like(10.0, 8000, seed)) == [], seed
    assert detect(speech_like(5.0, 16000, 7), 16000) == []


def test_inband_digits_are_still_found_after_speech() -> None:
    signal = np.concatenate([speech_like(2.0, 8000, 1), keyed("2580")])
    assert keys(detect(signal)) == "2580"


def test_inband_one_event_per_key_press() -> None:
    # The same key twice with a 40 ms pause is two presses ...
    assert keys(detect(keyed("55", off=0.04))) == "55"
    # ... a 10 ms drop-out inside one press is not.
    held = np.concatenate([tone("5", 0.06), silence(0.01), tone("5", 0.06, seed=1)])
    digits = detect(np.concatenate([silence(0.02), held, silence(0.05)]))
    assert keys(digits) == "5"
    assert digits[0].duration == pytest.approx(0.13, abs=0.02)


def test_inband_digits_back_to_back_without_a_pause() -> None:
    signal = np.concatenate([tone("1", 0.08), tone("2", 0.08, seed=1), silence(0.05)])
    assert keys(detect(signal)) == "12"


def test_inband_streaming_in_chunks_matches_one_block() -> None:
    signal = pcm(keyed("147*2580369#ABCD"))
    chunks = random.Random(4)
    detector = InbandDtmfDetector(8000)
    found: list[DtmfDigit] = []
    position = 0
    while position < len(signal):
        size = chunks.choice([1, 7, 80, 160, 333])
        found += detector.feed(signal[position : position + size])
        position += size
    found += detector.flush()
    assert found == detect(signal.astype(np.float64))
    assert keys(found) == "147*2580369#ABCD"


def test_inband_held_key_is_released_by_flush() -> None:
    detector = InbandDtmfDetector(8000)
    assert detector.feed(pcm(tone("8", 0.2))) == []
    assert keys(detector.flush()) == "8"
    assert detector.flush() == []


def test_inband_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="8 kHz"):
        InbandDtmfDetector(4000)
    with pytest.raises(ValueError, match="mono"):
        InbandDtmfDetector().feed(np.zeros((2, 160), dtype=np.int16))
