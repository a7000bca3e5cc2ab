"""The ``bridges:`` entries of the settings: ``sip`` (dial-out, docs/sip.md) and
``whip`` (pushing a room to another system, docs/whip.md). ``gateway.settings``
re-exports every name; import them from there."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator, model_validator

from gateway.settings_base import Section, check_host

_AUDIO_CODEC_NAMES = ("opus", "G722", "PCMU", "PCMA")
_VIDEO_CODEC_NAMES = ("VP8", "H264")
_GROUP_REFERENCE = re.compile(r"\\(?:g<([^>]*)>|(\d+))")
_PROXY = re.compile(r"^(?:sips?:)?(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?(?:;[^;\s]+)*$")


def _codec_names(value: list[str], known: tuple[str, ...], kind: str) -> list[str]:
    canonical = {name.lower(): name for name in known}
    names = []
    for item in value:
        name = canonical.get(item.lower())
        if name is None:
            raise ValueError(f"unknown {kind} codec {item!r}; known: {', '.join(known)}")
        if name in names:
            raise ValueError(f"{kind} codec {name} is listed twice")
        names.append(name)
    return names


class BridgeCodecs(Section):
    """Codecs offered on a bridge's calls, per media, in order of preference."""

    audio: Annotated[list[str], Field(min_length=1)] = Field(
        default_factory=lambda: list(_AUDIO_CODEC_NAMES)
    )
    #: Empty: audio-only calls (no video is offered or accepted).
    video: list[str] = Field(default_factory=lambda: list(_VIDEO_CODEC_NAMES))

    @field_validator("audio")
    @classmethod
    def _audio(cls, value: list[str]) -> list[str]:
        return _codec_names(value, _AUDIO_CODEC_NAMES, "audio")

    @field_validator("video")
    @classmethod
    def _video(cls, value: list[str]) -> list[str]:
        return _codec_names(value, _VIDEO_CODEC_NAMES, "video")


class RewriteRule(Section):
    """Turn a dialled number or URI into the Request-URI (first matching rule wins).

    ``match`` is a Python regular expression that must match the whole target;
    ``replace`` may use its groups (``\\1``, ``\\g<name>``). A result without
    ``sip:``/``sips:`` becomes ``sip:<result>@<domain>``.
    """

    match: Annotated[str, Field(min_length=1, max_length=500)]
    replace: Annotated[str, Field(max_length=500)]

    @model_validator(mode="after")
    def _compiles(self) -> RewriteRule:
        try:
            pattern = re.compile(self.match)
        except re.error as exc:
            raise ValueError(f"match {self.match!r} is not a regular expression: {exc}") from None
        for name, number in _GROUP_REFERENCE.findall(self.replace):
            if number and int(number) > pattern.groups:
                raise ValueError(
                    f"replace refers to group {number} but match has {pattern.groups} group(s)"
                )
            if (
                name
                and not (name.isdigit() and int(name) <= pattern.groups)
                and (name not in pattern.groupindex)
            ):
                raise ValueError(f"replace refers to group {name!r}, which match does not define")
        return self


class SipBridgeSettings(Section):
    """A SIP bridge: where dialled-out calls go and how they are set up.

    Either ``trunk`` names an entry of ``sip.trunks`` (its registrar is the
    proxy, its credentials answer challenges, its address of record is our
    From), or ``proxy`` (and ``username``/``password`` when the proxy
    challenges) is given here; not both, so a secret is configured once.
    """

    name: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z0-9_-]+$")]
    type: Literal["sip"]
    #: Name of a ``sip.trunks`` entry whose registrar, transport, credentials and AOR are used.
    trunk: str | None = None
    #: Outbound proxy (``sip:host[:port][;transport=tcp]`` or ``host[:port]``); located
    #: with RFC 3263. Default with ``trunk``: the trunk's registrar.
    proxy: str | None = None
    #: Host part for targets that are not URIs (default: the proxy's host).
    domain: str | None = None
    transport: Literal["udp", "tcp", "tls"] | None = None
    username: str | None = None
    password: SecretStr | None = None
    #: Our From address (default: the trunk's AOR, else sip:<username|gatewayd>@<domain>).
    from_uri: str | None = None
    #: SDES-SRTP on this bridge's calls (default: media.srtp).
    srtp: Literal["require", "offer", "off"] | None = None
    codecs: BridgeCodecs = BridgeCodecs()
    #: How key presses are signalled: rfc4733 (telephone-event), info (SIP INFO), inband.
    dtmf: Literal["rfc4733", "info", "inband"] = "rfc4733"
    rewrite: list[RewriteRule] = Field(default_factory=list)
    #: Refuse targets no rewrite rule matches (false: use them unchanged).
    reject_unmatched: bool = False
    #: Calls on this bridge at once; more are refused locally.
    max_calls: Annotated[int, Field(ge=1, le=100_000)] = 10
    #: Seconds a callee may ring before the call is cancelled.
    answer_timeout: Annotated[float, Field(gt=0, le=600)] = 60.0

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        if value is not None and not _PROXY.match(value.strip()):
            raise ValueError("must be sip:host[:port][;params] or host[:port]")
        return None if value is None else value.strip()

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        return None if value is None else check_host(value)

    @field_validator("from_uri")
    @classmethod
    def _from_uri(cls, value: str | None) -> str | None:
        if value is not None and (
            not value.lower().startswith(("sip:", "sips:")) or any(c in value for c in '<>"\r\n ')
        ):
            raise ValueError("must be a sip: or sips: URI without <>, quotes or spaces")
        return value

    @model_validator(mode="after")
    def _one_source_of_truth(self) -> SipBridgeSettings:
        if self.trunk is not None:
            doubled = [k for k in ("username", "password", "transport") if getattr(self, k)]
            if doubled:
                raise ValueError(
                    f"{', '.join(doubled)}: set in the trunk {self.trunk!r}, not again here"
                )
        elif self.proxy is None:
            raise ValueError("a sip bridge needs a proxy or a trunk")
        if self.password is not None and not self.username:
            raise ValueError("a password needs a username")
        return self


class WhipBridgeSettings(Section):
    """A WHIP bridge: pushes an appointment room's media to another system's WHIP
    endpoint (RFC 9725), as a viewer of the room (docs/whip.md)."""

    name: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z0-9_-]+$")]
    type: Literal["whip"]
    #: The remote WHIP endpoint (the POST URL), http or https.
    url: AnyHttpUrl
    #: Bearer token the remote endpoint wants (give it by reference: ${file:...}).
    token: SecretStr | None = None
    #: Pushes on this bridge at once; more are refused locally.
    max_calls: Annotated[int, Field(ge=1, le=100_000)] = 10
    #: Seconds each HTTP request to the remote endpoint may take.
    request_timeout: Annotated[float, Field(gt=0, le=120)] = 10.0


#: One ``bridges:`` entry; ``type`` says which.
BridgeEntry = Annotated[SipBridgeSettings | WhipBridgeSettings, Field(discriminator="type")]
