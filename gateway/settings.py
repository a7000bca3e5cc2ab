"""Validated, frozen settings.

YAML (see ``config_source``) becomes pydantic v2 models here. Unknown keys
are errors, because a typo such as ``drian_timeout`` silently ignored is an
outage waiting for the next upgrade. Every error is reported as
``key.path: reason (line N)``, all of them at once.

Section models live here or, once this file is full, in ``settings_<name>.py``;
config/gatewayd.example.yaml documents every key (a test keeps them in step).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.config_source import (
    ConfigSource,
    apply_overrides,
    parse_yaml,
    resolve_references,
)
from gateway.errors import ConfigError
from gateway.settings_base import Section, check_host
from gateway.settings_bridges import (
    BridgeCodecs,
    BridgeEntry,
    RewriteRule,
    SipBridgeSettings,
    WhipBridgeSettings,
)
from gateway.settings_dialin import DialInSettings

#: Public names; the bridge entries and ``Section`` live in settings_bridges/settings_base.
__all__ = [
    "ApiSettings",
    "AppointmentSettings",
    "BrandingSettings",
    "BridgeCodecs",
    "BridgeEntry",
    "FooterLink",
    "IceServer",
    "LogSettings",
    "MediaSettings",
    "Port",
    "RewriteRule",
    "Seconds",
    "Section",
    "Settings",
    "SipAccess",
    "SipBridgeSettings",
    "SipLimits",
    "SipSettings",
    "SipTimers",
    "SipTls",
    "SipTransportName",
    "SipTrunk",
    "SystemdSettings",
    "TlsSettings",
    "WebRtcSettings",
    "WebSettings",
    "WhipBridgeSettings",
    "load_settings",
    "load_settings_file",
    "restart_only_changes",
]

Port = Annotated[int, Field(ge=1, le=65535, strict=True)]
Seconds = Annotated[float, Field(gt=0, le=86400)]


class LogSettings(Section):
    """Logging: JSON lines on stdout (journald picks them up)."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"
    #: Truncate IP addresses in logs (IPv4 /24, IPv6 /48): an address is personal data.
    redact_ip: bool = True


class TlsSettings(Section):
    """A certificate and key in PEM files."""

    cert_file: Path
    key_file: Path

    @model_validator(mode="after")
    def _files_readable(self) -> TlsSettings:
        for name in ("cert_file", "key_file"):
            path: Path = getattr(self, name)
            if not path.is_file():
                raise ValueError(f"{name} {path} does not exist or is not a file")
        return self


class WebSettings(Section):
    """The HTTP(S) port: pages, signaling, REST API and the ops endpoints."""

    host: str = "127.0.0.1"
    port: Port = 8080
    tls: TlsSettings | None = None
    #: When set, GET /metrics requires ``Authorization: Bearer <token>``.
    metrics_token: SecretStr | None = None
    #: Largest request body accepted, in bytes.
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024

    _host = field_validator("host")(check_host)

    @field_validator("metrics_token")
    @classmethod
    def _token_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (or leave it out)")
        return value


SipTransportName = Literal["udp", "tcp", "tls", "ws", "wss"]
_DEFAULT_TRANSPORTS: tuple[SipTransportName, ...] = ("udp", "tcp")


class SipTimers(Section):
    """RFC 3261 timer base values, in seconds."""

    t1: Annotated[float, Field(ge=0.05, le=10)] = 0.5
    t2: Annotated[float, Field(ge=0.5, le=60)] = 4.0
    t4: Annotated[float, Field(ge=0.5, le=60)] = 5.0

    @model_validator(mode="after")
    def _order(self) -> SipTimers:
        if self.t2 < self.t1:
            raise ValueError("t2 must not be smaller than t1")
        return self


class SipLimits(Section):
    """Caps that protect the node from floods and oversized messages."""

    max_header_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024)] = 16 * 1024
    max_body_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    #: Transactions in progress before new requests get 503 + Retry-After.
    max_transactions: Annotated[int, Field(ge=10, le=1_000_000)] = 20_000
    #: Unauthenticated requests per second per source address (0 = no limit).
    requests_per_second: Annotated[float, Field(ge=0, le=100_000)] = 50.0
    burst: Annotated[int, Field(ge=1, le=100_000)] = 100
    max_connections: Annotated[int, Field(ge=1, le=1_000_000)] = 4096
    #: SO_RCVBUF of the UDP listener in bytes; the kernel caps it at net.core.rmem_max.
    udp_receive_buffer: Annotated[int, Field(ge=0, le=256 * 1024 * 1024)] = 4 * 1024 * 1024
    #: Seconds a TCP/TLS connection may stay without a whole message before it is closed.
    idle_timeout: Annotated[float, Field(gt=0, le=86400)] = 600.0


class SipAccess(Section):
    """Which source addresses may talk SIP to this node (CIDR or single addresses)."""

    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)

    @field_validator("allow", "deny")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return value


class SipTls(Section):
    """Certificates for SIP over TLS / WSS (server side) and peer verification."""

    cert_file: Path
    key_file: Path
    #: CA bundle to verify peers; the system store when left out.
    ca_file: Path | None = None
    verify_peer: bool = True


class SipTrunk(Section):
    """A registrar we REGISTER at and/or a peer we keep alive with OPTIONS."""

    name: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z0-9_-]+$")]
    registrar: Annotated[str, Field(min_length=1)]
    transport: Literal["udp", "tcp", "tls"] = "udp"
    username: str | None = None
    password: SecretStr | None = None
    #: Address of record, default sip:<username>@<registrar host>.
    aor: str | None = None
    #: REGISTER at the registrar (false: only OPTIONS keep-alive).
    registration: bool = True
    expires: Annotated[int, Field(ge=60, le=86400)] = 600
    #: OPTIONS keep-alive interval; 0 turns it off.
    options_interval: Annotated[float, Field(ge=0, le=3600)] = 30.0

    @model_validator(mode="after")
    def _credentials(self) -> SipTrunk:
        if self.registration and not self.username:
            raise ValueError("a trunk that registers needs a username")
        return self


class SipSettings(Section):
    """The SIP listener and its peers."""

    host: str = "127.0.0.1"
    port: Port = 5060
    tls_port: Port = 5061
    ws_port: Port = 5066
    wss_port: Port = 5067
    transports: list[SipTransportName] = Field(default_factory=lambda: list(_DEFAULT_TRANSPORTS))
    #: Host name or address put in Via/Contact when it differs from ``host`` (behind NAT).
    public_host: str | None = None
    #: Retry-After (seconds) sent with 503 while draining or overloaded.
    retry_after: Annotated[int, Field(ge=1, le=3600)] = 30
    user_agent: str = "gatewayd"
    #: The built-in echo service answers calls to sip:<echo_user>@<this node>; "" turns it off.
    echo_user: str = "echo"
    timers: SipTimers = SipTimers()
    limits: SipLimits = SipLimits()
    access: SipAccess = SipAccess()
    tls: SipTls | None = None
    trunks: list[SipTrunk] = Field(default_factory=list)
    dial_in: DialInSettings = DialInSettings()  # calls into rooms (settings_dialin.py)

    _host = field_validator("host")(check_host)

    @field_validator("transports")
    @classmethod
    def _transports_unique(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one transport is needed")
        if len(set(value)) != len(value):
            raise ValueError("each transport may be listed once")
        return value

    @field_validator("trunks")
    @classmethod
    def _trunk_names_unique(cls, value: list[SipTrunk]) -> list[SipTrunk]:
        names = [t.name for t in value]
        if len(set(names)) != len(names):
            raise ValueError("trunk names must be unique")
        return value

    @model_validator(mode="after")
    def _tls_needs_certificates(self) -> SipSettings:
        if any(t in ("tls", "wss") for t in self.transports) and self.tls is None:
            raise ValueError(
                "transports tls/wss need a sip.tls section with cert_file and key_file"
            )
        return self


class MediaSettings(Section):
    """RTP media of SIP legs (browser legs use ICE, configured with the web side)."""

    #: Address written into SDP c= lines and bound for RTP (IPv4 or IPv6).
    address: str = "127.0.0.1"
    #: Optional IPv6 address for peers whose SDP is IP6.
    address6: str | None = None
    rtp_port_min: Port = 20000
    rtp_port_max: Port = 29999
    #: SO_RCVBUF / SO_SNDBUF of RTP sockets, bytes.
    socket_buffer_bytes: Annotated[int, Field(ge=16 * 1024, le=64 * 1024 * 1024)] = 1024 * 1024
    #: A SIP leg that sends no RTP for this long is hung up (0: never).
    rtp_timeout: Annotated[float, Field(ge=0, le=3600)] = 30.0
    #: SDES-SRTP on SIP legs: require (RTP/SAVP only), offer (prefer SRTP), off.
    srtp: Literal["require", "offer", "off"] = "offer"
    #: Threads for decoding/encoding (0: one per CPU core).
    codec_threads: Annotated[int, Field(ge=0, le=256)] = 0
    #: Opus encoder complexity 0-10 for transcoded audio (unset: 1 next to G.711,
    #: where it sounds the same and costs a third, else 5; see docs/media.md).
    opus_complexity: Annotated[int, Field(ge=0, le=10)] | None = None
    #: Transcoded frames are played out on this grid (seconds), so that many
    #: streams come due in one wake-up of the event loop (0: each on its own).
    playout_grid: Annotated[float, Field(ge=0, le=0.02)] = 0.01
    #: What a room system (a SIP leg with video) sees in a room of three or more:
    #: "grid" (up to four others composed into one picture) or "speaker" (the
    #: active speaker only, passed through where the codecs match: cheaper).
    sip_layout: Literal["grid", "speaker"] = "grid"

    _address = field_validator("address")(check_host)

    @model_validator(mode="after")
    def _port_range(self) -> MediaSettings:
        if self.rtp_port_max - self.rtp_port_min < 2:
            raise ValueError("rtp_port_max must be at least rtp_port_min + 2")
        for name in ("address", "address6"):
            value = getattr(self, name)
            if value is not None:
                try:
                    ipaddress.ip_address(value)
                except ValueError:
                    raise ValueError(f"{name} must be an IP address, not a name") from None
        return self


class IceServer(Section):
    """One STUN or TURN server handed to browsers and used by the gateway's own ICE agent."""

    #: ``stun:host[:port]``, ``turn:host[:port][?transport=udp|tcp]`` or ``turns:host[:port]``.
    urls: Annotated[list[str], Field(min_length=1)]
    #: Long-term TURN credentials (leave out with ``turn_secret``).
    username: str | None = None
    credential: SecretStr | None = None
    #: coturn ``use-auth-secret``: ephemeral credentials (TURN REST API) from this secret.
    turn_secret: SecretStr | None = None
    #: Lifetime of ephemeral TURN credentials, seconds.
    ttl: Annotated[int, Field(ge=60, le=7 * 86400)] = 86400

    @field_validator("urls")
    @classmethod
    def _schemes(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
                raise ValueError(f"{url!r} is not a stun:, stuns:, turn: or turns: URL")
        return value

    @model_validator(mode="after")
    def _one_kind_of_credential(self) -> IceServer:
        if self.turn_secret is not None and (self.username or self.credential):
            raise ValueError("turn_secret (ephemeral) and username/credential exclude each other")
        if (self.username is None) != (self.credential is None):
            raise ValueError("username and credential go together")
        return self


class WebRtcSettings(Section):
    """Browser legs (ICE, DTLS-SRTP) on aiortc."""

    #: Addresses the gateway offers as ICE host candidates (aioice leaves out
    #: 127.0.0.1 unless it is listed here). Ports are ephemeral (aioice 0.13
    #: cannot bind within a range).
    ice_addresses: Annotated[list[str], Field(min_length=1)] = ["127.0.0.1"]
    #: STUN/TURN servers; empty means host candidates only (never a public default).
    ice_servers: list[IceServer] = []
    #: Browser legs this node accepts at once.
    max_legs: Annotated[int, Field(ge=1, le=100000)] = 200
    #: A leg whose ICE and DTLS are not up this long after offer/answer fails
    #: (browsers rarely signal end-of-candidates, so ICE alone may wait forever).
    connect_timeout: Annotated[float, Field(gt=0, le=600)] = 30.0

    @field_validator("ice_addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(f"{address!r} must be an IP address, not a name") from None
        return value


class SystemdSettings(Section):
    """Integration with systemd's notify protocol (used only under systemd)."""

    notify: bool = True
    #: Fraction of WatchdogSec between WATCHDOG=1 pings.
    watchdog_fraction: Annotated[float, Field(gt=0.05, le=0.9)] = 0.5


class ApiSettings(Section):
    """The REST API under /api/v1 (appointment booking by other systems)."""

    #: Bearer tokens accepted (give them by reference: ${env:...} or ${file:...});
    #: empty entries are ignored, and with none left the REST API is off.
    tokens: list[SecretStr] = Field(default_factory=list)

    @field_validator("tokens")
    @classmethod
    def _tokens_long(cls, value: list[SecretStr]) -> list[SecretStr]:
        kept = [token for token in value if token.get_secret_value()]
        if any(len(token.get_secret_value()) < 16 for token in kept):
            raise ValueError("API tokens need at least 16 characters")
        return kept


class AppointmentSettings(Section):
    """Appointment defaults and how long citizen links work."""

    #: Languages offered; the first is the default (German first).
    languages: list[Annotated[str, Field(pattern=r"^[a-z]{2}$")]] = Field(
        default_factory=lambda: ["de", "en"], min_length=1
    )
    #: Minutes an appointment lasts when the request does not say.
    default_duration_min: Annotated[int, Field(ge=5, le=480)] = 60
    #: Seconds before the start from which the citizen link opens.
    link_lead: Annotated[float, Field(ge=0, le=7 * 86400)] = 3600.0
    #: Seconds after the end until which the link still works.
    link_grace: Annotated[float, Field(ge=0, le=86400)] = 1800.0
    #: Base of the links handed out (https://video.agency.example); default:
    #: the web listener's own address.
    public_url: AnyHttpUrl | None = None


class FooterLink(Section):
    """One link in the footer of every page (imprint, privacy policy, accessibility)."""

    label: Annotated[str, Field(min_length=1, max_length=80)]
    url: Annotated[str, Field(min_length=1, max_length=500, pattern=r"^(https?://|/)")]


def _relative_luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


class BrandingSettings(Section):
    """The agency's look on the citizen and agent pages."""

    #: Shown in the header and the page titles.
    agency_name: Annotated[str, Field(min_length=1, max_length=120)] = "gatewayd"
    #: PNG, SVG, JPEG or WebP file served as /branding/logo; none: the name only.
    logo_file: Path | None = None
    #: Buttons and the header bar, #rrggbb; white text on it needs 4.5:1 contrast (WCAG AA).
    primary_color: Annotated[str, Field(pattern=r"^#[0-9a-fA-F]{6}$")] = "#004b87"
    #: Footer links, e.g. imprint and privacy policy.
    footer_links: list[FooterLink] = Field(default_factory=list)

    @field_validator("primary_color")
    @classmethod
    def _contrast(cls, value: str) -> str:
        ratio = 1.05 / (_relative_luminance(value) + 0.05)
        if ratio < 4.5:
            raise ValueError(
                f"white text on {value} has contrast {ratio:.1f}:1; WCAG AA needs 4.5:1"
            )
        return value.lower()

    @field_validator("logo_file")
    @classmethod
    def _logo(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        if value.suffix.lower() not in (".png", ".svg", ".jpg", ".jpeg", ".webp"):
            raise ValueError("the logo must be a .png, .svg, .jpg or .webp file")
        if not value.is_file():
            raise ValueError(f"{value} does not exist or is not a file")
        return value


_Bridge = TypeVar("_Bridge", "SipBridgeSettings", "WhipBridgeSettings")


class Settings(Section):
    """Everything an operator can set. Defaults are the embedded one-node setup."""

    #: Names this node in metrics and logs; defaults to the host name.
    node_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] = (
        "gatewayd"
    )
    #: Directory for the SQLite store and other state; created at start.
    data_dir: Path = Path("./var")
    #: Seconds active calls get to end after SIGTERM before they are hung up.
    drain_timeout: Seconds = 30.0
    log: LogSettings = LogSettings()
    web: WebSettings = WebSettings()
    sip: SipSettings = SipSettings()
    media: MediaSettings = MediaSettings()
    webrtc: WebRtcSettings = WebRtcSettings()
    api: ApiSettings = ApiSettings()
    appointments: AppointmentSettings = AppointmentSettings()
    branding: BrandingSettings = BrandingSettings()
    systemd: SystemdSettings = SystemdSettings()
    #: Connectors to other systems for dial-out (docs/sip.md, "Bridges").
    bridges: list[BridgeEntry] = Field(default_factory=list)

    @field_validator("bridges")
    @classmethod
    def _bridges_consistent(
        cls, value: list[SipBridgeSettings | WhipBridgeSettings], info: ValidationInfo
    ) -> list[SipBridgeSettings | WhipBridgeSettings]:
        names = [b.name for b in value]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"bridge names must be unique: {', '.join(doubled)}")
        sip = info.data.get("sip")  # validated before bridges; absent when it was invalid
        trunks = {t.name for t in sip.trunks} if isinstance(sip, SipSettings) else None
        for bridge in value:
            if not isinstance(bridge, SipBridgeSettings):
                continue
            if trunks is not None and bridge.trunk is not None and bridge.trunk not in trunks:
                raise ValueError(
                    f"bridge {bridge.name!r} refers to trunk {bridge.trunk!r}, which is not in "
                    f"sip.trunks ({', '.join(sorted(trunks)) or 'none configured'})"
                )
        return value

    def bridges_of(self, kind: type[_Bridge]) -> list[_Bridge]:
        """The ``bridges:`` entries of one type (``SipBridgeSettings``, ``WhipBridgeSettings``)."""
        return [bridge for bridge in self.bridges if isinstance(bridge, kind)]

    @model_validator(mode="after")
    def _ports_distinct(self) -> Settings:
        if self.web.port == self.sip.port and self.web.host == self.sip.host:
            uses_tcp = any(t in ("tcp", "tls", "ws", "wss") for t in self.sip.transports)
            if uses_tcp:
                raise ValueError(
                    f"web.port and sip.port are both {self.web.port} on {self.web.host}"
                )
        return self


def load_settings(
    text: str,
    *,
    overrides: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Turn YAML text into ``Settings`` or raise ``ConfigError`` listing every problem."""
    source = parse_yaml(text)
    # Structural problems (duplicate keys) do not stop validation: the
    # operator gets every error in one pass. Syntax errors leave no data.
    apply_overrides(source, overrides or [])
    resolve_references(source, environ)
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(source.data)
    except ValidationError as exc:
        _collect_validation_problems(exc, source)
    if source.problems or settings is None:
        raise ConfigError(source.problems)
    return settings


def load_settings_file(
    path: Path,
    *,
    overrides: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read and validate a YAML file; an unreadable file is a ``ConfigError`` too."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text"]) from exc
    return load_settings(text, overrides=overrides, environ=environ)


_MESSAGES = {
    "extra_forbidden": "unknown key (check the spelling; see config/gatewayd.example.yaml)",
    "missing": "required key is missing",
    "model_type": "must be a mapping of keys",
    "dict_type": "must be a mapping of keys",
    "list_type": "must be a list",
}


#: The ``type`` values of ``bridges:`` entries (pydantic puts the tag into error paths).
_BRIDGE_TYPES = ("sip", "whip")


def _collect_validation_problems(exc: ValidationError, source: ConfigSource) -> None:
    for error in exc.errors(include_url=False, include_input=False):
        path = tuple(p for p in error["loc"] if isinstance(p, str | int))
        if len(path) > 2 and path[0] == "bridges" and path[2] in _BRIDGE_TYPES:
            path = path[:2] + path[3:]  # bridges.0.sip.proxy is bridges.0.proxy in the YAML
        if error["type"] in ("union_tag_not_found", "union_tag_invalid"):
            path = (*path, "type")  # said as for any other key
            message = _MESSAGES["missing"]
            if error["type"] == "union_tag_invalid":
                message = "input should be " + " or ".join(f"'{t}'" for t in _BRIDGE_TYPES)
        else:
            message = _MESSAGES.get(error["type"], _clean_message(error["msg"]))
        source.problem(path, message)


def _clean_message(message: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message[:1].lower() + message[1:] if message else "invalid value"


def restart_only_changes(old: Settings, new: Settings) -> list[str]:
    """Keys that differ between two configurations but only take effect on restart."""
    changed: list[str] = []
    for key in (
        "web.host",
        "web.port",
        "web.tls",
        "sip.host",
        "sip.port",
        "sip.transports",
        "data_dir",
    ):
        if _dig(old, key) != _dig(new, key):
            changed.append(key)
    return changed


def _dig(model: BaseModel, dotted: str) -> Any:
    value: Any = model
    for part in dotted.split("."):
        value = getattr(value, part)
    return value
