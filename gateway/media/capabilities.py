"""What this gateway leg can do, as offer/answer needs to know it.

``LocalCapabilities`` is plain data (addresses, ports, codecs, SRTP policy)
plus the injected random source that makes SRTP keys and ``o=`` session
ids, so a test can pin every byte of an offer or an answer.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.media.codec_params import CodecCapability
from gateway.media.sdp_attributes import Direction, Fingerprint

RandomBytes = Callable[[int], bytes]
"""Returns that many random bytes; ``secrets.token_bytes`` in production."""


class SrtpPolicy(enum.StrEnum):
    """How SDES-SRTP (RFC 4568) is used on SIP legs.

    ``require``: offer RTP/SAVP, refuse plain RTP streams.
    ``offer``: offer RTP/AVP with ``a=crypto`` (best effort, RFC 8643) and
    accept SRTP or plain RTP, preferring SRTP when the peer offers keys.
    ``off``: plain RTP only; SRTP streams are refused.
    """

    REQUIRE = "require"
    OFFER = "offer"
    OFF = "off"


# Suites pylibsrtp implements, with the length of master key plus salt
# that ``inline:`` must carry (RFC 4568 section 6.2, RFC 7714 section 14.2).
SRTP_KEY_SALT_LENGTH: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": 30,
    "AES_CM_128_HMAC_SHA1_32": 30,
    "AEAD_AES_128_GCM": 28,
    "AEAD_AES_256_GCM": 44,
}

# Window size hint is advisory; every other session parameter changes how
# packets are protected (KDR, unencrypted SRTP/SRTCP, FEC order), which
# pylibsrtp cannot follow.
HARMLESS_SRTP_SESSION_PARAMS = ("WSH=",)

_VIDEO_FEEDBACK = ("goog-remb", "ccm fir", "nack", "nack pli")


def _h264(pt: int, profile_level_id: str, mode: int) -> CodecCapability:
    return CodecCapability(
        "H264",
        90000,
        pt,
        fmtp=f"level-asymmetry-allowed=1;packetization-mode={mode};profile-level-id={profile_level_id}",
        rtcp_feedback=_VIDEO_FEEDBACK,
    )


DEFAULT_AUDIO_CODECS: tuple[CodecCapability, ...] = (
    CodecCapability("opus", 48000, 111, channels=2, fmtp="minptime=10;useinbandfec=1"),
    # G.722's RTP clock is 8000 though it samples at 16 kHz (RFC 3551).
    CodecCapability("G722", 8000, 9),
    CodecCapability("PCMU", 8000, 0),
    CodecCapability("PCMA", 8000, 8),
    CodecCapability("telephone-event", 48000, 110, fmtp="0-16"),
    CodecCapability("telephone-event", 8000, 101, fmtp="0-16"),
)

# Constrained Baseline and Baseline, each in both packetization modes: what
# browsers and room systems offer, and what mediacodecs can decode.
DEFAULT_VIDEO_CODECS: tuple[CodecCapability, ...] = (
    CodecCapability("VP8", 90000, 96, rtcp_feedback=_VIDEO_FEEDBACK),
    _h264(97, "42e01f", 1),
    _h264(98, "42001f", 1),
    _h264(99, "42e01f", 0),
    _h264(100, "42001f", 0),
)

# What we offer: the two suites every SDES peer has (RFC 4568). The GCM
# suites are answered when configured, but old phones choke on long lists.
DEFAULT_CRYPTO_SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")


@dataclass(frozen=True)
class WebRtcTransport:
    """Our DTLS and ICE identity, for UDP/TLS/RTP/SAVPF streams (RFC 8842);
    without it such streams are refused."""

    fingerprint: Fingerprint
    ice_ufrag: str
    ice_pwd: str


@dataclass(frozen=True)
class LocalCapabilities:
    """Everything offer/answer needs to know about our side of a call.

    ``address`` is where we receive media (IPv4 or IPv6); ``address6`` an
    optional IPv6 address used when the peer's ``c=`` is IP6. A kind of
    media is offered and accepted only if it has a port and codecs; RTCP
    goes to the port above unless rtcp-mux is negotiated. One stream per
    kind is accepted; further ones (slides video) are refused.
    """

    address: str
    random_bytes: RandomBytes = field(compare=False, repr=False)
    audio_port: int | None = None
    video_port: int | None = None
    address6: str | None = None
    audio_codecs: tuple[CodecCapability, ...] = DEFAULT_AUDIO_CODECS
    video_codecs: tuple[CodecCapability, ...] = DEFAULT_VIDEO_CODECS
    srtp: SrtpPolicy = SrtpPolicy.OFFER
    crypto_suites: tuple[str, ...] = DEFAULT_CRYPTO_SUITES
    avpf: bool = False
    rtcp_mux: bool = True
    ptime: int | None = 20
    direction: Direction = Direction.SENDRECV
    bundle: bool = False
    webrtc: WebRtcTransport | None = None
    username: str = "-"
    session_name: str = "-"

    def __post_init__(self) -> None:
        ipaddress.ip_address(self.address)  # a typo must fail at start, not mid-call
        for kind, codecs in (("audio", self.audio_codecs), ("video", self.video_codecs)):
            pts = [c.payload_type for c in codecs]
            if len(pts) != len(set(pts)):
                raise ValueError(f"{kind} codecs reuse a payload type: {pts}")
        unknown = set(self.crypto_suites) - set(SRTP_KEY_SALT_LENGTH)
        if unknown:
            raise ValueError(f"unsupported SRTP suites: {sorted(unknown)}")

    def port_for(self, kind: str) -> int | None:
        """Our RTP port for this kind of media, None if we do not do it."""
        port = {"audio": self.audio_port, "video": self.video_port}.get(kind)
        return port if port and self.codecs_for(kind) else None

    def codecs_for(self, kind: str) -> tuple[CodecCapability, ...]:
        """Our codecs for this kind, in preference order."""
        return {"audio": self.audio_codecs, "video": self.video_codecs}.get(kind, ())

    def address_for(self, family: str) -> str:
        """Our address for a peer whose ``c=`` has this addrtype."""
        if family.upper() == "IP6" and self.address6 is not None:
            return self.address6
        return self.address
