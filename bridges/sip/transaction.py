"""The four SIP transaction state machines of RFC 3261 §17, sans-IO.

``TransactionLayer`` is fed parsed messages and the time and gives back
datagrams to send (``datagrams_to_send``), events for the transaction user
(``next_event``) and the next deadline at which ``handle_timer`` must run
(``next_deadline``). The asyncio side (``endpoint.py``) arms one timer and
owns the sockets; every timer here is tested with a fake clock.

Beyond RFC 3261:
- RFC 6026: INVITE transactions have an *Accepted* state after a 2xx
  (Timer L on the server, Timer M on the client), so retransmitted INVITEs
  are absorbed and retransmitted 2xx responses reach the TU, which ACKs them.
- The UAS's 2xx retransmission until ACK (§13.3.1.4) lives here too
  (``_AckWait``), because it is timers and retransmission all the same; when
  it gives up, ``AckTimeout`` tells the TU to send BYE.
- Merged-request detection (§8.2.2.2) answers 482.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from bridges.sip.flow import Flow
from bridges.sip.message import SipRequest, SipResponse, build_response
from bridges.sip.outgoing import MAGIC_COOKIE, build_ack


class TxState(enum.Enum):
    """States of all four machines (each uses a subset)."""

    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(frozen=True)
class TimerConfig:
    """T1, T2, T4 of RFC 3261 §17 (seconds)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


# --- events for the transaction user -------------------------------------------------
@dataclass(frozen=True)
class RequestReceived:
    """A new request; answer it with ``TransactionLayer.send_response(tx, ...)``.
    ``tx`` is None for an ACK to a 2xx (it belongs to no transaction)."""

    request: SipRequest
    tx: ServerTransaction | None
    flow: Flow


@dataclass(frozen=True)
class ResponseReceived:
    """A response. ``tx`` is None for a 2xx retransmission after the INVITE
    transaction ended (RFC 6026 §7.1: the TU re-sends its ACK)."""

    response: SipResponse
    tx: ClientTransaction | None
    flow: Flow


@dataclass(frozen=True)
class CancelReceived:
    """A CANCEL matched this INVITE server transaction; the layer has answered
    the CANCEL with 200. The TU should answer the INVITE with 487."""

    tx: ServerTransaction


@dataclass(frozen=True)
class TransactionTimeout:
    """Timer B or F fired: no final response (the TU treats it as 408)."""

    tx: ClientTransaction


@dataclass(frozen=True)
class AckTimeout:
    """The UAS sent 2xx for ``call_id`` but no ACK came within 64*T1: send BYE."""

    call_id: str
    cseq: int


@dataclass(frozen=True)
class TransactionTerminated:
    """A transaction has ended and been forgotten."""

    tx: ClientTransaction | ServerTransaction


Event = (
    RequestReceived
    | ResponseReceived
    | CancelReceived
    | TransactionTimeout
    | AckTimeout
    | TransactionTerminated
)


# --- transactions ------------------------------------------------------------------------
@dataclass(eq=False)
class _Tx:
    key: Hashable
    request: SipRequest
    flow: Flow
    state: TxState
    deadlines: dict[str, float] = field(default_factory=dict)
    interval: float = 0.0

    @property
    def is_invite(self) -> bool:
        return self.request.method == "INVITE"


@dataclass(eq=False)
class ClientTransaction(_Tx):
    """A request we sent (INVITE client or non-INVITE client transaction)."""

    wire: bytes = b""
    ack: bytes | None = None
    final: SipResponse | None = None
    #: Free slot for the TU (e.g., the call or registration it belongs to).
    owner: Any = None


@dataclass(eq=False)
class ServerTransaction(_Tx):
    """A request we received (INVITE server or non-INVITE server transaction)."""

    last_response: bytes | None = None
    last_status: int = 0
    merge_key: tuple[str, str, int, str] | None = None
    #: The To tag the TU chose for its answers (also used on the 200 to a CANCEL).
    local_tag: str | None = None
    owner: Any = None


@dataclass(eq=False)
class _AckWait:
    """2xx to an INVITE retransmitted until the ACK arrives (§13.3.1.4)."""

    call_id: str
    cseq: int
    wire: bytes
    flow: Flow
    interval: float
    next_at: float
    give_up_at: float


class TransactionError(Exception):
    """The TU used a transaction wrongly (e.g., a response after the final one)."""


class TransactionLayer:
    """All transactions of one SIP endpoint."""

    def __init__(self, timers: TimerConfig | None = None) -> None:
        self.timers = timers or TimerConfig()
        self._clients: dict[Hashable, ClientTransaction] = {}
        self._servers: dict[Hashable, ServerTransaction] = {}
        self._merge: dict[tuple[str, str, int, str], ServerTransaction] = {}
        self._ack_waits: dict[tuple[str, int], _AckWait] = {}
        self._out: deque[tuple[bytes, Flow]] = deque()
        self._events: deque[Event] = deque()
        # (deadline, seq, owner) heap; stale entries are skipped lazily.
        self._heap: list[tuple[float, int, object]] = []
        self._seq = itertools.count()

    # --- output -----------------------------------------------------------------------------
    def datagrams_to_send(self) -> list[tuple[bytes, Flow]]:
        """Bytes to write and the flow to write them on, in order."""
        out = list(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | None:
        """The next event for the TU, or None."""
        return self._events.popleft() if self._events else None

    def next_deadline(self) -> float | None:
        """When ``handle_timer`` must run next (None: no timer armed)."""
        while self._heap:
            when, _seq, owner = self._heap[0]
            if self._is_live(owner, when):
                return when
            heapq.heappop(self._heap)
        return None

    @property
    def active(self) -> int:
        """Transactions not yet terminated."""
        return len(self._clients) + len(self._servers)

    # --- incoming -----------------------------------------------------------------------------
    def receive_request(self, request: SipRequest, flow: Flow, now: float) -> None:
        """A request arrived from the transport."""
        method = request.method
        if method == "ACK":
            self._receive_ack(request, flow, now)
            return
        key = _server_key(request)
        tx = self._servers.get(key)
        if tx is not None:
            # A retransmission: answer with the last response, nothing for the TU.
            if tx.last_response is not None and tx.state is not TxState.ACCEPTED:
                self._out.append((tx.last_response, tx.flow))
            return
        merge_key = _merge_key(request)
        if merge_key is not None:
            other = self._merge.get(merge_key)
            if other is not None and other.key != key:
                self._out.append((bytes(build_response(request, 482)), flow))
                return
        if method == "CANCEL":
            self._receive_cancel(request, flow, now)
            return
        state = TxState.PROCEEDING if method == "INVITE" else TxState.TRYING
        tx = ServerTransaction(key, request, flow, state, merge_key=merge_key)
        self._servers[key] = tx
        if merge_key is not None:
            self._merge[merge_key] = tx
        if method == "INVITE":
            # §17.2.1: answer 100 at once so the client stops retransmitting.
            self._send_server_response(tx, build_response(request, 100), now)
        self._events.append(RequestReceived(request, tx, flow))

    def _receive_cancel(self, cancel: SipRequest, flow: Flow, now: float) -> None:
        invite_key = _server_key(cancel, method="INVITE")
        invite = self._servers.get(invite_key)
        tx = ServerTransaction(_server_key(cancel), cancel, flow, TxState.TRYING)
        self._servers[tx.key] = tx
        if invite is None or invite.state is not TxState.PROCEEDING:
            # §9.2: no matching transaction, or it already has its final answer.
            status = 481 if invite is None else 200
            self._send_server_response(tx, build_response(cancel, status), now)
            return
        self._send_server_response(tx, build_response(cancel, 200, to_tag=invite.local_tag), now)
        self._events.append(CancelReceived(invite))

    def _receive_ack(self, ack: SipRequest, flow: Flow, now: float) -> None:
        invite = self._servers.get(_server_key(ack, method="INVITE"))
        if invite is not None and invite.state in (TxState.COMPLETED, TxState.CONFIRMED):
            # ACK to our non-2xx final response: absorbed by the transaction.
            if invite.state is TxState.COMPLETED:
                invite.state = TxState.CONFIRMED
                invite.deadlines.pop("G", None)
                invite.deadlines.pop("H", None)
                self._arm(invite, "I", now + (0.0 if flow.reliable else self.timers.t4))
            return
        # ACK to a 2xx: its own transaction, delivered to the TU (dialog).
        self._ack_waits.pop((ack.call_id, ack.cseq_number), None)
        self._events.append(RequestReceived(ack, None, flow))

    def receive_response(self, response: SipResponse, flow: Flow, now: float) -> None:
        """A response arrived from the transport."""
        tx = self._clients.get(_client_key(response))
        if tx is None:
            if 200 <= response.status < 300 and response.cseq_method == "INVITE":
                self._events.append(ResponseReceived(response, None, flow))
            return  # a stray response is dropped (§18.1.2)
        status = response.status
        if tx.is_invite:
            self._ict_response(tx, response, flow, now)
        elif tx.state in (TxState.TRYING, TxState.PROCEEDING):
            if status < 200:
                tx.state = TxState.PROCEEDING
            else:
                tx.state = TxState.COMPLETED
                tx.final = response
                tx.deadlines.pop("E", None)
                tx.deadlines.pop("F", None)
                self._arm(tx, "K", now + (0.0 if tx.flow.reliable else self.timers.t4))
            self._events.append(ResponseReceived(response, tx, flow))

    def _ict_response(
        self, tx: ClientTransaction, response: SipResponse, flow: Flow, now: float
    ) -> None:
        status = response.status
        if tx.state in (TxState.CALLING, TxState.PROCEEDING):
            tx.deadlines.pop("A", None)
            if status < 200:
                tx.state = TxState.PROCEEDING
            elif status < 300:
                tx.state = TxState.ACCEPTED
                tx.final = response
                tx.deadlines.pop("B", None)
                self._arm(tx, "M", now + 64 * self.timers.t1)
            else:
                tx.state = TxState.COMPLETED
                tx.final = response
                tx.deadlines.pop("B", None)
                tx.ack = bytes(build_ack(tx.request, response))
                self._out.append((tx.ack, tx.flow))
                self._arm(tx, "D", now + (0.0 if tx.flow.reliable else 32.0))
            self._events.append(ResponseReceived(response, tx, flow))
        elif tx.state is TxState.ACCEPTED and 200 <= status < 300:
            self._events.append(ResponseReceived(response, tx, flow))  # TU re-ACKs
        elif tx.state is TxState.COMPLETED and status >= 300 and tx.ack is not None:
            self._out.append((tx.ack, tx.flow))

    # --- outgoing -----------------------------------------------------------------------------
    def send_request(
        self, request: SipRequest, flow: Flow, now: float, owner: Any = None
    ) -> ClientTransaction:
        """Start a client transaction; the request must carry its Via branch.
        ACK for a 2xx is not a transaction: use ``send_stateless``."""
        if request.method == "ACK":
            raise TransactionError("an ACK to a 2xx is sent with send_stateless()")
        wire = bytes(request)
        invite = request.method == "INVITE"
        state = TxState.CALLING if invite else TxState.TRYING
        tx = ClientTransaction(_client_key(request), request, flow, state, wire=wire, owner=owner)
        if tx.key in self._clients:
            raise TransactionError("a client transaction with this branch exists")
        self._clients[tx.key] = tx
        self._out.append((wire, flow))
        if not flow.reliable:
            tx.interval = self.timers.t1
            self._arm(tx, "A" if invite else "E", now + tx.interval)
        self._arm(tx, "B" if invite else "F", now + 64 * self.timers.t1)
        return tx

    def send_stateless(self, data: bytes | SipRequest | SipResponse, flow: Flow) -> None:
        """Send outside any transaction (ACK to 2xx, answers to garbage)."""
        self._out.append((data if isinstance(data, bytes) else bytes(data), flow))

    def send_response(self, tx: ServerTransaction, response: SipResponse, now: float) -> None:
        """The TU answers a server transaction."""
        if tx.state in (TxState.COMPLETED, TxState.CONFIRMED, TxState.TERMINATED):
            raise TransactionError("the transaction already has its final response")
        if tx.state is TxState.ACCEPTED:
            if 200 <= response.status < 300:
                self._out.append((bytes(response), tx.flow))  # TU retransmitting its 2xx
                return
            raise TransactionError("the transaction already has its final response")
        self._send_server_response(tx, response, now)

    def _send_server_response(
        self, tx: ServerTransaction, response: SipResponse, now: float
    ) -> None:
        wire = bytes(response)
        status = response.status
        tx.last_response = wire
        tx.last_status = status
        self._out.append((wire, tx.flow))
        if status < 200:
            if not tx.is_invite:
                tx.state = TxState.PROCEEDING
            return
        if tx.merge_key is not None:
            self._merge.pop(tx.merge_key, None)
        if tx.is_invite and status < 300:
            # RFC 6026 Accepted: absorb retransmitted INVITEs for Timer L; the
            # TU-level 2xx retransmission runs until the ACK.
            tx.state = TxState.ACCEPTED
            self._arm(tx, "L", now + 64 * self.timers.t1)
            if not tx.flow.reliable:
                wait = _AckWait(
                    call_id=response.call_id,
                    cseq=response.cseq_number,
                    wire=wire,
                    flow=tx.flow,
                    interval=self.timers.t1,
                    next_at=now + self.timers.t1,
                    give_up_at=now + 64 * self.timers.t1,
                )
            else:
                wait = _AckWait(
                    response.call_id,
                    response.cseq_number,
                    wire,
                    tx.flow,
                    0.0,
                    now + 64 * self.timers.t1,
                    now + 64 * self.timers.t1,
                )
            self._ack_waits[(wait.call_id, wait.cseq)] = wait
            self._push(wait.next_at, wait)
            return
        tx.state = TxState.COMPLETED
        if tx.is_invite:
            if not tx.flow.reliable:
                tx.interval = self.timers.t1
                self._arm(tx, "G", now + tx.interval)
            self._arm(tx, "H", now + 64 * self.timers.t1)
        else:
            self._arm(tx, "J", now + (0.0 if tx.flow.reliable else 64 * self.timers.t1))

    # --- timers ---------------------------------------------------------------------------------
    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``."""
        while self._heap and self._heap[0][0] <= now:
            when, _seq, owner = heapq.heappop(self._heap)
            if not self._is_live(owner, when):
                continue
            if isinstance(owner, _AckWait):
                self._fire_ack_wait(owner, now)
            else:
                assert isinstance(owner, _TimerRef)
                owner.tx.deadlines.pop(owner.name, None)
                self._fire(owner.tx, owner.name, now)

    def _fire(self, tx: _Tx, name: str, now: float) -> None:
        t2 = self.timers.t2
        if name in ("A", "E", "G"):
            if name == "A" and tx.state is not TxState.CALLING:
                return
            if name == "G" and tx.state is not TxState.COMPLETED:
                return
            wire = tx.wire if isinstance(tx, ClientTransaction) else tx.last_response  # type: ignore[attr-defined]
            if wire is not None:
                self._out.append((wire, tx.flow))
            if name == "A":
                tx.interval *= 2
            elif name == "E" and tx.state is TxState.PROCEEDING:
                tx.interval = t2
            else:
                tx.interval = min(tx.interval * 2, t2)
            self._arm(tx, name, now + tx.interval)
        elif name in ("B", "F"):
            assert isinstance(tx, ClientTransaction)
            self._events.append(TransactionTimeout(tx))
            self._terminate(tx)
        elif name == "H":
            self._terminate(tx)  # no ACK came for our error response
        else:  # D, I, J, K, L, M: the quiet time is over
            self._terminate(tx)

    def _fire_ack_wait(self, wait: _AckWait, now: float) -> None:
        key = (wait.call_id, wait.cseq)
        if self._ack_waits.get(key) is not wait:
            return
        if now >= wait.give_up_at:
            del self._ack_waits[key]
            self._events.append(AckTimeout(wait.call_id, wait.cseq))
            return
        self._out.append((wait.wire, wait.flow))
        wait.interval = min(wait.interval * 2, self.timers.t2)
        wait.next_at = min(now + wait.interval, wait.give_up_at)
        self._push(wait.next_at, wait)

    def _terminate(self, tx: _Tx) -> None:
        tx.state = TxState.TERMINATED
        tx.deadlines.clear()
        if isinstance(tx, ClientTransaction):
            self._clients.pop(tx.key, None)
        else:
            assert isinstance(tx, ServerTransaction)
            self._servers.pop(tx.key, None)
            if tx.merge_key is not None and self._merge.get(tx.merge_key) is tx:
                del self._merge[tx.merge_key]
        assert isinstance(tx, ClientTransaction | ServerTransaction)
        self._events.append(TransactionTerminated(tx))

    def _arm(self, tx: _Tx, name: str, when: float) -> None:
        tx.deadlines[name] = when
        self._push(when, _TimerRef(tx, name))

    def _push(self, when: float, owner: object) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), owner))

    def _is_live(self, owner: object, when: float) -> bool:
        if isinstance(owner, _AckWait):
            return self._ack_waits.get((owner.call_id, owner.cseq)) is owner and (
                owner.next_at == when
            )
        assert isinstance(owner, _TimerRef)
        return owner.tx.deadlines.get(owner.name) == when


@dataclass(frozen=True, eq=False)
class _TimerRef:
    tx: _Tx
    name: str


# --- matching keys ---------------------------------------------------------


def _server_key(request: SipRequest, method: str | None = None) -> Hashable:
    """§17.2.3: branch + sent-by + method (ACK matches INVITE); RFC 2543 fallback."""
    method = method or request.method
    if method == "ACK":
        method = "INVITE"
    branch = request.branch or ""
    if branch.startswith(MAGIC_COOKIE):
        return ("3261", branch, request.sent_by, method)
    return (
        "2543",
        request.call_id,
        request.cseq_number,
        request.from_tag,
        request.sent_by,
        method,
        str(request.uri),
    )


def _client_key(message: SipRequest | SipResponse) -> Hashable:
    """§17.1.3: top Via branch + CSeq method (CANCEL and ACK differ from INVITE)."""
    return (message.branch, message.cseq_method)


def _merge_key(request: SipRequest) -> tuple[str, str, int, str] | None:
    """§8.2.2.2: a request without To tag seen twice with different branches."""
    if request.to_tag or request.method in ("ACK", "CANCEL"):
        return None
    return (request.from_tag or "", request.call_id, request.cseq_number, request.method)
