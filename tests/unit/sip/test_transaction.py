"""RFC 3261 §17 transaction timers and transitions, with a fake clock and no sockets."""

from __future__ import annotations

import itertools

import pytest

from bridges.sip.flow import Flow
from bridges.sip.message import SipRequest, SipResponse, build_response, parse_message
from bridges.sip.outgoing import build_request, via_value
from bridges.sip.transaction import (
    AckTimeout,
    CancelReceived,
    ClientTransaction,
    Event,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    TimerConfig,
    TransactionError,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    TxState,
)
from gateway.clock import FakeClock

UDP = Flow("udp", ("127.0.0.1", 5060), ("127.0.0.1", 5070))
TCP = Flow("tcp", ("127.0.0.1", 5060), ("127.0.0.1", 40000), conn_id=7)
T1 = 0.5


def request(
    method: str = "INVITE",
    branch: str = "z9hG4bKabc",
    *,
    to_tag: str | None = None,
    cseq: int = 1,
    call_id: str = "call-1",
    transport: str = "udp",
) -> SipRequest:
    to = "<sip:bob@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    return build_request(
        method,
        "sip:bob@127.0.0.1",
        via=via_value(transport, "127.0.0.1", 5070, branch),
        from_value="<sip:alice@127.0.0.1>;tag=a1",
        to_value=to,
        call_id=call_id,
        cseq=cseq,
    )


def wire(msg: SipRequest | SipResponse) -> SipRequest | SipResponse:
    """Through bytes and back, as the transport would deliver it."""
    return parse_message(bytes(msg))


def as_request(msg: SipRequest | SipResponse) -> SipRequest:
    assert isinstance(msg, SipRequest)
    return msg


def as_response(msg: SipRequest | SipResponse) -> SipResponse:
    assert isinstance(msg, SipResponse)
    return msg


def state(tx: ClientTransaction | ServerTransaction) -> TxState:
    """The state, read through a call so mypy does not narrow across steps."""
    return tx.state


def events(layer: TransactionLayer) -> list[Event]:
    out = []
    while (ev := layer.next_event()) is not None:
        out.append(ev)
    return out


def run_until(layer: TransactionLayer, clock: FakeClock, until: float) -> list[tuple[float, bytes]]:
    """Fire every timer up to ``until``; returns (time, bytes) of what was sent."""
    sent: list[tuple[float, bytes]] = []
    while (deadline := layer.next_deadline()) is not None and deadline <= until:
        clock.set(deadline)
        layer.handle_timer(clock.monotonic())
        sent += [(clock.monotonic(), data) for data, _ in layer.datagrams_to_send()]
    clock.set(until)
    return sent


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=0.0)


@pytest.fixture
def layer() -> TransactionLayer:
    return TransactionLayer(TimerConfig(t1=T1, t2=4.0, t4=5.0))


def test_non_invite_client_retransmits_with_timer_e_and_times_out_with_f(
    layer: TransactionLayer, clock: FakeClock
) -> None:
    tx = layer.send_request(request("OPTIONS"), UDP, clock.monotonic())
    assert len(layer.datagrams_to_send()) == 1
    sent = run_until(layer, clock, 40.0)
    times = [t for t, _ in sent]
    # 0.5, 1.5, 3.5, 7.5, then every T2=4 s until Timer F at 64*T1 = 32 s
    assert times[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]
    assert all(b - a == 4.0 for a, b in itertools.pairwise(times[3:]))
    assert times[-1] < 32.0
    evs = events(layer)
    assert any(isinstance(e, TransactionTimeout) and e.tx is tx for e in evs)
    assert state(tx) is TxState.TERMINATED
    assert layer.active == 0


def test_non_invite_client_provisional_keeps_e_at_t2_then_final_waits_k(
    layer: TransactionLayer, clock: FakeClock
) -> None:
    req = request("REGISTER")
    tx = layer.send_request(req, UDP, 0.0)
    layer.datagrams_to_send()
    layer.receive_response(as_response(wire(build_response(req, 100))), UDP, 0.2)
    assert state(tx) is TxState.PROCEEDING
    sent = run_until(layer, clock, 9.0)
    assert [t for t, _ in sent] == [0.5, 4.5, 8.5]  # Timer E at T2 once proceeding
    layer.receive_response(as_response(wire(build_response(req, 200))), UDP, 9.0)
    assert state(tx) is TxState.COMPLETED
    statuses = [e.response.status for e in events(layer) if isinstance(e, ResponseReceived)]
    assert statuses == [100, 200]
    assert run_until(layer, clock, 13.9) == []
    assert state(tx) is TxState.COMPLETED  # Timer K = T4 = 5 s after the final answer
    run_until(layer, clock, 14.1)
    assert state(tx) is TxState.TERMINATED


def test_reliable_transport_never_retransmits(layer: TransactionLayer, clock: FakeClock) -> None:
    tx = layer.send_request(request("INVITE", transport="tcp"), TCP, 0.0)
    layer.datagrams_to_send()
    assert run_until(layer, clock, 31.9) == []
    run_until(layer, clock, 32.1)
    assert state(tx) is TxState.TERMINATED
    assert any(isinstance(e, TransactionTimeout) for e in events(layer))


def test_invite_client_timer_a_doubles_without_cap(
    layer: TransactionLayer, clock: FakeClock
) -> None:
    layer.send_request(request(), UDP, 0.0)
    layer.datagrams_to_send()
    times = [t for t, _ in run_until(layer, clock, 40.0)]
    assert times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]


def test_invite_client_error_response_is_acked_and_ack_repeated(
    layer: TransactionLayer, clock: FakeClock
) -> None:
    inv = request()
    tx = layer.send_request(inv, UDP, 0.0)
    layer.datagrams_to_send()
    busy = as_response(wire(build_response(inv, 486, to_tag="b1")))
    layer.receive_response(busy, UDP, 0.3)
    acks = [as_request(parse_message(d)) for d, _ in layer.datagrams_to_send()]
    assert [a.method for a in acks] == ["ACK"]
    ack = acks[0]
    assert ack.branch == inv.branch and ack.cseq_number == 1 and ack.cseq_method == "ACK"
    assert ack.to_tag == "b1" and ack.uri == inv.uri
    assert state(tx) is TxState.COMPLETED
    layer.receive_response(busy, UDP, 1.0)  # retransmitted 486
    assert [as_request(parse_message(d)).method for d, _ in layer.datagrams_to_send()] == ["ACK"]
    assert [e.response.status for e in events(layer) if isinstance(e, ResponseReceived)] == [486]
    run_until(layer, clock, 32.4)
    assert state(tx) is TxState.TERMINATED  # Timer D = 32 s


def test_invite_client_2xx_is_accepted_and_retransmissions_reach_the_tu(
    layer: TransactionLayer, clock: FakeClock
) -> None:
    inv = request()
    tx = layer.send_request(inv, UDP, 0.0)
    layer.datagrams_to_send()
    ok = as_response(wire(build_response(inv, 200, to_tag="b1")))
    layer.receive_response(ok, UDP, 0.1)
    assert state(tx) is TxState.ACCEPTED
    assert layer.datagrams_to_send() == []  # the TU sends the ACK for a 2xx
    layer.receive_response(ok, UDP, 0.6)
    got = [e for e in events(layer) if isinstance(e, ResponseReceived)]
    assert len(got) == 2 and all(e.tx is tx for e in got)
    run_until(layer, clock, 32.2)  # Timer M = 64*T1
    assert state(tx) is TxState.TERMINATED
    layer.receive_response(ok, UDP, 33.0)
    late = [e for e in events(layer) if isinstance(e, ResponseReceived)]
    assert len(late) == 1 and late[0].tx is None


def test_invite_server_answers_100_and_repeats_the_last_provisional(
    layer: TransactionLayer, clock: FakeClock
) -> None:
    inv = request()
    layer.receive_request(as_request(wire(inv)), UDP, 0.0)
    sent = [as_response(parse_message(d)) for d, _ in layer.datagrams_to_send()]
    assert [r.status for r in sent] == [100]
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived) and ev.tx is not None
    layer.send_response(ev.tx, build_response(ev.request, 180, to_tag="t"), 0.1)
    layer.datagrams_to_send()
    layer.receive_request(as_request(wire(inv)), UDP, 0.5)  # retransmitted INVITE
    again = [as_response(parse_message(d)).status for d, _ in layer.datagrams_to_send()]
    assert again == [180]
    assert events(layer) == []  # nothing new for the TU


def test_invite_server_error_retransmitted_until_ack(
    layer: TransactionLayer, clock: FakeClock
) -> None:
    inv = request()
    layer.receive_request(as_request(wire(inv)), UDP, 0.0)
    layer.datagrams_to_send()
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived) and ev.tx is not None
    layer.send_response(ev.tx, build_response(ev.request, 486, to_tag="t"), 0.0)
    layer.datagrams_to_send()
    times = [t for t, _ in run_until(layer, clock, 8.0)]
    assert times == [0.5, 1.5, 3.5, 7.5]  # Timer G doubling, capped at T2
    ack = build_request(
        "ACK",
        "sip:bob@127.0.0.1",
        via=via_value("udp", "127.0.0.1", 5070, "z9hG4bKabc"),
        from_value="<sip:alice@127.0.0.1>;tag=a1",
        to_value="<sip:bob@127.0.0.1>;tag=t",
        call_id="call-1",
        cseq=1,
    )
    layer.receive_request(as_request(wire(ack)), UDP, 8.0)
    assert state(ev.tx) is TxState.CONFIRMED
    assert events(layer) == []  # the ACK to an error is absorbed
    assert run_until(layer, clock, 12.9) == []
    run_until(layer, clock, 13.1)  # Timer I = T4
    assert state(ev.tx) is TxState.TERMINATED


def test_invite_server_error_without_ack_ends_at_timer_h(
    layer: TransactionLayer, clock: FakeClock
) -> None:
    layer.receive_request(as_request(wire(request())), UDP, 0.0)
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived) and ev.tx is not None
    layer.send_response(ev.tx, build_response(ev.request, 603, to_tag="t"), 0.0)
    run_until(layer, clock, 31.9)
    assert state(ev.tx) is TxState.COMPLETED
    run_until(layer, clock, 32.1)
    assert state(ev.tx) is TxState.TERMINATED
    assert layer.active == 0


def test_uas_2xx_is_retransmitted_until_the_ack(layer: TransactionLayer, clock: FakeClock) -> None:
    layer.receive_request(as_request(wire(request())), UDP, 0.0)
    layer.datagrams_to_send()
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived) and ev.tx is not None
    layer.send_response(ev.tx, build_response(ev.request, 200, to_tag="t"), 0.0)
    layer.datagrams_to_send()
    sent = run_until(layer, clock, 4.0)
    assert [t for t, _ in sent] == [0.5, 1.5, 3.5]
    assert all(as_response(parse_message(d)).status == 200 for _, d in sent)
    # a retransmitted INVITE in Accepted is absorbed, not answered with 100
    layer.receive_request(as_request(wire(request())), UDP, 4.0)
    assert layer.datagrams_to_send() == []
    ack = request("ACK", branch="z9hG4bKnew", to_tag="t")
    layer.receive_request(as_request(wire(ack)), UDP, 4.0)
    acks = [e for e in events(layer) if isinstance(e, RequestReceived)]
    assert len(acks) == 1 and acks[0].tx is None and acks[0].request.method == "ACK"
    assert [t for t, _ in run_until(layer, clock, 40.0)] == []  # retransmission stopped
    assert not any(isinstance(e, AckTimeout) for e in events(layer))


def test_uas_2xx_without_ack_gives_up_and_asks_for_bye(
    layer: TransactionLayer, clock: FakeClock
) -> None:
    layer.receive_request(as_request(wire(request())), UDP, 0.0)
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived) and ev.tx is not None
    layer.send_response(ev.tx, build_response(ev.request, 200, to_tag="t"), 0.0)
    layer.datagrams_to_send()
    sent = run_until(layer, clock, 40.0)
    assert max(t for t, _ in sent) < 32.0
    timeouts = [e for e in events(layer) if isinstance(e, AckTimeout)]
    assert timeouts == [AckTimeout("call-1", 1)]
    assert layer.active == 0  # Timer L ended the transaction too


def test_cancel_matches_the_invite(layer: TransactionLayer, clock: FakeClock) -> None:
    layer.receive_request(as_request(wire(request())), UDP, 0.0)
    layer.datagrams_to_send()
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived) and ev.tx is not None
    cancel = request("CANCEL")
    layer.receive_request(as_request(wire(cancel)), UDP, 1.0)
    answers = [as_response(parse_message(d)) for d, _ in layer.datagrams_to_send()]
    assert [(r.status, r.cseq_method) for r in answers] == [(200, "CANCEL")]
    (cancelled,) = events(layer)
    assert isinstance(cancelled, CancelReceived) and cancelled.tx is ev.tx
    layer.send_response(ev.tx, build_response(ev.request, 487, to_tag="t"), 1.0)
    assert state(ev.tx) is TxState.COMPLETED


def test_cancel_without_invite_gets_481(layer: TransactionLayer) -> None:
    layer.receive_request(as_request(wire(request("CANCEL", branch="z9hG4bKnone"))), UDP, 0.0)
    (answer,) = [as_response(parse_message(d)) for d, _ in layer.datagrams_to_send()]
    assert answer.status == 481
    assert events(layer) == []


def test_merged_request_gets_482(layer: TransactionLayer) -> None:
    layer.receive_request(as_request(wire(request(branch="z9hG4bKone"))), UDP, 0.0)
    layer.datagrams_to_send()
    events(layer)
    layer.receive_request(as_request(wire(request(branch="z9hG4bKtwo"))), UDP, 0.1)
    (answer,) = [as_response(parse_message(d)) for d, _ in layer.datagrams_to_send()]
    assert answer.status == 482
    assert events(layer) == []


def test_non_invite_server_repeats_final_response_then_ends_with_j(
    layer: TransactionLayer, clock: FakeClock
) -> None:
    bye = request("BYE", to_tag="t", cseq=2)
    layer.receive_request(as_request(wire(bye)), UDP, 0.0)
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived) and ev.tx is not None
    assert layer.datagrams_to_send() == []  # no automatic 100 for non-INVITE
    layer.send_response(ev.tx, build_response(ev.request, 200), 0.0)
    layer.datagrams_to_send()
    layer.receive_request(as_request(wire(bye)), UDP, 1.0)
    assert [as_response(parse_message(d)).status for d, _ in layer.datagrams_to_send()] == [200]
    with pytest.raises(TransactionError):
        layer.send_response(ev.tx, build_response(ev.request, 500), 1.0)
    run_until(layer, clock, 33.0)
    assert state(ev.tx) is TxState.TERMINATED
    assert any(isinstance(e, TransactionTerminated) for e in events(layer))


def test_no_transaction_or_timer_is_left_after_everything_fires(
    layer: TransactionLayer, clock: FakeClock
) -> None:
    for i in range(50):
        req = request("OPTIONS", branch=f"z9hG4bK{i}", call_id=f"c{i}")
        tx: ClientTransaction = layer.send_request(req, UDP, clock.monotonic())
        if i % 2:
            layer.receive_response(as_response(wire(build_response(req, 200))), UDP, 0.1)
        assert tx.request is req
        layer.receive_request(
            as_request(wire(request(branch=f"z9hG4bKs{i}", call_id=f"s{i}"))), UDP, 0.1
        )
    for ev in events(layer):
        if isinstance(ev, RequestReceived) and ev.tx is not None:
            layer.send_response(ev.tx, build_response(ev.request, 200, to_tag="x"), 0.2)
    run_until(layer, clock, 200.0)
    assert layer.active == 0
    assert layer.next_deadline() is None
