"""What a SIP bridge's calls are made of, resolved from its settings (sans-IO).

``SipProfile`` is one ``bridges:`` entry with everything it refers to
filled in: the trunk's registrar, credentials and address of record, the
default SRTP policy and media addresses, the codec capabilities its names
stand for. A call keeps the profile it started with, so a reload never
changes a call in progress. ``rewrite_target`` turns what an agent typed
(a number or a URI) into the Request-URI.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bridges.base import BadTarget, BridgeSettings
from bridges.sip.addressing import parse_uri
from bridges.sip.registration import address_of_record, registrar_uri, trunk_transport
from gateway.media.capabilities import (
    DEFAULT_AUDIO_CODECS,
    DEFAULT_VIDEO_CODECS,
    SrtpPolicy,
)
from gateway.media.codec_params import CodecCapability
from gateway.settings import RewriteRule, Settings

__all__ = ["SipProfile", "build_profile", "rewrite_target"]

MAX_TARGET = 256
# RFC 3261 user characters (unreserved, user-unreserved, escapes) plus the
# visual separators of phone numbers that rules may strip.
_USER = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+")


@dataclass(frozen=True)
class SipProfile:
    """A bridge's settings with every reference resolved."""

    name: str
    proxy_uri: str
    transport: str
    #: Host[:port] of targets that are not URIs.
    domain: str
    #: The name a TLS proxy's certificate must carry (RFC 5922).
    server_name: str
    credentials: tuple[str, str] | None
    from_uri: str
    srtp: SrtpPolicy
    audio_codecs: tuple[CodecCapability, ...]
    video_codecs: tuple[CodecCapability, ...]
    dtmf: str
    rules: tuple[RewriteRule, ...]
    reject_unmatched: bool
    max_calls: int
    answer_timeout: float
    media_address: str
    media_address6: str | None
    rtp_timeout: float | None

    def routes_for(self, uri: str) -> list[str]:
        """The preloaded route set: the proxy, unless the Request-URI already names it."""
        target, proxy = parse_uri(uri), parse_uri(self.proxy_uri)
        if (target.host.lower(), target.port) == (proxy.host.lower(), proxy.port):
            return []
        return [f"<{self.proxy_uri};lr>"]


def _hostport(uri: str) -> str:
    parsed = parse_uri(uri)
    return parsed.host if parsed.port is None else f"{parsed.host}:{parsed.port}"


def _audio(names: Sequence[str], dtmf: str) -> tuple[CodecCapability, ...]:
    chosen = [c for name in names for c in DEFAULT_AUDIO_CODECS if c.name.lower() == name.lower()]
    if dtmf == "rfc4733":
        rates = {c.clock_rate for c in chosen}
        chosen += [
            c for c in DEFAULT_AUDIO_CODECS if c.name == "telephone-event" and c.clock_rate in rates
        ]
    return tuple(chosen)


def _video(names: Sequence[str]) -> tuple[CodecCapability, ...]:
    return tuple(
        c for name in names for c in DEFAULT_VIDEO_CODECS if c.name.lower() == name.lower()
    )


def build_profile(config: BridgeSettings, settings: Settings) -> SipProfile:
    """Resolve ``config`` against ``settings`` (trunks, media); settings were validated."""
    trunk = next((t for t in settings.sip.trunks if t.name == config.trunk), None)
    if trunk is not None:
        proxy = config.proxy or registrar_uri(trunk)
        transport = trunk_transport(trunk)
        credentials = (
            (trunk.username, trunk.password.get_secret_value())
            if trunk.username and trunk.password is not None
            else None
        )
        from_default = address_of_record(trunk)
    else:
        assert config.proxy is not None  # the settings model insists
        proxy = config.proxy
        transport = config.transport or "udp"
        credentials = (
            (config.username, config.password.get_secret_value())
            if config.username and config.password is not None
            else None
        )
        from_default = None
    proxy_uri = proxy if proxy.lower().startswith(("sip:", "sips:")) else f"sip:{proxy}"
    parsed = parse_uri(proxy_uri)
    params = {str(k).lower(): v for k, v in parsed.parameters.items()}
    if parsed.scheme == "sips":
        transport = "tls"
    elif trunk is None and config.transport is None and isinstance(params.get("transport"), str):
        transport = str(params["transport"]).lower()
    domain = config.domain or _hostport(proxy_uri)
    user = credentials[0] if credentials else "gatewayd"
    media = settings.media
    return SipProfile(
        name=config.name,
        proxy_uri=proxy_uri,
        transport=transport,
        domain=domain,
        server_name=parsed.host.strip("[]"),
        credentials=credentials,
        from_uri=config.from_uri or from_default or f"sip:{user}@{domain}",
        srtp=SrtpPolicy(config.srtp or media.srtp),
        audio_codecs=_audio(config.codecs.audio, config.dtmf),
        video_codecs=_video(config.codecs.video),
        dtmf=config.dtmf,
        rules=tuple(config.rewrite),
        reject_unmatched=config.reject_unmatched,
        max_calls=config.max_calls,
        answer_timeout=config.answer_timeout,
        media_address=media.address,
        media_address6=media.address6,
        rtp_timeout=media.rtp_timeout or None,
    )


def rewrite_target(
    target: str,
    rules: Sequence[RewriteRule],
    *,
    domain: str,
    reject_unmatched: bool = False,
) -> str:
    """The Request-URI for ``target``; ``BadTarget`` (400) when it is malformed or refused.

    The first rule whose ``match`` matches the whole target is applied; a
    result that is not a sip:/sips: URI becomes ``sip:<result>@<domain>``
    (a ``tel:`` number ``sip:<number>@<domain>;user=phone``).
    """
    text = target.strip()
    if not text or len(text) > MAX_TARGET:
        raise BadTarget(f"the target must be 1 to {MAX_TARGET} characters")
    if any(c.isspace() or c in '<>"' or ord(c) < 32 for c in text):
        raise BadTarget("the target may not contain spaces, quotes, <, > or control characters")
    for rule in rules:
        found = re.fullmatch(rule.match, text)
        if found is not None:
            text = found.expand(rule.replace)
            break
    else:
        if reject_unmatched and rules:
            raise BadTarget("no rewrite rule of this bridge accepts the target")
    scheme = text.split(":", 1)[0].lower() if ":" in text else ""
    if scheme in ("sip", "sips"):
        uri = text
    elif scheme == "tel":
        number = text[4:].split(";", 1)[0]
        uri = f"sip:{number}@{domain};user=phone"
    else:
        if not _USER.fullmatch(text):
            raise BadTarget("the target is neither a SIP URI nor a number or user name")
        uri = f"sip:{text}@{domain}"
    try:
        parsed = parse_uri(uri)
    except ValueError:
        raise BadTarget("the target is not a valid SIP URI") from None
    if parsed.scheme not in ("sip", "sips") or not parsed.host:
        raise BadTarget("the target is not a valid SIP URI")
    return uri
