"""Hypothesis fuzzing of the DTMF cores.

Hostile payloads and INFO bodies may only raise ``DtmfError``; whatever the
network does to a sender's packets (loss, duplication, reordering within an
event) the receiver hands out each surviving key press exactly once, in key
order; the in-band detector survives any PCM.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.clock import FakeClock
from gateway.media.dtmf import (
    DIGITS,
    DtmfError,
    DtmfReceiver,
    DtmfSender,
    InbandDtmfDetector,
    TelephoneEvent,
    parse_info_body,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=12))
def test_payload_parse_raises_only_dtmf_error_and_round_trips(data: bytes) -> None:
    try:
        event = TelephoneEvent.parse(data)
    except DtmfError:
        assert len(data) != 4
        return
    # Serializing clears only the reserved bit.
    assert bytes(event) == bytes([data[0], data[1] & 0xBF]) + data[2:]


@FUZZ
@given(
    st.sampled_from(["application/dtmf-relay", "application/dtmf", "text/plain", ""]),
    st.one_of(
        st.binary(max_size=2000),
        st.text(alphabet="Signal=Duration0123456789*#ABCDabcd \r\n-", max_size=80).map(str.encode),
    ),
)
def test_info_body_raises_only_dtmf_error(content_type: str, body: bytes) -> None:
    status = 0
    try:
        digit = parse_info_body(content_type, body)
    except DtmfError as error:
        status = error.sip_status
    if status:
        assert status in (400, 415)
        return
    assert digit.digit in DIGITS
    assert digit.duration >= 0


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**16 - 1),
            st.booleans(),
            st.binary(min_size=3, max_size=5),
        ),
        max_size=40,
    )
)
def test_receiver_survives_any_packet_stream(
    packets: list[tuple[int, int, bool, bytes]],
) -> None:
    receiver = DtmfReceiver()
    count = 0
    for i, (timestamp, seq, marker, payload) in enumerate(packets):
        try:
            count += len(receiver.receive(timestamp, seq, marker, payload, i * 0.02))
        except DtmfError:
            assert len(payload) != 4
    count += len(receiver.handle_timer(1e9))
    assert count <= len(packets)
    assert receiver.next_deadline() is None


@st.composite
def network(draw: st.DrawFn) -> tuple[str, int, list[tuple[int, int, bool, bytes]]]:
    """A sender's packets for random digits after loss, duplication and reordering."""
    digits = draw(st.text(alphabet=DIGITS, min_size=1, max_size=6))
    rate = draw(st.sampled_from([8000, 16000, 48000]))
    clock = FakeClock()
    sender = DtmfSender(
        clock,
        clock_rate=rate,
        ptime=draw(st.sampled_from([0.01, 0.02, 0.05])),
        duration=draw(st.floats(0.04, 0.5)),
        timestamp_base=draw(st.integers(0, 2**32 - 1)),
    )
    sender.send(digits)
    seq = draw(st.integers(0, 2**16 - 1))
    per_event: list[list[tuple[int, int, bool, bytes]]] = []
    while (deadline := sender.next_deadline()) is not None:
        clock.set(deadline)
        for packet in sender.packets_due(deadline):
            if packet.marker:
                per_event.append([])
            per_event[-1].append((packet.timestamp, seq, packet.marker, packet.payload))
            seq = (seq + 1) & 0xFFFF
    stream = []
    for event in per_event:
        # Keep at least one packet of every event, duplicate some, shuffle within it.
        kept = [p for p in event if draw(st.booleans())] or [event[-1]]
        kept += [p for p in kept if draw(st.integers(0, 4)) == 0]
        stream += draw(st.permutations(kept))
    return digits, rate, stream


@FUZZ
@given(network())
def test_every_key_press_arrives_once_through_a_bad_network(
    case: tuple[str, int, list[tuple[int, int, bool, bytes]]],
) -> None:
    digits, rate, stream = case
    receiver = DtmfReceiver(rate)
    out = []
    for i, (timestamp, seq, marker, payload) in enumerate(stream):
        out += receiver.receive(timestamp, seq, marker, payload, i * 0.001)
    out += receiver.handle_timer(1e9)
    assert "".join(d.digit for d in out) == digits


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([8000, 16000, 48000]),
    st.lists(st.integers(-32768, 32767), max_size=3000),
    st.integers(1, 500),
)
def test_inband_survives_any_pcm(rate: int, samples: list[int], chunk: int) -> None:
    detector = InbandDtmfDetector(rate)
    pcm = np.array(samples, dtype=np.int16)
    for start in range(0, len(pcm), chunk):
        for digit in detector.feed(pcm[start : start + chunk]):
            assert digit.digit in DIGITS
    detector.flush()
