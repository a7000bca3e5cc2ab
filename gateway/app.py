"""The daemon's lifecycle: build the object graph, start, reload, drain, stop.

States: starting -> ready -> draining -> stopped (and starting -> stopped
when start-up fails). SIGTERM/SIGINT drain: /readyz turns 503, new calls
are refused with 503 + Retry-After on every edge, calls in progress get
``drain_timeout`` seconds to end, the rest are hung up, and the process
exits 0. A second SIGTERM/SIGINT cuts the wait short. SIGHUP re-reads the
YAML; a broken file keeps the running configuration.
"""

from __future__ import annotations

import asyncio
import enum
import gc
import os
import signal
import ssl
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from gateway import __version__, metrics
from gateway.calls import CallRegistry
from gateway.errors import ConfigError, GatewayError
from gateway.log import configure_logging, get_logger
from gateway.settings import Settings, load_settings_file, restart_only_changes
from gateway.systemd import SystemdNotifier
from gateway.web.app import build_web_app

log = get_logger(__name__)


class State(enum.Enum):
    """Where the node is in its life."""

    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"


_TRANSITIONS: dict[State, frozenset[State]] = {
    State.STARTING: frozenset({State.READY, State.STOPPED}),
    State.READY: frozenset({State.DRAINING}),
    State.DRAINING: frozenset({State.STOPPED}),
    State.STOPPED: frozenset(),
}


class StartupError(GatewayError):
    """The node could not start (port taken, data dir not writable ...)."""


class Service(Protocol):
    """A part of the node with its own sockets (the SIP endpoint, later the cluster link)."""

    async def start(self, settings: Settings) -> None:
        """Bind sockets and start tasks."""
        ...

    async def reload(self, settings: Settings) -> None:
        """Apply a new configuration without touching calls in progress."""
        ...

    async def stop(self) -> None:
        """Close sockets and stop tasks (calls have ended by now)."""
        ...


class Gateway:
    """One gatewayd node."""

    def __init__(
        self,
        settings: Settings,
        *,
        config_path: Path | None = None,
        overrides: list[str] | None = None,
        environ: Mapping[str, str] | None = None,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self._settings = settings
        self._config_path = config_path
        self._overrides = list(overrides or [])
        self._environ = environ
        self._state = State.STARTING
        self.calls = CallRegistry(retry_after=settings.sip.retry_after)
        self.notifier = notifier if notifier is not None else SystemdNotifier()
        self.services: list[Service] = []
        #: Called with the web application before it serves (routes, app keys).
        self.web_setup: list[Callable[[web.Application], None]] = []
        self._runner: web.AppRunner | None = None
        self._stop_requested = asyncio.Event()
        self._hurry = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # --- state -----------------------------------------------------------
    @property
    def settings(self) -> Settings:
        """The configuration in force now."""
        return self._settings

    @property
    def state(self) -> State:
        """The lifecycle state."""
        return self._state

    @property
    def state_name(self) -> str:
        """The state as a word, for /readyz."""
        return self._state.value

    @property
    def ready(self) -> bool:
        """True while the node takes new calls."""
        return self._state is State.READY

    @property
    def retry_after(self) -> int:
        """Seconds a refused client should wait."""
        return self._settings.sip.retry_after

    def _set_state(self, new: State) -> None:
        if new not in _TRANSITIONS[self._state]:
            raise RuntimeError(f"illegal state change {self._state.value} -> {new.value}")
        log.info("state change", old=self._state.value, new=new.value)
        self._state = new
        metrics.UP.set(1 if new is State.READY else 0)

    # --- start -------------------------------------------------------------
    async def start(self) -> None:
        """Bind every socket; on success the node is ready and systemd is told."""
        metrics.set_build_info()
        metrics.UP.set(0)
        settings = self._settings
        try:
            self._prepare_data_dir(settings.data_dir)
            await self._start_web(settings)
            for service in self.services:
                await service.start(settings)
        except BaseException:
            await self._close()
            self._set_state(State.STOPPED)
            raise
        # Start-up objects (modules, settings, the app graph) live for ever: move
        # them out of the collector's sight so full collections stay short and
        # do not stall signaling for tens of milliseconds.
        gc.collect()
        gc.freeze()
        self._set_state(State.READY)
        scheme = "https" if settings.web.tls else "http"
        base = f"{scheme}://{_url_host(settings.web.host)}:{settings.web.port}"
        log.info(
            "gatewayd ready",
            version=__version__,
            health_url=f"{base}/healthz",
            metrics_url=f"{base}/metrics",
            sip=f"{settings.sip.host}:{settings.sip.port} {'/'.join(settings.sip.transports)}",
        )
        if settings.systemd.notify:
            self.notifier.ready(f"ready, web {base}")
        self._spawn(self._watchdog())

    @staticmethod
    def _prepare_data_dir(path: Path) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"data_dir {path}: cannot create: {exc.strerror}") from exc
        if not os.access(path, os.W_OK | os.X_OK):
            raise StartupError(f"data_dir {path}: not writable by this user")

    async def _start_web(self, settings: Settings) -> None:
        app = build_web_app(self, lambda: self._settings, self.calls)
        for setup in self.web_setup:
            setup(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
        await runner.setup()
        self._runner = runner
        ssl_context = None
        if settings.web.tls is not None:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                ssl_context.load_cert_chain(settings.web.tls.cert_file, settings.web.tls.key_file)
            except (OSError, ssl.SSLError) as exc:
                raise StartupError(f"web.tls: cannot load certificate or key: {exc}") from exc
        site = web.TCPSite(
            runner,
            settings.web.host,
            settings.web.port,
            ssl_context=ssl_context,
            reuse_address=True,
        )
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(
                f"web: cannot listen on {settings.web.host}:{settings.web.port}: {exc.strerror}"
            ) from exc

    # --- running -----------------------------------------------------------
    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT drain (twice: hurry), SIGHUP reloads."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload()))

    def request_stop(self) -> None:
        """Begin draining; a second request cuts the wait for calls short."""
        if self._stop_requested.is_set():
            log.info("second stop request: hanging up remaining calls now")
            self._hurry.set()
        self._stop_requested.set()

    async def serve(self) -> int:
        """Run until asked to stop, then drain; returns the exit code."""
        await self._stop_requested.wait()
        await self.drain()
        return 0

    async def drain(self) -> None:
        """Refuse new calls, let active calls end (up to drain_timeout), then stop."""
        if self._state is not State.READY:
            return
        self._set_state(State.DRAINING)
        self.calls.stop_accepting()
        timeout = self._settings.drain_timeout
        active = self.calls.active
        log.info("draining", calls_active=active, drain_timeout=timeout)
        if self._settings.systemd.notify:
            self.notifier.stopping(f"draining, {active} calls active")
        loop = asyncio.get_running_loop()
        started = loop.time()
        empty = asyncio.ensure_future(self.calls.wait_empty(timeout))
        hurry = asyncio.ensure_future(self._hurry.wait())
        await asyncio.wait({empty, hurry}, return_when=asyncio.FIRST_COMPLETED)
        for fut in (empty, hurry):
            fut.cancel()
        if self.calls.active:
            log.info("drain time is up: hanging up", calls_active=self.calls.active)
            await self.calls.hangup_all("node shutting down")
        metrics.DRAIN_SECONDS.observe(loop.time() - started)
        await self._close()
        self._set_state(State.STOPPED)
        log.info("stopped")

    async def _close(self) -> None:
        for service in reversed(self.services):
            try:
                await service.stop()
            except Exception:
                metrics.ERRORS.labels(component="app").inc()
                log.exception("service failed to stop cleanly")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.notifier.close()

    async def reload(self) -> bool:
        """Re-read the YAML. A broken file changes nothing; returns whether it applied."""
        if self._config_path is None:
            log.warning("reload requested but gatewayd runs on the embedded default")
            return False
        if self._settings.systemd.notify:
            self.notifier.reloading()
        try:
            new = load_settings_file(
                self._config_path, overrides=self._overrides, environ=self._environ
            )
        except ConfigError as exc:
            metrics.CONFIG_RELOADS.labels(result="error").inc()
            for problem in exc.problems:
                log.error("config reload rejected", problem=problem)
            log.error("keeping the running configuration", errors=len(exc.problems))
            if self._settings.systemd.notify:
                self.notifier.ready("ready, last reload rejected")
            return False
        for key in restart_only_changes(self._settings, new):
            log.warning("changed setting takes effect only after a restart", key=key)
        old = self._settings
        self._settings = new
        self.calls.retry_after = new.sip.retry_after
        if (new.log.level, new.log.format, new.log.redact_ip) != (
            old.log.level,
            old.log.format,
            old.log.redact_ip,
        ):
            configure_logging(
                new.log.level, new.log.format, redact_ip=new.log.redact_ip, node_id=new.node_id
            )
        for service in self.services:
            await service.reload(new)
        metrics.CONFIG_RELOADS.labels(result="ok").inc()
        log.info("config reloaded")
        if new.systemd.notify:
            self.notifier.ready("ready, config reloaded")
        return True

    # --- background tasks ------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            metrics.ERRORS.labels(component="app").inc()
            log.error("background task failed", error=repr(task.exception()))

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None or not self._settings.systemd.notify:
            return
        while self._state in (State.READY, State.DRAINING):
            self.notifier.watchdog()
            await asyncio.sleep(interval * self._settings.systemd.watchdog_fraction)


def _url_host(host: str) -> str:
    if ":" in host:
        return f"[{host}]"
    if host in ("0.0.0.0", ""):  # noqa: S104 - only formats a URL
        return "127.0.0.1"
    return host
