"""Our codecs and how an offered payload format is matched against them.

A codec matches when name (case-insensitive), clock rate and channels are
equal and the codec's own fmtp rules agree:

* H.264 (RFC 6184): the profile (profile_idc and the constraint flags of
  profile-iop) and packetization-mode must be equal; the level may differ
  and the answer carries the level we receive (section 8.2.2, with
  level-asymmetry-allowed) or the lower of both (without it).
* telephone-event (RFC 4733): the answer lists the events both sides know.
* Opus (RFC 7587): every parameter is a receiver preference, so nothing in
  fmtp prevents a match; the peer's parameters are carried to the result.
* everything else: name, rate and channels decide.

The profile classification reuses aiortc's ``parse_h264_profile_level_id``
(the same table libwebrtc uses), so ``42e01f`` and ``42c01f`` are both
Constrained Baseline as a browser sees them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiortc.sdp import parse_h264_profile_level_id

from gateway.media.sdp_attributes import (
    PayloadFormat,
    format_fmtp_parameters,
    parse_fmtp_parameters,
)

# Formats that ride along a real codec and are never "the" codec of a stream;
# they are left out of "no common codec" messages and of codec ordering.
AUXILIARY_CODECS = frozenset({"telephone-event", "cn", "rtx", "red", "ulpfec", "flexfec-03"})

# RFC 6184 section 8.1: an absent profile-level-id means Baseline level 1.0 (level_idc 10).
H264_DEFAULT_PROFILE_LEVEL_ID = "42000a"

# RFC 4733 section 2.4.1: an absent fmtp means the DTMF events 0-15.
TELEPHONE_EVENT_DEFAULT = "0-15"

# profile_idc values where constraint_set3_flag with level_idc 11 means 1b.
_LEVEL_1B_BY_FLAG = frozenset({0x42, 0x4D, 0x58})


@dataclass(frozen=True)
class CodecCapability:
    """A codec we can send and receive, as we write it into SDP.

    ``payload_type`` is what we use when we offer (answers use the
    offerer's); ``fmtp`` and ``rtcp_feedback`` are what we announce.
    G.722 is written with ``clock_rate`` 8000 although it samples at 16 kHz
    (RFC 3551 section 4.5.2).
    """

    name: str
    clock_rate: int
    payload_type: int
    channels: int = 1
    fmtp: str | None = None
    rtcp_feedback: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The lower-cased name, for comparisons."""
        return self.name.lower()

    @property
    def is_auxiliary(self) -> bool:
        """True for telephone-event, CN, RTX, RED and FEC formats."""
        return self.key in AUXILIARY_CODECS

    def matches(self, offered: PayloadFormat) -> bool:
        """Whether the offered payload format is this codec."""
        if offered.encoding is None or offered.encoding.lower() != self.key:
            return False
        if offered.clock_rate != self.clock_rate:
            return False
        # RFC 7587 requires opus/48000/2, but some phones write opus/48000;
        # it is the same codec, so the channel count is not compared.
        if self.key != "opus" and offered.channels != self.channels:
            return False
        if self.key == "h264":
            return _h264_matches(self.parameters, offered.parameters)
        if self.key == "telephone-event":
            return bool(_common_events(self.fmtp, offered.fmtp))
        return True

    @property
    def parameters(self) -> dict[str, str | None]:
        """Our fmtp parameters, names lower-cased."""
        return parse_fmtp_parameters(self.fmtp)

    def answer_fmtp(self, offered: PayloadFormat) -> str | None:
        """The fmtp we write for this codec when we answer ``offered``
        (which must match)."""
        if self.key == "h264":
            return _h264_answer_fmtp(self.parameters, offered.parameters)
        if self.key == "telephone-event":
            return format_events(_common_events(self.fmtp, offered.fmtp))
        if self.key == "rtx":
            return offered.fmtp  # apt names the offerer's payload type
        return self.fmtp

    def rtpmap_text(self) -> str:
        """``<encoding>/<rate>[/<channels>]`` for our rtpmap line."""
        base = f"{self.name}/{self.clock_rate}"
        return f"{base}/{self.channels}" if self.channels != 1 else base


@dataclass(frozen=True)
class H264ProfileLevelId:
    """The three bytes of H.264 ``profile-level-id`` (RFC 6184 section 8.1)."""

    profile_idc: int
    profile_iop: int
    level_idc: int

    @classmethod
    def parse(cls, text: str | None) -> H264ProfileLevelId | None:
        """Six hex digits; None for anything else."""
        text = text or H264_DEFAULT_PROFILE_LEVEL_ID
        if not re.fullmatch(r"[0-9A-Fa-f]{6}", text):
            return None
        return cls(int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16))

    @property
    def is_level_1b(self) -> bool:
        """Level 1b is spelt two ways (RFC 6184 section 8.1)."""
        if self.profile_idc in _LEVEL_1B_BY_FLAG:
            return self.level_idc == 11 and bool(self.profile_iop & 0x10)
        return self.level_idc == 9

    @property
    def level(self) -> float:
        """The level as an orderable number: 1b sits between 1 and 1.1."""
        return 10.5 if self.is_level_1b else float(self.level_idc)

    def profile_name(self) -> str:
        """The named profile (as libwebrtc classifies it), or the raw
        profile_idc and profile-iop for profiles outside that table."""
        try:
            profile, _level = parse_h264_profile_level_id(
                f"{self.profile_idc:02x}{self.profile_iop:02x}1f"
            )
        except ValueError:
            return f"{self.profile_idc:02x}{self.profile_iop:02x}"
        return str(profile.name)

    def with_level_of(self, other: H264ProfileLevelId) -> H264ProfileLevelId:
        """This profile at the level of ``other``, respelling level 1b."""
        iop = self.profile_iop
        if self.profile_idc in _LEVEL_1B_BY_FLAG:
            iop &= ~0x10
            if other.is_level_1b:
                return H264ProfileLevelId(self.profile_idc, iop | 0x10, 11)
        elif other.is_level_1b:
            return H264ProfileLevelId(self.profile_idc, iop, 9)
        return H264ProfileLevelId(self.profile_idc, iop, other.level_idc)

    def __str__(self) -> str:
        return f"{self.profile_idc:02x}{self.profile_iop:02x}{self.level_idc:02x}"


def _packetization_mode(parameters: dict[str, str | None]) -> str:
    return (parameters.get("packetization-mode") or "0").strip()


def _h264_matches(ours: dict[str, str | None], theirs: dict[str, str | None]) -> bool:
    local = H264ProfileLevelId.parse(ours.get("profile-level-id"))
    remote = H264ProfileLevelId.parse(theirs.get("profile-level-id"))
    if local is None or remote is None:
        return False
    if local.profile_name() != remote.profile_name():
        return False
    return _packetization_mode(ours) == _packetization_mode(theirs)


def _h264_answer_fmtp(ours: dict[str, str | None], theirs: dict[str, str | None]) -> str:
    local = H264ProfileLevelId.parse(ours.get("profile-level-id"))
    remote = H264ProfileLevelId.parse(theirs.get("profile-level-id"))
    assert local is not None and remote is not None  # matches() was true
    asymmetric = ours.get("level-asymmetry-allowed") == "1" == theirs.get("level-asymmetry-allowed")
    # With asymmetry each side states the level it receives; without it the
    # level is shared, so it must be one both can decode.
    level_from = local if asymmetric or local.level <= remote.level else remote
    answer = dict(ours)
    answer["profile-level-id"] = str(remote.with_level_of(level_from))
    answer["packetization-mode"] = _packetization_mode(theirs)
    return format_fmtp_parameters(answer)


def parse_events(text: str | None) -> frozenset[int]:
    """The RFC 4733 event list ``0-15,66,70-74``; unreadable parts skipped."""
    events: set[int] = set()
    for item in (text or TELEPHONE_EVENT_DEFAULT).split(","):
        low, _, high = item.strip().partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            continue
        first, last = int(low), int(high or low)
        if first <= last <= 255:
            events.update(range(first, last + 1))
    return frozenset(events)


def format_events(events: frozenset[int]) -> str:
    """The inverse of ``parse_events``, with ranges collapsed."""
    parts: list[str] = []
    ordered = sorted(events)
    start = previous = ordered[0] if ordered else 0
    for event in [*ordered[1:], None]:
        if event is not None and event == previous + 1:
            previous = event
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if event is not None:
            start = previous = event
    return ",".join(parts) if ordered else ""


def _common_events(ours: str | None, theirs: str | None) -> frozenset[int]:
    return parse_events(ours) & parse_events(theirs)
