"""RegistrationClient (sans-IO, FakeClock) and TrunkManager (asyncio, scripted endpoint).

The registrar in these tests is ``auth.DigestServer`` behind a few lines of
REGISTER handling, so every Authorization the client sends is really checked.
Requests go through bytes and back, as on the wire.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import structlog
from pydantic import SecretStr

from bridges.sip.auth import DigestServer
from bridges.sip.flow import Flow
from bridges.sip.message import SipRequest, SipResponse, build_response, parse_message
from bridges.sip.outgoing import IdSource
from bridges.sip.registration import (
    Backoff,
    LocalAddress,
    RegistrationClient,
    RegistrationState,
    address_of_record,
    granted_expiry,
    refresh_delay,
    registrar_uri,
    trunk_transport,
)
from bridges.sip.resolver import SipResolver
from bridges.sip.trunks import TrunkManager
from gateway import metrics
from gateway.clock import FakeClock, SystemClock
from gateway.settings import SipTrunk

S = RegistrationState
PASSWORD = "s3cret-Pa55"
CONTACT = "<sip:gw@192.0.2.10:5070>"
LOCAL = LocalAddress("udp", "192.0.2.10", 5070, CONTACT)


def make_trunk(**changes: Any) -> SipTrunk:
    values: dict[str, Any] = {
        "name": "agency",
        "registrar": "sip:192.0.2.1",
        "username": "gw",
        "password": SecretStr(PASSWORD),
        "expires": 600,
    }
    values.update(changes)
    return SipTrunk(**values)


def counting_ids() -> IdSource:
    counter = itertools.count(1)
    return IdSource(lambda n: f"{next(counter):0{2 * n}x}")


def wire(message: SipResponse) -> SipResponse:
    """Through bytes and back, as the transport would deliver it."""
    parsed = parse_message(bytes(message))
    assert isinstance(parsed, SipResponse)
    return parsed


def wire_request(message: SipRequest) -> SipRequest:
    parsed = parse_message(bytes(message))
    assert isinstance(parsed, SipRequest)
    return parsed


def state(client: RegistrationClient | None) -> S:
    """The state, read through a call so that mypy does not narrow it between steps."""
    assert client is not None
    return client.state


def header(message: SipRequest | SipResponse, name: str) -> str:
    return message.headers.get(name) or ""


class Registrar:
    """REGISTER handling of a digest-protected registrar, sans-IO."""

    def __init__(self, clock: FakeClock, *, password: str = PASSWORD, nonce_ttl: float = 300):
        self.server = DigestServer(
            "192.0.2.1",
            b"k" * 32,
            clock,
            nonce_ttl=nonce_ttl,
            lookup=lambda user, realm: password if user == "gw" else None,
        )
        self.requests: list[SipRequest] = []

    def challenge(self, request: SipRequest, *, stale: bool = False) -> SipResponse:
        values = self.server.challenge(stale=stale)
        return wire(
            build_response(
                request, 401, to_tag="reg", headers=[("WWW-Authenticate", v) for v in values]
            )
        )

    def answer(
        self, request: SipRequest, *, grant: int | None = None, extra: tuple[str, ...] = ()
    ) -> SipResponse:
        """401 unless the credentials verify; else 200 echoing the binding."""
        request = wire_request(request)
        self.requests.append(request)
        result = self.server.verify(
            "REGISTER", request.headers.get("Authorization"), request_uri=request.uri
        )
        if not result.ok:
            return self.challenge(request, stale=result.stale)
        expires = int(request.headers.get("Expires") or "0")
        granted = expires if grant is None else grant
        contacts = [*extra, f"{request.headers.get('Contact')};expires={granted}"]
        headers = [("Contact", c) for c in contacts] if expires else []
        return wire(build_response(request, 200, to_tag="reg", headers=headers))


class Harness:
    """A client with a FakeClock, seeded randomness and a log of its state changes."""

    def __init__(
        self,
        trunk: SipTrunk | None = None,
        *,
        backoff: Backoff | None = None,
        nonce_ttl: float = 3600,
    ) -> None:
        self.clock = FakeClock()
        self.changes: list[tuple[S, S, str]] = []
        self.client = RegistrationClient(
            trunk or make_trunk(),
            LOCAL,
            clock=self.clock,
            ids=counting_ids(),
            rng=random.Random(42),
            cnonce_source=lambda n: bytes(range(n)),
            backoff=backoff,
            on_change=lambda c, old, why: self.changes.append((old, c.state, why)),
        )
        self.registrar = Registrar(self.clock, nonce_ttl=nonce_ttl)

    def request(self) -> SipRequest:
        request = self.client.next_request()
        assert request is not None, f"no request in state {self.client.state}"
        return request

    def exchange(self, **kw: Any) -> SipRequest:
        """Send the queued request to the registrar and feed its answer back."""
        request = self.request()
        self.client.receive_response(self.registrar.answer(request, **kw))
        return request

    def register(self) -> list[SipRequest]:
        """start() and the 401/200 round trips up to REGISTERED."""
        self.client.start()
        sent = [self.exchange(), self.exchange()]
        assert self.client.state is S.REGISTERED
        return sent

    def respond(self, status: int, headers: list[tuple[str, str]] | None = None) -> SipRequest:
        request = self.request()
        self.client.receive_response(wire(build_response(request, status, headers=headers or [])))
        return request


def test_first_register_is_challenged_answered_and_accepted() -> None:
    h = Harness()
    first, second = h.register()
    assert first.method == second.method == "REGISTER"
    assert first.uri == second.uri == "sip:192.0.2.1"
    assert first.headers.get("To") == "<sip:gw@192.0.2.1>"
    assert header(first, "From").startswith("<sip:gw@192.0.2.1>;tag=")
    assert first.headers.get("Contact") == CONTACT
    assert first.headers.get("Expires") == "600"
    assert "Authorization" not in first.headers
    assert header(second, "Authorization").startswith("Digest ")
    # §10.2.4: same Call-ID and From, CSeq up by one, new branch
    assert second.call_id == first.call_id == h.client.call_id
    assert second.headers.get("From") == first.headers.get("From")
    assert (first.cseq_number, second.cseq_number) == (1, 2)
    assert first.branch != second.branch
    assert h.client.granted == 600 and h.client.up
    assert [(old, new) for old, new, _ in h.changes] == [
        (S.IDLE, S.REGISTERING),
        (S.REGISTERING, S.REGISTERED),
    ]
    assert all(PASSWORD not in bytes(r).decode() for r in (first, second))


def test_refresh_at_80_percent_keeps_call_id_and_raises_cseq() -> None:
    h = Harness()
    h.register()
    start = h.clock.monotonic()
    assert h.client.next_deadline() == pytest.approx(start + 480)
    h.clock.advance(479.9)
    h.client.handle_timer()
    assert h.client.next_request() is None and state(h.client) is S.REGISTERED
    h.clock.advance(0.1)
    h.client.handle_timer()
    assert state(h.client) is S.REFRESHING and h.client.up, "still up while refreshing"
    refresh = h.exchange()
    # the refresh re-used the nonce (nc=2): no second 401 round trip
    assert "nc=00000002" in header(refresh, "Authorization")
    assert refresh.call_id == h.client.call_id and refresh.cseq_number == 3
    assert state(h.client) is S.REGISTERED
    assert h.client.next_deadline() == pytest.approx(start + 480 + 480)


@pytest.mark.parametrize(
    ("granted", "delay"),
    [(3600, 2880), (600, 480), (20, 15), (10, 5), (6, 3), (1, 0.5)],
)
def test_refresh_delay_is_80_percent_but_5_s_before_expiry(granted: int, delay: float) -> None:
    assert refresh_delay(granted) == pytest.approx(delay)


def test_granted_expiry_prefers_our_contact_param_over_expires_header() -> None:
    h = Harness()
    h.client.start()
    h.exchange()
    request = h.request()
    others = ("<sip:phone@198.51.100.7:5060>;expires=3000",)
    response = h.registrar.answer(request, grant=100, extra=others)
    response.headers.add("Expires", "3600")
    h.client.receive_response(response)
    assert h.client.granted == 100
    assert h.client.next_deadline() == pytest.approx(h.clock.monotonic() + 80)

    contact_uri = wire_request(request).contacts[0].uri
    bare = build_response(request, 200, headers=[("Expires", "900")])
    assert granted_expiry(wire(bare), contact_uri, 600) == 900
    assert granted_expiry(wire(build_response(request, 200)), contact_uri, 600) == 600
    # Same binding written differently (host case, default port) still matches.
    other_port = build_response(
        request, 200, headers=[("Contact", "<sip:gw@192.0.2.10>;expires=5")]
    )
    assert granted_expiry(wire(other_port), contact_uri, 600) == 600


def test_registrar_granting_nothing_is_a_failure() -> None:
    h = Harness()
    h.client.start()
    h.exchange()
    h.exchange(grant=0)
    assert state(h.client) is S.BACKOFF and not h.client.up


def backoff_delays(h: Harness, failures: int, fail: Callable[[], object]) -> list[float]:
    delays = []
    for _ in range(failures):
        fail()
        assert state(h.client) is S.BACKOFF and not h.client.up
        deadline = h.client.next_deadline()
        assert deadline is not None
        delays.append(deadline - h.clock.monotonic())
        h.clock.set(deadline)
        h.client.handle_timer()
        assert state(h.client) is S.REGISTERING
    return delays


def test_backoff_doubles_from_5_to_300_s_with_jitter() -> None:
    h = Harness()
    h.client.start()
    delays = backoff_delays(h, 9, lambda: h.respond(503))
    nominal = [5, 10, 20, 40, 80, 160, 300, 300, 300]
    for delay, top in zip(delays, nominal, strict=True):
        assert 0.75 * top <= delay <= top, (delay, top)
    assert len({round(d / t, 6) for d, t in zip(delays, nominal, strict=True)}) > 1, "jittered"
    assert h.client.failures == 9


def test_timeouts_back_off_and_success_resets_the_count() -> None:
    h = Harness()
    h.client.start()

    def time_out() -> None:
        h.request()
        h.client.receive_response(None)

    delays = backoff_delays(h, 3, time_out)
    assert delays[2] > delays[1] > delays[0]
    assert h.changes[1][2].startswith("no answer")
    h.exchange()
    h.exchange()
    assert state(h.client) is S.REGISTERED and h.client.failures == 0
    h.clock.advance(480)
    h.client.handle_timer()
    h.respond(500)
    deadline = h.client.next_deadline()
    assert deadline is not None
    assert 3.75 <= deadline - h.clock.monotonic() <= 5.0, "back to the first step"


def test_retry_after_stretches_the_backoff() -> None:
    h = Harness()
    h.client.start()
    h.respond(503, [("Retry-After", "120 (maintenance)")])
    deadline = h.client.next_deadline()
    assert deadline is not None and deadline - h.clock.monotonic() == pytest.approx(120)


def test_423_retries_at_once_with_min_expires() -> None:
    h = Harness()
    h.client.start()
    h.exchange()  # 401
    h.respond(423, [("Min-Expires", "1800")])
    assert state(h.client) is S.REGISTERING and h.client.failures == 0
    retry = h.exchange()
    assert retry.headers.get("Expires") == "1800"
    assert retry.headers.get("Authorization"), "pre-emptive credentials after the 423"
    assert state(h.client) is S.REGISTERED and h.client.granted == 1800
    assert h.client.expires == 1800, "the refresh asks for 1800 too"


@pytest.mark.parametrize("min_expires", [None, "300", "soon"])
def test_423_without_a_larger_min_expires_backs_off(min_expires: str | None) -> None:
    h = Harness()
    h.client.start()
    h.respond(423, [("Min-Expires", min_expires)] if min_expires else [])
    assert state(h.client) is S.BACKOFF


def nonce_of(request: SipRequest) -> str:
    found = re.search(r'nonce="([^"]+)"', header(request, "Authorization"))
    assert found is not None
    return found[1]


def test_stale_nonce_is_answered_silently() -> None:
    h = Harness(nonce_ttl=300)
    h.register()
    first_nonce = nonce_of(h.registrar.requests[-1])
    h.clock.advance(480)  # past the registrar's 300 s nonce lifetime
    h.client.handle_timer()
    stale = h.exchange()  # pre-emptive credentials with the expired nonce
    assert nonce_of(stale) == first_nonce
    assert state(h.client) is S.REFRESHING, "401 stale=true is not a failure"
    fresh = h.exchange()
    assert nonce_of(fresh) != first_nonce
    assert state(h.client) is S.REGISTERED
    assert [r.cseq_number for r in h.registrar.requests] == [1, 2, 3, 4]


def test_wrong_password_fails_and_stops() -> None:
    h = Harness(make_trunk(password=SecretStr("wrong")))
    h.client.start()
    for _ in range(5):
        request = h.client.next_request()
        if request is None:
            break
        h.client.receive_response(h.registrar.answer(request))
    assert state(h.client) is S.FAILED and not h.client.up
    assert len(h.registrar.requests) == 3, "initial, then one answer per fresh challenge"
    assert h.client.next_deadline() is None
    h.clock.advance(86400)
    h.client.handle_timer()
    assert h.client.next_request() is None, "no retry until the settings change"
    assert "credentials refused" in h.changes[-1][2]


def test_the_same_nonce_challenged_again_is_not_answered_twice() -> None:
    h = Harness()
    h.client.start()
    request = h.request()
    challenge = h.registrar.challenge(wire_request(request))
    h.client.receive_response(challenge)
    answered = h.request()
    assert answered.headers.get("Authorization")
    same = [("WWW-Authenticate", v) for v in challenge.headers.getlist("WWW-Authenticate")]
    h.client.receive_response(wire(build_response(answered, 401, headers=same)))
    assert state(h.client) is S.FAILED and h.client.next_request() is None


def test_a_challenge_without_a_password_fails() -> None:
    h = Harness(make_trunk(password=None))
    h.client.start()
    h.exchange()
    assert state(h.client) is S.FAILED
    assert "no password" in h.changes[-1][2]


@pytest.mark.parametrize("status", [403, 404])
def test_forbidden_and_not_found_are_permanent(status: int) -> None:
    h = Harness()
    h.client.start()
    h.respond(status)
    assert state(h.client) is S.FAILED and h.client.next_deadline() is None


def test_stop_unregisters_with_expires_0_in_the_same_call() -> None:
    h = Harness()
    h.register()
    assert h.client.stop()
    assert state(h.client) is S.UNREGISTERING and not h.client.up
    unregister = h.exchange()
    assert unregister.headers.get("Expires") == "0"
    assert unregister.headers.get("Contact") == CONTACT
    assert unregister.call_id == h.client.call_id and unregister.cseq_number == 3
    assert unregister.headers.get("Authorization"), "pre-emptive credentials"
    assert state(h.client) is S.IDLE and h.client.granted is None
    assert h.changes[-1][2] == "unregistered"


def test_unregister_answers_one_challenge() -> None:
    h = Harness(nonce_ttl=300)
    h.register()
    h.clock.advance(400)  # the nonce expired: the pre-emptive answer is stale
    h.client.stop()
    h.exchange()
    assert state(h.client) is S.UNREGISTERING
    h.exchange()
    assert state(h.client) is S.IDLE
    assert h.registrar.requests[-1].headers.get("Expires") == "0"


def test_stop_without_a_binding_just_goes_idle() -> None:
    h = Harness()
    assert not h.client.stop()
    h.client.start()
    h.respond(503)
    assert not h.client.stop(), "the first REGISTER failed: nothing to remove"
    assert state(h.client) is S.IDLE and h.client.next_request() is None


def test_stop_while_the_first_register_is_in_flight_unregisters() -> None:
    h = Harness()
    h.client.start()
    h.request()  # in flight, might have reached the registrar
    assert h.client.stop()
    assert h.request().headers.get("Expires") == "0"
    h.client.abandon()
    assert state(h.client) is S.IDLE
    h.client.receive_response(None)  # a late answer changes nothing
    assert state(h.client) is S.IDLE


def test_lost_keepalive_refreshes_at_once() -> None:
    h = Harness()
    h.register()
    h.client.keepalive_lost()
    assert state(h.client) is S.REFRESHING
    h.request()
    h.client.receive_response(None)  # the registrar is gone indeed
    assert state(h.client) is S.BACKOFF and not h.client.up


def test_illegal_transitions_raise() -> None:
    h = Harness()
    h.client.start()
    with pytest.raises(RuntimeError, match="registering -> registering"):
        h.client.start()


def test_trunk_helpers() -> None:
    assert registrar_uri(make_trunk(registrar="reg.example:5070")) == "sip:reg.example:5070"
    assert address_of_record(make_trunk(registrar="sip:reg.example:5070")) == "sip:gw@reg.example"
    assert address_of_record(make_trunk(aor="sip:a@b.example")) == "sip:a@b.example"
    assert trunk_transport(make_trunk(registrar="sip:r.example;transport=tcp")) == "tcp"
    assert trunk_transport(make_trunk(registrar="sips:r.example")) == "tls"
    assert trunk_transport(make_trunk(transport="tcp")) == "tcp"
    with pytest.raises(ValueError, match="does not register"):
        RegistrationClient(
            make_trunk(registration=False),
            LOCAL,
            clock=FakeClock(),
            ids=IdSource(),
            rng=random.Random(),
        )


# --- TrunkManager with a scripted endpoint ---------------------------------------------------------

Handler = Callable[[SipRequest], Awaitable[SipResponse | None]]


class ScriptedEndpoint:
    """Stands in for SipEndpoint: answers from per-registrar handlers, records requests."""

    def __init__(self) -> None:
        self.ids = counting_ids()
        self.clock = FakeClock()
        self.registrars: dict[str, Registrar] = {}
        self.handlers: dict[str, Handler] = {}
        self.sent: list[tuple[str, SipRequest]] = []

    def registrar_for(self, host: str) -> Registrar:
        return self.registrars.setdefault(host, Registrar(self.clock))

    async def send_request(self, request: SipRequest, flow: Flow) -> SipResponse | None:
        request = wire_request(request)
        host = flow.remote[0]
        self.sent.append((host, request))
        if host in self.handlers:
            return await self.handlers[host](request)
        if request.method == "OPTIONS":
            return wire(build_response(request, 200))
        return self.registrar_for(host).answer(request)

    async def flow_to(
        self, transport: str, remote: tuple[str, int], *, server_name: str | None = None
    ) -> Flow:
        return Flow(transport, ("127.0.0.1", 5070), remote)

    def local_address(self, transport: str) -> tuple[str, int]:
        return ("127.0.0.1", 5070 if transport == "udp" else 0)

    def contact_for(self, transport: str, user: str = "gatewayd") -> str:
        return f"<sip:{user}@127.0.0.1:5070>"

    def count(self, host: str, method: str = "REGISTER") -> int:
        return sum(1 for h, r in self.sent if h == host and r.method == method)


def gauge(name: str) -> float | None:
    return metrics.REGISTRY.get_sample_value("gatewayd_sip_trunk_up", {"trunk": name})


async def until(check: Callable[[], bool], timeout: float = 2.0) -> None:
    """Poll a condition the manager's tasks make true (bounded)."""
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - the condition has no event to wait on
            await asyncio.sleep(0.005)


def others() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


def manager_for(endpoint: ScriptedEndpoint, **kw: Any) -> TrunkManager:
    return TrunkManager(endpoint, SystemClock(), resolver=SipResolver(), rng=random.Random(1), **kw)


async def test_reload_touches_only_added_removed_and_changed_trunks() -> None:
    endpoint = ScriptedEndpoint()
    manager = manager_for(endpoint)
    keep = make_trunk(name="keep", registrar="192.0.2.1")
    change = make_trunk(name="change", registrar="192.0.2.2")
    drop = make_trunk(name="drop", registrar="192.0.2.3", registration=False, options_interval=60)
    await manager.start([keep, change, drop])
    await until(lambda: bool(manager.is_up("keep") and manager.is_up("change")))
    await until(lambda: manager.is_up("drop") is True)
    assert gauge("keep") == gauge("change") == gauge("drop") == 1.0
    kept = manager.client("keep")
    old_client = manager.client("change")
    assert old_client is not None
    old_call_id = old_client.call_id

    add = make_trunk(name="add", registrar="192.0.2.4")
    await manager.reload([keep, change.model_copy(update={"expires": 900}), add])
    await until(lambda: bool(manager.is_up("add") and manager.is_up("change")))
    assert manager.client("keep") is kept and endpoint.count("192.0.2.1") == 2, "untouched"
    changed = manager.client("change")
    assert changed is not None and changed.call_id != old_call_id and changed.expires == 900
    unregisters = [
        r for h, r in endpoint.sent if h == "192.0.2.2" and r.headers.get("Expires") == "0"
    ]
    assert len(unregisters) == 1 and unregisters[0].call_id == old_call_id
    assert gauge("drop") is None, "a removed trunk has no series"
    assert sorted(manager.names) == ["add", "change", "keep"]

    await manager.stop()
    assert gauge("keep") == gauge("change") == gauge("add") == 0.0
    for host in ("192.0.2.1", "192.0.2.2", "192.0.2.4"):
        last = [r for h, r in endpoint.sent if h == host][-1]
        assert last.headers.get("Expires") == "0"
    assert not others(), "no task left behind"


async def test_unregister_on_stop_is_bounded() -> None:
    endpoint = ScriptedEndpoint()
    manager = manager_for(endpoint, unregister_timeout=0.2)
    await manager.start([make_trunk(name="slow", registrar="192.0.2.5")])
    await until(lambda: bool(manager.is_up("slow")))

    async def never(request: SipRequest) -> SipResponse | None:
        await asyncio.sleep(3600)
        return None

    endpoint.handlers["192.0.2.5"] = never
    loop = asyncio.get_running_loop()
    started = loop.time()
    await manager.stop()
    assert loop.time() - started < 1.0
    assert endpoint.count("192.0.2.5") == 3
    client = endpoint.sent[-1][1]
    assert client.headers.get("Expires") == "0"
    assert gauge("slow") == 0.0
    assert not others()


async def test_options_only_trunk_is_up_on_any_final_answer() -> None:
    endpoint = ScriptedEndpoint()
    answers: list[int | None] = [404, None]

    async def scripted(request: SipRequest) -> SipResponse | None:
        status = answers.pop(0) if answers else 200
        return None if status is None else wire(build_response(request, status))

    endpoint.handlers["192.0.2.6"] = scripted
    manager = manager_for(endpoint)
    trunk = make_trunk(
        name="peer", registrar="192.0.2.6", registration=False, username=None, options_interval=0.05
    )
    await manager.start([trunk])
    await until(lambda: endpoint.count("192.0.2.6", "OPTIONS") >= 1)
    assert manager.is_up("peer") is True, "404 is an answer: the peer is alive"
    await until(lambda: endpoint.count("192.0.2.6", "OPTIONS") >= 2)
    await until(lambda: manager.is_up("peer") is False)
    assert gauge("peer") == 0.0
    await until(lambda: manager.is_up("peer") is True)
    options = [r for h, r in endpoint.sent if r.method == "OPTIONS"]
    assert header(options[0], "From").startswith("<sip:gatewayd@127.0.0.1:5070>")
    assert len({r.call_id for r in options}) == len(options)
    await manager.stop()
    assert endpoint.count("192.0.2.6", "REGISTER") == 0
    assert not others()


async def test_lost_keepalive_triggers_a_reregister() -> None:
    endpoint = ScriptedEndpoint()
    manager = manager_for(endpoint)
    await manager.start([make_trunk(name="ka", registrar="192.0.2.7", options_interval=0.05)])
    await until(lambda: bool(manager.is_up("ka")))
    registers = endpoint.count("192.0.2.7")

    async def silent_for_options(request: SipRequest) -> SipResponse | None:
        if request.method == "OPTIONS":
            return None
        return endpoint.registrar_for("192.0.2.7").answer(request)

    endpoint.handlers["192.0.2.7"] = silent_for_options
    await until(lambda: endpoint.count("192.0.2.7") > registers)
    await manager.stop()
    assert not others()


async def test_trunks_without_a_listener_for_their_transport_are_refused() -> None:
    endpoint = ScriptedEndpoint()
    manager = manager_for(endpoint)
    with structlog.testing.capture_logs() as logs:
        await manager.start(
            [
                make_trunk(name="tcp-trunk", registrar="192.0.2.8", transport="tcp"),
                make_trunk(name="tls-trunk", registrar="sips:192.0.2.8"),
            ]
        )
    assert manager.names == []
    assert gauge("tcp-trunk") == gauge("tls-trunk") == 0.0
    # A TLS trunk needs our TLS listener too: its Contact must be reachable over TLS.
    assert [e["event"] for e in logs] == ["trunk needs a SIP listener"] * 2
    await manager.stop()


async def test_logs_carry_no_secret() -> None:
    endpoint = ScriptedEndpoint()
    manager = manager_for(endpoint)
    with structlog.testing.capture_logs() as logs:
        await manager.start(
            [make_trunk(name="quiet", registrar="192.0.2.9", password=SecretStr("nope"))]
        )
        await until(lambda: state(manager.client("quiet")) is S.FAILED)
        await manager.stop()
    assert logs, "state changes are logged"
    text = repr(logs)
    assert "nope" not in text and PASSWORD not in text
    assert "Digest" not in text and "response=" not in text
    assert any(e.get("new") == "failed" and e.get("status") == 401 for e in logs)
