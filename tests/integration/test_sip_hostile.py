"""The real daemon against hostile SIP: the torture corpus, floods, denied peers, scanners.

Every message of ``tests/golden/sip`` goes to a running gatewayd over UDP
(one fresh socket each) and over TCP (one fresh connection each). What it
must answer is derived from the corpus (``expectations.json``, see its
README): a parse error gets its status when it can be addressed and is
dropped otherwise; a message that parses gets what this user agent answers
to its method (RFC 3261 §8.2), or nothing for responses and ACKs. On a
stream a few messages behave differently by nature (framing by
Content-Length, RFC 3261 §18.3); ``OVER_STREAMS`` lists each with why.

Each message gets a fresh branch and Call-ID first, or the daemon would
rightly treat it as a retransmission of the previous one (§17.2.3) or a
merged request (§8.2.2.2). A sentinel OPTIONS after it on the same socket
bounds the wait: once the sentinel is answered, the message was handled.

Afterwards the daemon must be up, answer OPTIONS, have counted the parse
errors by reason, and have logged no error and no traceback.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridges.sip.message import SipRequest, SipResponse, parse_message
from bridges.sip.outgoing import build_ack
from tests.support.daemon import Daemon
from tests.support.sip_client import (
    TIMEOUT,
    SyncDatagram,
    SyncStream,
    error_records,
    metrics_of,
    simple_request,
    sync_datagram,
    sync_stream,
    unique,
)

pytestmark = pytest.mark.integration

Start = Callable[..., Daemon]
CORPUS = Path(__file__).resolve().parents[1] / "golden" / "sip"
EXPECTATIONS: dict[str, dict[str, Any]] = json.loads((CORPUS / "expectations.json").read_text())
NAMES = sorted(EXPECTATIONS)
#: The largest UDP payload over IPv4; bigger messages cannot be sent as one datagram.
MAX_UDP_PAYLOAD = 65507
#: How long to watch a connection that is expected to stay silent.
SILENCE = 0.3
#: Lift the per-source rate limit for the corpus sweeps (two requests per message).
NO_RATE_LIMIT = {"requests_per_second": 100_000, "burst": 100_000}

#: This gateway's final answer to a well-formed, valid out-of-dialog request by method.
ANSWER_BY_METHOD = {
    "OPTIONS": 200,
    "INVITE": 404,  # no such user (the corpus never calls the echo service)
    "CANCEL": 481,  # no INVITE to cancel
    **dict.fromkeys(("BYE", "INFO", "UPDATE", "PRACK"), 481),
    **dict.fromkeys(("REGISTER", "SUBSCRIBE", "PUBLISH", "MESSAGE", "REFER", "NOTIFY"), 405),
}
NOT_IMPLEMENTED = 501


@dataclass(frozen=True)
class OverStream:
    """What a message gets over TCP where that differs from UDP, and why."""

    statuses: tuple[int, ...]
    why: str
    #: The daemon closes the connection after answering (the stream is unusable).
    closes: bool = False
    #: The framer waits for bytes that never come: the connection stays open and silent.
    stalls: bool = False


OVER_STREAMS: dict[str, OverStream] = {
    "two-in-one-datagram.sip": OverStream(
        (405, 404), "a stream carries both messages; a datagram ends after Content-Length"
    ),
    "short-content-length.sip": OverStream(
        (405,), "the bytes after Content-Length begin a next message that never ends", stalls=True
    ),
    "content-length-beyond.sip": OverStream(
        (), "the framer waits for the rest of the announced body", stalls=True
    ),
    "no-blank-line.sip": OverStream((), "no CRLFCRLF: the header block never ends", stalls=True),
    "lf-only.sip": OverStream((), "no CRLFCRLF: the header block never ends", stalls=True),
    "tls-on-udp.sip": OverStream((), "a TLS ClientHello has no CRLFCRLF", stalls=True),
    "content-length-negative.sip": OverStream(
        (400,), "a bad Content-Length loses the message boundary", closes=True
    ),
    "content-length-text.sip": OverStream(
        (400,), "a bad Content-Length loses the message boundary", closes=True
    ),
    "body-huge.sip": OverStream((413,), "refused from the headers, body unread", closes=True),
    "headers-huge.sip": OverStream(
        (), "header block over the cap: the framer closes without answering", closes=True
    ),
}


def corpus_bytes(name: str) -> bytes:
    """A corpus message with a branch and Call-ID of its own (same body, same framing)."""
    token = unique("u").encode()
    data = (CORPUS / name).read_bytes().replace(b"z9hG4bK", b"z9hG4bK" + token)
    return re.sub(rb"(?im)^((?:call-id|i)[ \t]*:[ \t]*)(?=\S)", lambda m: m[1] + token + b".", data)


def answer_to_valid(message: SipRequest | SipResponse) -> tuple[int, ...]:
    """The final status(es) this UAS owes a message that parsed and validated."""
    if isinstance(message, SipResponse) or message.method == "ACK":
        return ()  # stray responses and ACKs are never answered
    if message.to_tag is not None:
        return (481,)  # in-dialog, but no such dialog here
    return (ANSWER_BY_METHOD.get(message.method, NOT_IMPLEMENTED),)


def expected_over_udp(name: str) -> tuple[int, ...]:
    """Final statuses for a corpus message sent as one datagram."""
    entry = EXPECTATIONS[name]
    if entry["outcome"] == "error":
        return (entry["status"],) if entry["can_answer"] else ()
    if entry["validate"] is not None:
        return (entry["validate"],)
    return answer_to_valid(parse_message((CORPUS / name).read_bytes()))


def status_of(frame: bytes) -> int | None:
    """The status code of a response frame (read raw: our answer to garbage may not parse)."""
    match = re.match(rb"SIP/2\.0 (\d{3}) ", frame)
    return int(match[1]) if match else None


def final_statuses(frames: list[bytes]) -> tuple[int, ...]:
    """Final statuses in order, retransmissions (identical bytes) once."""
    out: list[int] = []
    seen: set[bytes] = set()
    for frame in frames:
        status = status_of(frame)
        if status is not None and status >= 200 and frame not in seen:
            out.append(status)
        seen.add(frame)
    return tuple(out)


def sentinel(sent_by: str, transport: str) -> tuple[bytes, bytes]:
    """An OPTIONS that marks the end of a message's answers, and its Call-ID."""
    request = simple_request("OPTIONS", transport, sent_by, call_id=unique("sentinel") + "@test")
    return bytes(request), request.call_id.encode()


def exchange_udp(port: int, data: bytes) -> tuple[int, ...]:
    """Send ``data`` then a sentinel from a fresh socket; final statuses before the sentinel's."""
    with sync_datagram(port) as dgram:
        dgram.send(data)
        marker, call_id = sentinel(dgram.sent_by, "udp")
        dgram.send(marker)
        frames: list[bytes] = []
        deadline = time.monotonic() + TIMEOUT
        while True:
            frame = dgram.receive(max(0.01, deadline - time.monotonic()))
            if call_id in frame:
                return final_statuses(frames)
            frames.append(frame)


def exchange_tcp(port: int, data: bytes, expect: OverStream | None) -> tuple[tuple[int, ...], bool]:
    """Send ``data`` on a fresh connection; final statuses and whether the daemon closed it."""
    with sync_stream(port) as stream:
        stream.sock.sendall(data)
        if expect is not None and (expect.stalls or expect.closes):
            return read_stream(stream, None, SILENCE if expect.stalls else TIMEOUT)
        marker, call_id = sentinel(stream.sent_by, "tcp")
        try:
            stream.sock.sendall(marker)
        except ConnectionError:
            return read_stream(stream, None, TIMEOUT)
        return read_stream(stream, call_id, TIMEOUT)


def read_stream(
    stream: SyncStream, sentinel_id: bytes | None, wait: float
) -> tuple[tuple[int, ...], bool]:
    """Frames until the sentinel's answer, the daemon's close, or ``wait`` seconds."""
    frames: list[bytes] = []
    deadline = time.monotonic() + wait
    while True:
        try:
            frame = stream.next_frame(max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            return final_statuses(frames), False
        except ConnectionError:
            return final_statuses(frames), True
        if frame is None:
            continue
        if sentinel_id is not None and sentinel_id in frame:
            return final_statuses(frames), False
        frames.append(frame)


def parse_error_counts(daemon: Daemon) -> dict[str, int]:
    """``gatewayd_sip_parse_errors_total`` by reason."""
    prefix = 'gatewayd_sip_parse_errors_total{reason="'
    return {
        key[len(prefix) : -2]: int(value)
        for key, value in metrics_of(daemon).items()
        if key.startswith(prefix) and value
    }


def assert_still_healthy(daemon: Daemon) -> None:
    """Up, /healthz 200, OPTIONS answered, nothing logged at ERROR, no traceback."""
    assert daemon.proc.poll() is None, daemon.logs()
    assert daemon.http("/healthz")[0] == 200
    with sync_datagram(daemon.sip_port) as dgram:
        dgram.send(simple_request("OPTIONS", "udp", dgram.sent_by))
        assert status_of(dgram.receive()) == 200
    assert error_records(daemon) == []
    assert "Traceback" not in daemon.logs()


def test_every_corpus_message_is_covered() -> None:
    assert set(OVER_STREAMS) <= set(NAMES)
    assert len(NAMES) >= 30
    assert any(expected_over_udp(n) == () for n in NAMES)
    assert any(expected_over_udp(n) != () for n in NAMES)


def test_corpus_over_udp(gatewayd: Start) -> None:
    daemon = gatewayd({"sip": {"limits": NO_RATE_LIMIT}})
    mismatches: list[str] = []
    expected_errors: Counter[str] = Counter()
    for name in NAMES:
        data = corpus_bytes(name)
        if len(data) > MAX_UDP_PAYLOAD:
            with sync_datagram(daemon.sip_port) as dgram, pytest.raises(OSError, match="too long"):
                dgram.send(data)
            continue
        entry = EXPECTATIONS[name]
        if entry["outcome"] == "error":
            expected_errors[entry["reason"]] += 1
        want = expected_over_udp(name)
        try:
            got = exchange_udp(daemon.sip_port, data)
        except TimeoutError:
            mismatches.append(f"{name}: the sentinel after it was not answered")
            continue
        if got != want:
            mismatches.append(f"{name}: expected {want or 'no answer'}, got {got or 'none'}")
    assert mismatches == []
    assert parse_error_counts(daemon) == dict(expected_errors)
    assert_still_healthy(daemon)


def test_corpus_over_tcp(gatewayd: Start) -> None:
    daemon = gatewayd({"sip": {"limits": NO_RATE_LIMIT}})
    mismatches: list[str] = []
    expected_errors: Counter[str] = Counter()
    for name in NAMES:
        special = OVER_STREAMS.get(name)
        entry = EXPECTATIONS[name]
        if entry["outcome"] == "error" and not (special and special.stalls):
            expected_errors[entry["reason"]] += 1
        want = special.statuses if special else expected_over_udp(name)
        want_closed = special.closes if special else False
        try:
            got, closed = exchange_tcp(daemon.sip_port, corpus_bytes(name), special)
        except TimeoutError:
            mismatches.append(f"{name}: the sentinel after it was not answered")
            continue
        if (got, closed) != (want, want_closed):
            mismatches.append(
                f"{name}: expected {want or 'no answer'}{' and close' if want_closed else ''}, "
                f"got {got or 'none'}{' and close' if closed else ''}"
            )
    assert mismatches == []
    assert parse_error_counts(daemon) == dict(expected_errors)
    assert_still_healthy(daemon)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_unparsable_request_is_answered_at_once(gatewayd: Start, transport: str) -> None:
    daemon = gatewayd()  # nothing else in flight: no later message or timer flushes the queue
    data = corpus_bytes("bad-version.sip")
    if transport == "udp":
        with sync_datagram(daemon.sip_port) as dgram:
            dgram.send(data)
            answer = dgram.receive(2.0)
    else:
        with sync_stream(daemon.sip_port) as stream:
            stream.sock.sendall(data)
            frame = stream.next_frame(2.0)
            assert frame is not None
            answer = frame
    assert status_of(answer) == 505


# --- floods, access lists, scanners -----------------------------------------------------------


def loopback_alias_or_skip(address: str) -> None:
    """Skip unless this machine can send from ``address`` (any 127/8 works on Linux)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((address, 0))
    except OSError:
        pytest.skip(f"cannot bind {address} on this machine")


def test_flood_from_one_source_is_rate_limited_while_others_are_served(gatewayd: Start) -> None:
    rate, burst, flood = 10, 20, 500
    loopback_alias_or_skip("127.0.0.2")
    loopback_alias_or_skip("127.0.0.3")
    daemon = gatewayd({"sip": {"limits": {"requests_per_second": rate, "burst": burst}}})
    with (
        sync_datagram(daemon.sip_port, source="127.0.0.2") as flooder,
        sync_datagram(daemon.sip_port, source="127.0.0.3") as bystander,
    ):
        started = time.monotonic()
        for i in range(flood):
            flooder.send(simple_request("OPTIONS", "udp", flooder.sent_by))
            if i % 50 == 49:
                time.sleep(0.002)  # batches: the daemon's socket buffer must not overflow
        sent_in = time.monotonic() - started
        bystander.send(simple_request("OPTIONS", "udp", bystander.sent_by))
        assert status_of(bystander.receive()) == 200, "another source is still served"
        answered = [r for r in flooder.responses_until_quiet(0.5) if r.status == 200]
    # The bucket refills while the flood is handled (a busy machine may stretch that).
    allowed = burst + rate * (sent_in + 1.0)
    assert burst <= len(answered) <= allowed, (len(answered), sent_in)
    samples = metrics_of(daemon)
    rejected = samples['gatewayd_sip_rejected_total{reason="rate_limit"}']
    # What reached the daemon (the kernel may drop datagrams from a full buffer), less the bystander's.
    handled = samples['gatewayd_sip_requests_total{method="OPTIONS"}'] - 1
    assert rejected == handled - len(answered)
    assert rejected >= flood // 2, "most of the flood was handled and refused"
    assert_still_healthy(daemon)


def test_denied_address_gets_nothing(gatewayd: Start) -> None:
    loopback_alias_or_skip("127.0.0.4")
    daemon = gatewayd({"sip": {"access": {"deny": ["127.0.0.4/32"]}}})
    with (
        sync_datagram(daemon.sip_port, source="127.0.0.4") as denied,
        sync_datagram(daemon.sip_port) as allowed,
        sync_stream(daemon.sip_port, source="127.0.0.4") as denied_stream,
    ):
        denied.send(simple_request("OPTIONS", "udp", denied.sent_by))
        denied_stream.sock.sendall(denied_stream.options())
        # Handled in order: once the allowed peer is answered, the denied one was dropped.
        allowed.send(simple_request("OPTIONS", "udp", allowed.sent_by))
        assert status_of(allowed.receive()) == 200
        with pytest.raises(TimeoutError):
            denied.receive(SILENCE)
        with pytest.raises(TimeoutError):
            denied_stream.next_frame(SILENCE)
    assert metrics_of(daemon)['gatewayd_sip_rejected_total{reason="access_list"}'] == 2
    assert_still_healthy(daemon)


def anonymised(response: SipResponse, request: SipRequest, user: str) -> list[tuple[str, str]]:
    """Response headers with what differs per request (tags, branch, Call-ID, user) masked."""
    masks = {
        request.branch or "": "BRANCH",
        request.call_id: "CALLID",
        request.from_tag or "": "FROMTAG",
        f"sip:{user}@": "sip:USER@",
    }
    out: list[tuple[str, str]] = []
    for _key, name, raw in response.headers.entries:
        value = raw
        for secret, mask in masks.items():
            value = value.replace(secret, mask)
        if name.lower() == "to" and response.to_tag:
            value = value.replace(response.to_tag, "TOTAG")
        out.append((name, value))
    return out


def ask(dgram: SyncDatagram, method: str, user: str) -> tuple[SipRequest, SipResponse]:
    """One transaction from ``dgram``; a failed INVITE is ACKed like a real UA would."""
    request = simple_request(method, "udp", dgram.sent_by, user=user)
    dgram.send(request)
    deadline = time.monotonic() + TIMEOUT
    while True:
        message = parse_message(dgram.receive(max(0.01, deadline - time.monotonic())))
        if (
            isinstance(message, SipResponse)
            and message.branch == request.branch
            and message.status >= 200
        ):
            break
    if method == "INVITE" and message.status >= 300:
        dgram.send(build_ack(request, message))
    return request, message


@pytest.mark.parametrize(("method", "status"), [("INVITE", 404), ("OPTIONS", 200)])
def test_scanners_cannot_tell_users_apart(gatewayd: Start, method: str, status: int) -> None:
    daemon = gatewayd()
    with sync_datagram(daemon.sip_port) as dgram:
        answers = {user: ask(dgram, method, user) for user in ("100", "nobody", "admin")}
    shapes = {
        user: (response.status, response.reason_phrase, response.body)
        for user, (_req, response) in answers.items()
    }
    assert set(shapes.values()) == {(status, shapes["100"][1], b"")}
    headers = {user: anonymised(resp, req, user) for user, (req, resp) in answers.items()}
    assert headers["100"] == headers["nobody"] == headers["admin"]


def test_silent_half_messages_do_not_hold_connections_forever(gatewayd: Start) -> None:
    daemon = gatewayd({"sip": {"limits": {"max_connections": 2, "idle_timeout": 1}}})
    with sync_stream(daemon.sip_port) as first, sync_stream(daemon.sip_port) as second:
        for stream in (first, second):
            stream.sock.sendall(stream.options()[:60])  # and then nothing
        assert first.closed_by_peer(TIMEOUT) and second.closed_by_peer(TIMEOUT)
    with sync_stream(daemon.sip_port) as fresh:
        fresh.sock.sendall(fresh.options())
        frame = fresh.next_frame()
        assert frame is not None and status_of(frame) == 200
