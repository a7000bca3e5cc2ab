"""Keeping SIP trunks registered and alive: the asyncio side of ``registration``.

``TrunkManager`` runs, per configured trunk, a task that drives a sans-IO
``RegistrationClient`` (sends what it asks for through the ``SipEndpoint``,
arms its deadline) and a task that sends an OPTIONS keep-alive every
``options_interval`` seconds. It locates the registrar with RFC 3263
(``resolver.SipResolver``) and moves to the next target when one does not
answer. It logs state changes (trunk name, states, status, never a user
name or a credential) and sets ``gatewayd_sip_trunk_up{trunk}``: 1 while the
trunk is registered, or, for a trunk that does not register, while its last
OPTIONS got a final response (any status: something answered).
``TrunkService`` adapts it to ``gateway.app.Service``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol

from bridges.sip.addressing import parse_address, parse_uri
from bridges.sip.flow import Flow
from bridges.sip.message import SipRequest, SipResponse
from bridges.sip.outgoing import IdSource
from bridges.sip.registration import (
    Backoff,
    LocalAddress,
    RegistrationClient,
    RegistrationState,
    build_options,
    registrar_uri,
    trunk_transport,
)
from bridges.sip.resolver import ResolutionError, SipResolver
from gateway import metrics
from gateway.clock import Clock
from gateway.log import get_logger
from gateway.settings import Settings, SipTrunk

__all__ = ["SipClientEndpoint", "TrunkManager", "TrunkService"]

log = get_logger(__name__)

_PROBLEM_STATES = (RegistrationState.BACKOFF, RegistrationState.FAILED)


class SipClientEndpoint(Protocol):
    """What the trunk manager needs of ``SipEndpoint``."""

    ids: IdSource

    async def send_request(self, request: SipRequest, flow: Flow) -> SipResponse | None:
        """Send in a new client transaction; the final response or None on timeout."""
        ...

    async def flow_to(
        self, transport: str, remote: tuple[str, int], *, server_name: str | None = None
    ) -> Flow:
        """A flow to ``remote`` on ``transport`` (TLS: ``server_name`` is verified and sent)."""
        ...

    def local_address(self, transport: str) -> tuple[str, int]:
        """Our Via host and port for ``transport`` (port 0: not listening)."""
        ...

    def contact_for(self, transport: str, user: str = "gatewayd") -> str:
        """Our Contact value for ``transport``."""
        ...


class _Trunk:
    """One configured trunk at run time: its client, its tasks, its targets."""

    def __init__(self, manager: TrunkManager, trunk: SipTrunk, local: LocalAddress) -> None:
        self.manager = manager
        self.trunk = trunk
        self.local = local
        self.uri = registrar_uri(trunk)
        # The SIP domain is the name a TLS registrar's certificate must carry (RFC 5922).
        self.domain = parse_uri(self.uri).host.strip("[]")
        self.client: RegistrationClient | None = None
        if trunk.registration:
            self.client = RegistrationClient(
                trunk,
                local,
                clock=manager.clock,
                ids=manager.endpoint.ids,
                rng=manager.rng,
                cnonce_source=manager.cnonce_source,
                backoff=manager.backoff,
                user_agent=manager.user_agent,
                on_change=self._changed,
            )
        #: Whether the last OPTIONS got a final response (None: none sent yet).
        self.options_ok: bool | None = None
        self.wake = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.stopped = False
        self._target = 0

    @property
    def monitored(self) -> bool:
        return self.client is not None or self.trunk.options_interval > 0

    @property
    def up(self) -> bool:
        if self.stopped:
            return False
        if self.client is not None:
            return self.client.up
        return bool(self.options_ok)

    def publish(self) -> None:
        if self.monitored:
            metrics.SIP_TRUNK_UP.labels(trunk=self.trunk.name).set(1 if self.up else 0)

    def _changed(self, client: RegistrationClient, old: RegistrationState, reason: str) -> None:
        level = log.warning if client.state in _PROBLEM_STATES else log.info
        level(
            "trunk registration",
            trunk=self.trunk.name,
            old=old.value,
            new=client.state.value,
            why=reason,
            status=client.last_status,
        )
        self.publish()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        name = self.trunk.name
        if self.client is not None:
            self.tasks.append(loop.create_task(self._guard(self._register()), name=f"reg-{name}"))
        if self.trunk.options_interval > 0:
            self.tasks.append(loop.create_task(self._guard(self._keepalive()), name=f"opt-{name}"))
        else:
            log.info("trunk without registration or OPTIONS is not monitored", trunk=name)
        self.publish()

    async def _guard(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            metrics.ERRORS.labels(component="sip").inc()
            log.exception("trunk task failed", trunk=self.trunk.name)
            if self.monitored:
                metrics.SIP_TRUNK_UP.labels(trunk=self.trunk.name).set(0)

    async def _register(self) -> None:
        client = self.client
        assert client is not None
        client.start()
        while True:
            request = client.next_request()
            if request is not None:
                client.receive_response(await self.send(request))
                continue
            self.wake.clear()
            deadline = client.next_deadline()
            delay = (
                None if deadline is None else max(0.0, deadline - self.manager.clock.monotonic())
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), delay)
            client.handle_timer()

    async def _keepalive(self) -> None:
        interval = self.trunk.options_interval
        if self.client is not None:
            await asyncio.sleep(interval)  # REGISTER is the first sign of life
        contact = parse_address(self.local.contact).uri
        from_uri = self.client.aor if self.client is not None else str(contact)
        while True:
            request = build_options(
                self.uri,
                self.local,
                self.manager.endpoint.ids,
                from_uri=from_uri,
                user_agent=self.manager.user_agent,
            )
            sent = self.manager.clock.monotonic()
            response = await self.send(request)
            ok = response is not None
            if ok != self.options_ok:
                log.info("trunk keep-alive", trunk=self.trunk.name, answered=ok)
            self.options_ok = ok
            if not ok and self.client is not None:
                self.client.keepalive_lost()
                self.wake.set()
            self.publish()
            elapsed = self.manager.clock.monotonic() - sent
            await asyncio.sleep(max(0.0, interval - elapsed))

    async def send(self, request: SipRequest) -> SipResponse | None:
        """Send to the current target; a timeout or a refused connection moves to the next."""
        transport = self.local.transport
        try:
            targets = await self.manager.resolver.resolve(self.uri, transport=transport)
        except (ResolutionError, ValueError) as exc:
            log.warning("trunk registrar not found", trunk=self.trunk.name, error=str(exc))
            return None
        target = targets[self._target % len(targets)]
        response: SipResponse | None = None
        try:
            flow = await self.manager.endpoint.flow_to(
                target.transport, target.address, server_name=self.domain
            )
        except OSError as exc:
            log.warning("trunk connection failed", trunk=self.trunk.name, error=str(exc))
        else:
            response = await self.manager.endpoint.send_request(request, flow)
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # SipEndpoint.send_request turns a cancellation into None: pass it on.
            raise asyncio.CancelledError
        if response is None:
            self._target += 1  # RFC 3263 §4.3: the next target on failure
        return response

    async def stop(self, timeout: float) -> None:
        self.stopped = True
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        client = self.client
        if client is not None and client.stop():
            try:
                async with asyncio.timeout(timeout):
                    while (request := client.next_request()) is not None:
                        client.receive_response(await self.send(request))
            except TimeoutError:
                client.abandon()


class TrunkManager:
    """Registrations and keep-alives of every configured trunk, on one ``SipEndpoint``.

    ``start(trunks)`` after the endpoint has started, ``reload(trunks)`` with
    a new list (only added, removed and changed trunks are touched),
    ``stop()`` before the endpoint stops (un-REGISTERs, each bounded by
    ``unregister_timeout``).
    """

    def __init__(
        self,
        endpoint: SipClientEndpoint,
        clock: Clock,
        *,
        resolver: SipResolver | None = None,
        rng: random.Random | None = None,
        cnonce_source: Callable[[int], bytes] = secrets.token_bytes,
        backoff: Backoff | None = None,
        unregister_timeout: float = 2.0,
        user_agent: str = "gatewayd",
    ) -> None:
        self.endpoint = endpoint
        self.clock = clock
        self.resolver = resolver or SipResolver(clock=clock)
        # Jitter only; nothing secret depends on it (cnonces use cnonce_source).
        self.rng = rng or random.Random()  # noqa: S311
        self.cnonce_source = cnonce_source
        self.backoff = backoff or Backoff()
        self.unregister_timeout = unregister_timeout
        self.user_agent = user_agent
        self._trunks: dict[str, _Trunk] = {}
        # Trunks that could not start (no listener, TLS): retried on every reload.
        self._refused: set[str] = set()
        self._lock = asyncio.Lock()

    def client(self, name: str) -> RegistrationClient | None:
        """The registration client of trunk ``name`` (None: unknown or not registering)."""
        trunk = self._trunks.get(name)
        return None if trunk is None else trunk.client

    def is_up(self, name: str) -> bool | None:
        """Whether trunk ``name`` is up now (None: unknown trunk)."""
        trunk = self._trunks.get(name)
        return None if trunk is None else trunk.up

    @property
    def names(self) -> list[str]:
        """The trunks running now."""
        return list(self._trunks)

    async def start(self, trunks: Iterable[SipTrunk]) -> None:
        """Start registering / probing every trunk (a second call acts as ``reload``)."""
        await self.reload(trunks)

    async def reload(self, trunks: Iterable[SipTrunk]) -> None:
        """Apply a new trunk list; unchanged trunks keep their registration untouched."""
        wanted = {trunk.name: trunk for trunk in trunks}
        async with self._lock:
            gone = [name for name in self._trunks if name not in wanted]
            changed = [
                name
                for name, running in self._trunks.items()
                if name in wanted and wanted[name] != running.trunk
            ]
            await self._stop_some(gone + changed)
            gone += [name for name in self._refused if name not in wanted]
            self._refused.clear()
            for name in gone:
                with contextlib.suppress(KeyError):  # not monitored: never had a series
                    metrics.SIP_TRUNK_UP.remove(name)  # no longer configured: no series
                log.info("trunk removed", trunk=name)
            for name, trunk in wanted.items():
                if name not in self._trunks:
                    self._start_one(trunk)

    async def stop(self) -> None:
        """Stop every trunk: cancel keep-alives and refreshes, un-REGISTER (bounded)."""
        async with self._lock:
            await self._stop_some(list(self._trunks))

    def _start_one(self, trunk: SipTrunk) -> None:
        transport = trunk_transport(trunk)
        host, port = self.endpoint.local_address(transport)
        if port == 0:
            log.error("trunk needs a SIP listener", trunk=trunk.name, transport=transport)
            self._refuse(trunk.name)
            return
        user = trunk.username or "gatewayd"
        local = LocalAddress(transport, host, port, self.endpoint.contact_for(transport, user))
        running = _Trunk(self, trunk, local)
        self._trunks[trunk.name] = running
        running.start()

    def _refuse(self, name: str) -> None:
        self._refused.add(name)
        metrics.SIP_TRUNK_UP.labels(trunk=name).set(0)

    async def _stop_some(self, names: list[str]) -> None:
        stopping = [self._trunks.pop(name) for name in names if name in self._trunks]
        await asyncio.gather(*(t.stop(self.unregister_timeout) for t in stopping))
        for trunk in stopping:
            trunk.publish()


class TrunkService:
    """``TrunkManager`` as a ``gateway.app.Service`` (start/reload/stop with settings)."""

    def __init__(self, manager: TrunkManager) -> None:
        self.manager = manager

    async def start(self, settings: Settings) -> None:
        """Start the configured trunks (the endpoint must have started)."""
        self.manager.user_agent = settings.sip.user_agent
        await self.manager.start(settings.sip.trunks)

    async def reload(self, settings: Settings) -> None:
        """Apply the new trunk list."""
        self.manager.user_agent = settings.sip.user_agent
        await self.manager.reload(settings.sip.trunks)

    async def stop(self) -> None:
        """Un-REGISTER everything."""
        await self.manager.stop()
