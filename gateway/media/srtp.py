"""SDES-SRTP (RFC 3711, RFC 4568, RFC 7714) for SIP legs, on pylibsrtp.

A ``SrtpContext`` holds the two libsrtp sessions of one negotiated stream:
the outbound one keyed with the master key and salt *we* put in our
``a=crypto`` line, the inbound one keyed with the peer's. Each session
covers RTP and RTCP of every SSRC in its direction (libsrtp's "any
outbound" / "any inbound" templates), so a peer that changes SSRC mid-call
(a transfer, a re-INVITE) needs no new context.

Packet failures (authentication, replay, malformed input) raise
``SrtpError`` and are counted on the context; nothing libsrtp says about a
packet escapes as any other exception type. Choosing between plain RTP and
SRTP from the operator's ``SrtpPolicy`` is ``srtp_context_for``.

WebRTC legs do DTLS-SRTP inside aiortc; this module never sees them.
"""

from __future__ import annotations

import enum
import functools
from collections import Counter
from collections.abc import Callable

import pylibsrtp
from pylibsrtp._binding import ffi

from gateway.errors import GatewayError, NotAcceptable
from gateway.media.capabilities import SRTP_KEY_SALT_LENGTH, SrtpPolicy
from gateway.media.negotiation import NegotiatedStream

# The suites we can name in SDP, to libsrtp profile attribute names. A
# pylibsrtp built without a GCM-capable crypto backend lacks the last two
# (or fails when a session is created); ``supported_suites`` probes for that.
_PROFILE_NAMES: dict[str, str] = {
    "AES_CM_128_HMAC_SHA1_80": "SRTP_PROFILE_AES128_CM_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32": "SRTP_PROFILE_AES128_CM_SHA1_32",
    "AEAD_AES_128_GCM": "SRTP_PROFILE_AEAD_AES_128_GCM",
    "AEAD_AES_256_GCM": "SRTP_PROFILE_AEAD_AES_256_GCM",
}

#: How many octets protection adds to an RTP packet, per suite (tag length;
#: SRTCP adds 4 more for the E flag and index).
SRTP_OVERHEAD: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": 10,
    "AES_CM_128_HMAC_SHA1_32": 4,
    "AEAD_AES_128_GCM": 16,
    "AEAD_AES_256_GCM": 16,
}

# pylibsrtp processes packets in one 1500-octet buffer per session and keeps
# 148 octets of it free for the trailer, so it refuses to protect an RTP
# packet above 1356 octets. A packet forwarded from a WebRTC leg can be
# larger than that and still fit a 1500-octet MTU after protection, so the
# buffer is widened (pylibsrtp is pinned; a test pins this behaviour too).
_PACKET_BUFFER = 2048

# RFC 3711 section 3.3.2: 64 is the minimum; libsrtp's default is 128.
# Video at 2-3 Mbit/s reorders across more than 64 packets on Wi-Fi.
DEFAULT_REPLAY_WINDOW = 128


class SrtpFailure(enum.StrEnum):
    """Why a packet was not protected or unprotected; the counter label."""

    AUTH = "auth"
    REPLAY = "replay"
    MALFORMED = "malformed"
    OTHER = "other"


# libsrtp's status strings as pylibsrtp reports them, by what they mean for
# a packet. libsrtp runs the replay check before the authentication check,
# so a forged copy of a packet already seen counts as a replay.
_FAILURE_BY_MESSAGE: dict[str, SrtpFailure] = {
    "authentication failure": SrtpFailure.AUTH,
    "cipher failure": SrtpFailure.AUTH,
    "replay check failed (bad index)": SrtpFailure.REPLAY,
    "replay check failed (index too old)": SrtpFailure.REPLAY,
    "packet index is too old to consider": SrtpFailure.REPLAY,
    "unsupported parameter": SrtpFailure.MALFORMED,
    "error parsing data": SrtpFailure.MALFORMED,
    "can't process as much data as requested": SrtpFailure.MALFORMED,
}


class SrtpError(GatewayError):
    """A packet could not be protected or unprotected.

    ``failure`` says why (the counter label). These errors stay inside the
    media plane: the packet is dropped and counted, the call goes on.
    """

    def __init__(self, message: str, failure: SrtpFailure) -> None:
        super().__init__(message)
        self.failure = failure


@functools.cache
def supported_suites() -> frozenset[str]:
    """The SDES suites this build of pylibsrtp can actually run.

    Probed once by creating a session per suite: a profile constant can
    exist while the crypto backend behind it does not.
    """
    suites = set()
    for suite, attribute in _PROFILE_NAMES.items():
        profile = getattr(pylibsrtp.Policy, attribute, None)
        if profile is None:
            continue
        try:
            policy = pylibsrtp.Policy(
                key=bytes(SRTP_KEY_SALT_LENGTH[suite]),
                ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                srtp_profile=profile,
            )
            pylibsrtp.Session(policy)
        except (pylibsrtp.Error, ValueError):
            continue
        suites.add(suite)
    return frozenset(suites)


def _profile(suite: str) -> int:
    if suite not in SRTP_KEY_SALT_LENGTH:
        raise NotAcceptable(f"unknown SRTP crypto suite {suite!r}")
    if suite not in supported_suites():
        raise NotAcceptable(
            f"SRTP crypto suite {suite} is not available in this libsrtp build"
            " (GCM needs libsrtp with an OpenSSL backend)"
        )
    profile: int = getattr(pylibsrtp.Policy, _PROFILE_NAMES[suite])
    return profile


def _check_key(suite: str, key: bytes, whose: str) -> None:
    # pylibsrtp accepts keys that are too long and silently ignores the
    # tail; an SDES line with the wrong length is a broken peer.
    expected = SRTP_KEY_SALT_LENGTH[suite]
    if len(key) != expected:
        raise NotAcceptable(
            f"{whose} SRTP master key and salt for {suite} must be {expected} octets,"
            f" not {len(key)}"
        )


def _session(suite: str, key: bytes, ssrc_type: int, replay_window: int) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(key=key, ssrc_type=ssrc_type, srtp_profile=_profile(suite))
    policy.window_size = replay_window
    # A NACK-driven retransmission re-sends the very same packet; libsrtp
    # would otherwise refuse to protect a sequence number twice.
    policy.allow_repeat_tx = True
    session = pylibsrtp.Session(policy)
    if isinstance(getattr(session, "_cdata", None), ffi.CData):
        session._cdata = ffi.new("char[]", _PACKET_BUFFER)
        session._buffer = ffi.buffer(session._cdata)
    return session


class SrtpContext:
    """SRTP and SRTCP protection of one stream, both directions.

    ``local_key`` is the master key and salt from our ``a=crypto`` line
    (what we protect with), ``remote_key`` the peer's (what we unprotect
    with). ``errors`` counts failures by ``SrtpFailure``; ``protected`` and
    ``unprotected`` count packets that made it.
    """

    def __init__(
        self,
        suite: str,
        local_key: bytes,
        remote_key: bytes,
        *,
        replay_window: int = DEFAULT_REPLAY_WINDOW,
    ) -> None:
        if not 64 <= replay_window <= 0x8000:
            raise ValueError(f"replay window {replay_window} outside 64..32768")
        _profile(suite)
        _check_key(suite, local_key, "our")
        _check_key(suite, remote_key, "the peer's")
        self.suite = suite
        self._outbound = _session(
            suite, local_key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, replay_window
        )
        self._inbound = _session(
            suite, remote_key, pylibsrtp.Policy.SSRC_ANY_INBOUND, replay_window
        )
        self.errors: Counter[SrtpFailure] = Counter()
        self.protected = 0
        self.unprotected = 0

    @classmethod
    def from_stream(cls, stream: NegotiatedStream) -> SrtpContext:
        """The context for a stream that negotiated SDES keys."""
        if stream.srtp is None:
            raise NotAcceptable(f"{stream.kind} stream {stream.index} negotiated no SDES keys")
        keys = stream.srtp
        return cls(keys.suite, keys.local_key, keys.remote_key)

    def __repr__(self) -> str:
        # Never the keys: contexts end up in logs and tracebacks.
        return f"<SrtpContext {self.suite} errors={dict(self.errors)}>"

    @property
    def error_count(self) -> int:
        """Packets refused so far, whatever the reason."""
        return sum(self.errors.values())

    def protect_rtp(self, packet: bytes | bytearray) -> bytes:
        """RTP -> SRTP with our key."""
        return self._run(self._outbound.protect, packet, "protect RTP", outbound=True)

    def protect_rtcp(self, packet: bytes | bytearray) -> bytes:
        """RTCP -> SRTCP with our key."""
        return self._run(self._outbound.protect_rtcp, packet, "protect RTCP", outbound=True)

    def unprotect_rtp(self, packet: bytes | bytearray) -> bytes:
        """SRTP -> RTP with the peer's key; ``SrtpError`` if it does not authenticate."""
        return self._run(self._inbound.unprotect, packet, "unprotect RTP", outbound=False)

    def unprotect_rtcp(self, packet: bytes | bytearray) -> bytes:
        """SRTCP -> RTCP with the peer's key; ``SrtpError`` if it does not authenticate."""
        return self._run(self._inbound.unprotect_rtcp, packet, "unprotect RTCP", outbound=False)

    def _run(
        self,
        operation: Callable[[bytes], bytes],
        packet: bytes | bytearray,
        what: str,
        *,
        outbound: bool,
    ) -> bytes:
        try:
            result = operation(bytes(packet))
        except pylibsrtp.Error as exc:
            failure = _FAILURE_BY_MESSAGE.get(str(exc), SrtpFailure.OTHER)
            self.errors[failure] += 1
            raise SrtpError(f"{what}: {exc}", failure) from None
        except (ValueError, TypeError) as exc:
            # pylibsrtp's own checks: wrong type, longer than its buffer.
            self.errors[SrtpFailure.MALFORMED] += 1
            raise SrtpError(f"{what}: {exc}", SrtpFailure.MALFORMED) from None
        if outbound:
            self.protected += 1
        else:
            self.unprotected += 1
        return bytes(result)


def _is_dtls(stream: NegotiatedStream) -> bool:
    return stream.dtls_setup is not None or "TLS" in stream.proto.upper()


def uses_srtp(policy: SrtpPolicy, stream: NegotiatedStream) -> bool:
    """Whether this accepted stream runs SDES-SRTP (True) or plain RTP (False).

    Raises ``NotAcceptable`` (SIP 488) when the stream contradicts the
    policy: plain RTP under ``require``, SRTP under ``off``, a suite this
    build cannot run, or a DTLS stream (those belong to the WebRTC leg).
    """
    where = f"{stream.kind} stream {stream.index}"
    if not stream.accepted:
        raise NotAcceptable(f"{where} was refused: {stream.reason}")
    if _is_dtls(stream):
        raise NotAcceptable(f"{where} is DTLS-SRTP ({stream.proto}); SIP legs do SDES only")
    if stream.srtp is None:
        if policy is SrtpPolicy.REQUIRE:
            raise NotAcceptable(f"{where} is plain RTP and the SRTP policy is 'require'")
        return False
    if policy is SrtpPolicy.OFF:
        raise NotAcceptable(f"{where} negotiated SRTP and the SRTP policy is 'off'")
    _profile(stream.srtp.suite)
    return True


def srtp_context_for(policy: SrtpPolicy, stream: NegotiatedStream) -> SrtpContext | None:
    """The SRTP context a stream needs under ``policy``, None for plain RTP.

    Raises ``NotAcceptable`` as ``uses_srtp`` does, or when the keys are
    not the suite's length.
    """
    if not uses_srtp(policy, stream):
        return None
    return SrtpContext.from_stream(stream)
