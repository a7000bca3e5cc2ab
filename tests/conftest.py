"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.daemon import Daemon, start_daemon


@pytest.fixture
def gatewayd() -> Iterator[Callable[..., Daemon]]:
    """Factory that starts real gatewayd processes and always stops them."""
    started: list[Daemon] = []

    def start(config: dict[str, Any] | None = None, **kwargs: Any) -> Daemon:
        daemon = start_daemon(config, **kwargs)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()
