"""The media plane service hands the router and the room systems' layout to its users."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from gateway.media.router import Router
from gateway.media.service import MediaService
from gateway.settings import Settings, load_settings
from gateway.webrtc.links import MediaLinker


def _settings(layout: str) -> Settings:
    return load_settings(f"media:\n  sip_layout: {layout}\n  codec_threads: 1\n")


async def test_the_linker_gets_the_router_and_the_layout_also_on_reload() -> None:
    linker = MediaLinker(None)
    service = MediaService(linker)
    await service.start(_settings("speaker"))
    assert isinstance(linker.router, Router) and linker.sip_layout == "speaker"
    await service.reload(_settings("grid"))
    assert linker.sip_layout == "grid"
    await service.stop()
    assert linker.router is None


def test_an_unknown_layout_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"media\.sip_layout"):
        _settings("mosaic")
