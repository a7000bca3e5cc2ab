"""Every Prometheus metric of gatewayd, declared once.

Rules: names follow Prometheus conventions (``gatewayd_`` prefix, ``_total``
for counters, base units), and labels have a small fixed set of values —
never a user, a number, a URI or an address. Modules import the metric
objects from here; nothing else creates metrics.
"""

from __future__ import annotations

import platform

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from gateway import __version__

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# --- process and lifecycle -------------------------------------------------
BUILD_INFO = Info("gatewayd_build", "Version of gatewayd and its runtime", registry=REGISTRY)
UP = Gauge(
    "gatewayd_up",
    "1 while the node is ready for new calls, 0 while starting or draining",
    registry=REGISTRY,
)
CONFIG_RELOADS = Counter(
    "gatewayd_config_reloads_total",
    "Configuration reloads (SIGHUP) by result",
    ["result"],
    registry=REGISTRY,
)
CALLS_ACTIVE = Gauge("gatewayd_calls_active", "Calls in progress on this node", registry=REGISTRY)
CALLS_REJECTED = Counter(
    "gatewayd_calls_rejected_total",
    "New calls refused by this node, by reason",
    ["reason"],
    registry=REGISTRY,
)
DRAIN_SECONDS = Histogram(
    "gatewayd_drain_duration_seconds",
    "Time from SIGTERM until every call ended",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800),
    registry=REGISTRY,
)
ERRORS = Counter(
    "gatewayd_internal_errors_total",
    "Exceptions caught at a boundary and logged, by component",
    ["component"],
    registry=REGISTRY,
)

# --- web ----------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "gatewayd_http_requests_total",
    "HTTP requests by route group and status class",
    ["route", "code_class"],
    registry=REGISTRY,
)

# --- SIP ---------------------------------------------------------------------
SIP_REQUESTS = Counter(
    "gatewayd_sip_requests_total",
    "SIP requests received, by method (unknown methods as 'other')",
    ["method"],
    registry=REGISTRY,
)
SIP_RESPONSES = Counter(
    "gatewayd_sip_responses_total",
    "SIP responses sent, by status class",
    ["code_class"],
    registry=REGISTRY,
)
SIP_TRANSACTIONS_ACTIVE = Gauge(
    "gatewayd_sip_transactions_active",
    "SIP transactions not yet terminated (client and server)",
    registry=REGISTRY,
)
SIP_PARSE_ERRORS = Counter(
    "gatewayd_sip_parse_errors_total",
    "SIP messages that could not be parsed, by reason",
    ["reason"],
    registry=REGISTRY,
)
SIP_TRUNK_UP = Gauge(
    "gatewayd_sip_trunk_up",
    "1 while a configured trunk is registered / answers OPTIONS, else 0",
    ["trunk"],
    registry=REGISTRY,
)
SIP_REJECTED = Counter(
    "gatewayd_sip_rejected_total",
    "SIP requests refused before processing, by reason",
    ["reason"],
    registry=REGISTRY,
)

# --- media -----------------------------------------------------------------------
MEDIA_TRANSCODES_ACTIVE = Gauge(
    "gatewayd_media_transcodes_active",
    "Media streams being transcoded (decode + encode), by kind",
    ["kind"],
    registry=REGISTRY,
)
MEDIA_PASSTHROUGH_ACTIVE = Gauge(
    "gatewayd_media_passthrough_active",
    "Media streams forwarded without decoding, by kind",
    ["kind"],
    registry=REGISTRY,
)
MEDIA_QUEUE_DROPS = Counter(
    "gatewayd_media_queue_drops_total",
    "Frames or packets dropped because a bounded media queue was full",
    registry=REGISTRY,
)
RTP_PACKETS = Counter(
    "gatewayd_rtp_packets_total",
    "RTP packets, by direction (in, out)",
    ["direction"],
    registry=REGISTRY,
)
RTP_LOST = Counter(
    "gatewayd_rtp_lost_packets_total",
    "RTP packets found missing by the receivers' loss statistics (RFC 3550 A.3)",
    registry=REGISTRY,
)
SRTP_ERRORS = Counter(
    "gatewayd_srtp_errors_total",
    "SRTP/SRTCP packets that failed to unprotect, by reason",
    ["reason"],
    registry=REGISTRY,
)
RTP_DROPPED = Counter(
    "gatewayd_rtp_dropped_packets_total",
    "RTP packets dropped before processing, by reason",
    ["reason"],
    registry=REGISTRY,
)
MEDIA_DECODE_ERRORS = Counter(
    "gatewayd_media_decode_errors_total",
    "Payloads a decoder could not decode, by kind",
    ["kind"],
    registry=REGISTRY,
)
DTMF_EVENTS = Counter(
    "gatewayd_dtmf_events_total",
    "DTMF digits received, by how they came (rfc4733, info, inband)",
    ["method"],
    registry=REGISTRY,
)

# --- webrtc ------------------------------------------------------------------------
WEBRTC_LEGS_ACTIVE = Gauge(
    "gatewayd_webrtc_legs_active", "Browser (WebRTC) legs not yet closed", registry=REGISTRY
)
ICE_FAILURES = Counter(
    "gatewayd_ice_failures_total",
    "Browser legs whose ICE connectivity failed",
    registry=REGISTRY,
)
QUALITY_CHANGES = Counter(
    "gatewayd_quality_changes_total",
    "Participants' quality mode changes (down: to data saving, up: back to high)",
    ["direction"],
    registry=REGISTRY,
)

WHIP_SESSIONS_ACTIVE = Gauge(
    "gatewayd_whip_sessions_active",
    "WHIP publishers (kind whip) and WHEP viewers (kind whep) in rooms",
    ["kind"],
    registry=REGISTRY,
)
WHIP_SESSIONS_ENDED = Counter(
    "gatewayd_whip_sessions_ended_total",
    "WHIP/WHEP sessions ended, by kind and reason (deleted, ended, ice_failed, closed, shutdown)",
    ["kind", "reason"],
    registry=REGISTRY,
)

# --- bridges ---------------------------------------------------------------------------
BRIDGE_CALLS_ACTIVE = Gauge(
    "gatewayd_bridge_calls_active",
    "Dialled-out calls in progress (ringing or answered), by bridge (a configured name)",
    ["bridge"],
    registry=REGISTRY,
)
BRIDGE_CALL_ATTEMPTS = Counter(
    "gatewayd_bridge_call_attempts_total",
    "Dial-outs by bridge and outcome (answered, busy, no_answer, cancelled, failed, refused)",
    ["bridge", "outcome"],
    registry=REGISTRY,
)
BRIDGE_SETUP_SECONDS = Histogram(
    "gatewayd_bridge_setup_seconds",
    "From sending the INVITE to its 200 OK, answered dial-outs only, by bridge",
    ["bridge"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120),
    registry=REGISTRY,
)
BRIDGE_OUTCOMES = ("answered", "busy", "no_answer", "cancelled", "failed", "refused")
DIAL_IN = Counter(
    "gatewayd_dial_in_total",
    "SIP calls into rooms (by room address or lobby PIN), by outcome: joined, not_found,"
    " expired, not_yet, full, unavailable, bad_pin, failed",
    ["outcome"],
    registry=REGISTRY,
)
DIAL_IN_ACTIVE = Gauge(
    "gatewayd_dial_in_calls_active",
    "Dial-in calls on this node now (in the lobby, waiting or in a room): the licences used",
    registry=REGISTRY,
)
DIAL_IN_OUTCOMES = (
    "joined", "not_found", "expired", "not_yet", "full", "unavailable", "bad_pin", "failed",
)  # fmt: skip

# --- appointments ---------------------------------------------------------------------
APPOINTMENTS = Counter(
    "gatewayd_appointments_total",
    "Appointment calls by how they ended (completed, rejected, abandoned, failed)",
    ["outcome"],
    registry=REGISTRY,
)
WAITING_PARTICIPANTS = Gauge(
    "gatewayd_waiting_participants", "Citizens in a waiting room now", registry=REGISTRY
)
TIME_TO_ADMIT = Histogram(
    "gatewayd_time_to_admit_seconds",
    "From a citizen entering the waiting room to the agent admitting them",
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600),
    registry=REGISTRY,
)

SIP_METHODS = frozenset(
    {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "UPDATE", "PRACK",
     "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE"}
)  # fmt: skip


def sip_method_label(method: str) -> str:
    """Known methods as themselves, anything a peer invents as ``other``."""
    return method if method in SIP_METHODS else "other"


for _result in ("ok", "error"):
    CONFIG_RELOADS.labels(result=_result)
for _reason in ("draining", "capacity"):
    CALLS_REJECTED.labels(reason=_reason)
for _kind in ("audio", "video"):
    MEDIA_TRANSCODES_ACTIVE.labels(kind=_kind)
    MEDIA_PASSTHROUGH_ACTIVE.labels(kind=_kind)
for _direction in ("in", "out"):
    RTP_PACKETS.labels(direction=_direction)
for _outcome in ("completed", "rejected", "abandoned", "failed"):
    APPOINTMENTS.labels(outcome=_outcome)
for _outcome in DIAL_IN_OUTCOMES:
    DIAL_IN.labels(outcome=_outcome)


def set_build_info() -> None:
    """Fill ``gatewayd_build_info`` (called once at start)."""
    BUILD_INFO.info({"version": __version__, "python": platform.python_version()})


def render(accept: str = "") -> tuple[bytes, str]:
    """Every metric in the format the scraper asked for (Accept header), with its content type."""
    encoder, content_type = choose_encoder(accept)
    return encoder(REGISTRY), content_type


def code_class(status: int) -> str:
    """``404`` -> ``"4xx"``: the only form in which a status becomes a label."""
    return f"{status // 100}xx"
