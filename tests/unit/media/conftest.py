"""Fixtures for the SDP and offer/answer tests: golden SDPs and our side."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from gateway.media.capabilities import LocalCapabilities, RandomBytes, WebRtcTransport
from gateway.media.sdp_attributes import Fingerprint

GOLDEN_SDP = Path(__file__).resolve().parents[2] / "golden" / "sdp"
GOLDEN_FILES = sorted(GOLDEN_SDP.glob("*.sdp"))

TEST_FINGERPRINT = Fingerprint("sha-256", ":".join(["5A"] * 32))


def seeded_random(seed: int = 1) -> RandomBytes:
    """A reproducible random source, so answers are byte-for-byte stable."""
    return random.Random(seed).randbytes


def make_local(**changes: object) -> LocalCapabilities:
    """Our default capabilities, with a DTLS identity so browser offers can
    be answered too, and a seeded random source."""
    fields: dict[str, object] = {
        "address": "192.0.2.10",
        "random_bytes": seeded_random(),
        "audio_port": 40000,
        "video_port": 40002,
        "address6": "2001:db8::10",
        "webrtc": WebRtcTransport(TEST_FINGERPRINT, "gwUfrag1", "gwPassword0123456789abcd"),
        "bundle": True,
    }
    fields.update(changes)
    return LocalCapabilities(**fields)  # type: ignore[arg-type]


@pytest.fixture
def local() -> LocalCapabilities:
    """Our default capabilities (see ``make_local``)."""
    return make_local()
