"""RFC 3264 offer/answer, sans-IO: descriptions in, descriptions out.

``create_offer(local)`` makes our offer (an INVITE with SDP, the 200 OK of
a late offer, a re-INVITE), ``answer(offer, local)`` answers the peer's
offer, and ``process_answer`` / ``answer_result``
(``gateway.media.negotiation``) turn an offer and its answer into what the
media plane needs per stream. Nothing here reads a clock, a socket or a
random source of its own: SRTP keys and session ids come from
``LocalCapabilities.random_bytes``.

Re-offers and re-answers are made by passing ``previous`` (the last SDP we
sent in this session): the ``o=`` session id is kept and the version moves
by one only when the body changed (RFC 3264 section 8), m-lines keep their
count and order, payload type numbers keep their meaning, and SRTP keys
already in use are kept so a session-timer re-INVITE does not re-key.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field, replace

from gateway.errors import NotAcceptable
from gateway.media.capabilities import (
    HARMLESS_SRTP_SESSION_PARAMS,
    SRTP_KEY_SALT_LENGTH,
    LocalCapabilities,
    SrtpPolicy,
)
from gateway.media.codec_params import AUXILIARY_CODECS, CodecCapability
from gateway.media.sdp import (
    Attribute,
    Connection,
    MediaDescription,
    Origin,
    SessionDescription,
    stream_direction,
)
from gateway.media.sdp_attributes import (
    Crypto,
    CryptoKey,
    Direction,
    PayloadFormat,
)

MEDIA_KINDS = ("audio", "video")

# RFC 8842 section 5.3: the answerer of "actpass" picks; active (we are the
# DTLS client) is what browsers expect from a server.
_DTLS_ANSWER_SETUP = {"actpass": "active", "active": "passive", "passive": "active"}


def create_offer(
    local: LocalCapabilities,
    previous: SessionDescription | None = None,
    remote: SessionDescription | None = None,
) -> SessionDescription:
    """Our offer: one stream per kind we do (audio, then video), or for a
    re-offer the m-lines of ``previous`` (our last SDP in the session) in the
    same order, refused ones kept at port 0. ``remote`` is the peer's last
    SDP: payload type numbers either side gave a codec keep that codec."""
    slots = list(previous.media) if previous is not None else []

    def offer_stream(kind: str, index: int) -> MediaDescription:
        slot = slots[index] if index < len(slots) else None
        known = [slot] if slot is not None else []
        if remote is not None and index < len(remote.media):
            known.append(remote.media[index])
        formats = tuple(f for m in known if m.is_rtp for f in m.payload_formats)
        return _offer_stream(local, kind, slot, index, formats)

    media: list[MediaDescription | None] = [None] * len(slots)
    used: set[str] = set()
    # Live slots keep their stream; a kind still missing revives a refused
    # slot of its kind or is appended (RFC 3264 section 8.1).
    for index, slot in enumerate(slots):
        if slot.port and _can_offer(local, slot.kind, used, slot):
            used.add(slot.kind)
            media[index] = offer_stream(slot.kind, index)
    for kind in MEDIA_KINDS:
        if not _can_offer(local, kind, used, None):
            continue
        used.add(kind)
        free = next(
            (i for i, s in enumerate(slots) if media[i] is None and s.kind == kind and s.is_rtp),
            None,
        )
        if free is None:
            media.append(offer_stream(kind, len(media)))
        else:
            media[free] = offer_stream(kind, free)
    final = [m if m is not None else _refused(slots[i]) for i, m in enumerate(media)]
    attributes = []
    mids = [m.mid for m in final if m.port and m.mid is not None]
    if local.bundle and mids:
        attributes.append(Attribute("group", " ".join(["BUNDLE", *mids])))
    return _session(local, local.address, tuple(attributes), tuple(final), previous)


def answer(
    offer: SessionDescription,
    local: LocalCapabilities,
    previous: SessionDescription | None = None,
) -> SessionDescription:
    """Our answer to ``offer`` (RFC 3264 section 6).

    Every offered m-line is answered in order; those we cannot take get
    port 0 with the offer's media, proto and formats. Raises
    ``NotAcceptable`` (488) with a reason fit for a SIP Warning header when
    no stream can be taken.
    """
    family = _offer_family(offer)
    state = _AnswerState(offer, local, previous, local.address_for(family))
    answered: list[MediaDescription] = []
    reasons: list[str] = []
    for index, media in enumerate(offer.media):
        result = state.answer_stream(index, media)
        if isinstance(result, str):
            answered.append(_refused(media))
            if media.port:
                reasons.append(result)
        else:
            answered.append(result)
    # An offer that disables every stream (a re-INVITE keeping the dialog
    # without media) is answered in kind; one we cannot meet at all is 488.
    if reasons and not any(m.port for m in answered):
        raise NotAcceptable(_warning_text("; ".join(reasons)))
    attributes: list[Attribute] = []
    accepted_mids = {m.mid for m in answered if m.port}
    bundled = [mid for mid in offer.bundle_mids if mid in accepted_mids] if local.bundle else []
    if bundled:
        attributes.append(Attribute("group", " ".join(["BUNDLE", *bundled])))
    return _session(local, state.address, tuple(attributes), tuple(answered), previous)


def _can_offer(
    local: LocalCapabilities, kind: str, used: set[str], slot: MediaDescription | None
) -> bool:
    if kind in used or local.port_for(kind) is None:
        return False
    return slot is None or slot.is_rtp


def _refused(media: MediaDescription) -> MediaDescription:
    # The mid is echoed so a JSEP peer can still tell the m-lines apart.
    attributes = (Attribute("mid", media.mid),) if media.mid is not None else ()
    return MediaDescription(media.kind, 0, media.proto, media.fmt, attributes=attributes)


def _offer_family(offer: SessionDescription) -> str:
    connection = offer.connection or next(
        (m.connection for m in offer.media if m.connection is not None), None
    )
    return connection.addrtype if connection is not None else "IP4"


def _session(
    local: LocalCapabilities,
    address: str,
    attributes: tuple[Attribute, ...],
    media: tuple[MediaDescription, ...],
    previous: SessionDescription | None,
) -> SessionDescription:
    connection = Connection.for_address(address)
    if previous is None:
        # Masked to 62 bits: some stacks keep the session id in a signed int64.
        session_id = int.from_bytes(local.random_bytes(8), "big") >> 2
        origin = Origin(local.username, str(session_id), 1, address, connection.addrtype)
    else:
        origin = previous.origin
    description = SessionDescription(
        origin=origin,
        session_name=local.session_name,
        connection=connection,
        attributes=attributes,
        media=media,
    )
    if previous is None or description == previous:
        return description
    return replace(description, origin=replace(origin, session_version=origin.session_version + 1))


def _warning_text(text: str) -> str:
    """A reason that fits a SIP Warning header's quoted-string."""
    cleaned = "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in text)
    return cleaned[:300]


def _key_text(local: LocalCapabilities, suite: str) -> str:
    return base64.b64encode(local.random_bytes(SRTP_KEY_SALT_LENGTH[suite])).decode("ascii")


def _previous_keys(previous: MediaDescription | None) -> dict[str, Crypto]:
    """Our crypto lines in the previous SDP, by suite: reused to not re-key."""
    if previous is None or not previous.port:
        return {}
    return {c.suite: c for c in previous.crypto}


def _offer_proto(local: LocalCapabilities, slot: MediaDescription | None) -> str:
    if slot is not None and slot.port and (not slot.is_dtls or local.webrtc is not None):
        return slot.proto  # a re-offer does not change the profile in use
    base = "RTP/SAVP" if local.srtp is SrtpPolicy.REQUIRE else "RTP/AVP"
    return base + "F" if local.avpf else base


def _offer_stream(
    local: LocalCapabilities,
    kind: str,
    slot: MediaDescription | None,
    index: int,
    known_formats: tuple[PayloadFormat, ...],
) -> MediaDescription:
    proto = _offer_proto(local, slot)
    port = local.port_for(kind)
    assert port is not None
    media = MediaDescription(kind, port, proto, ())
    attributes: list[Attribute] = []
    mid = slot.mid if slot is not None else None
    if mid is None and (local.bundle or local.webrtc is not None):
        mid = str(index)
    if mid is not None:
        attributes.append(Attribute("mid", mid))
    assigned = _assign_payload_types(local.codecs_for(kind), known_formats)
    for pt, codec in assigned:
        attributes.append(Attribute("rtpmap", f"{pt} {codec.rtpmap_text()}"))
        if codec.fmtp:
            attributes.append(Attribute("fmtp", f"{pt} {codec.fmtp}"))
        # Room systems list rtcp-fb under RTP/AVP too (RFC 4585 peers ignore
        # it there), and it is how they learn that we honour PLI and FIR.
        attributes.extend(Attribute("rtcp-fb", f"{pt} {fb}") for fb in codec.rtcp_feedback)
    attributes.extend(_common_attributes(local, kind, local.direction))
    if media.is_dtls and local.webrtc is not None:
        setup = slot.setup if slot is not None and slot.setup in ("active", "passive") else None
        attributes.extend(_dtls_attributes(local, setup or "actpass", local.address, port))
    elif "SAVP" in proto.upper() or local.srtp is SrtpPolicy.OFFER:
        attributes.extend(_offer_crypto(local, slot))
    fmt = tuple(str(pt) for pt, _ in assigned)
    return replace(media, fmt=fmt, attributes=tuple(attributes))


def _offer_crypto(local: LocalCapabilities, slot: MediaDescription | None) -> list[Attribute]:
    kept = _previous_keys(slot)
    # The suite in use goes first, with its tag and key, so the peer keeps it.
    suites = sorted(local.crypto_suites, key=lambda s: s not in kept)
    tags = {c.tag for c in kept.values()}
    next_tag = 1
    lines = []
    for suite in suites:
        if suite in kept:
            crypto = kept[suite]
        else:
            while next_tag in tags:
                next_tag += 1
            tags.add(next_tag)
            crypto = Crypto(next_tag, suite, (CryptoKey(_key_text(local, suite)),))
        lines.append(Attribute("crypto", str(crypto)))
    return lines


def _common_attributes(
    local: LocalCapabilities, kind: str, direction: Direction, *, rtcp_mux: bool = True
) -> list[Attribute]:
    attributes = []
    if kind == "audio" and local.ptime is not None:
        attributes.append(Attribute("ptime", str(local.ptime)))
    attributes.append(Attribute(direction.value))
    if local.rtcp_mux and rtcp_mux:
        attributes.append(Attribute("rtcp-mux"))
    return attributes


def _dtls_attributes(
    local: LocalCapabilities, setup: str, address: str, port: int
) -> list[Attribute]:
    assert local.webrtc is not None
    transport = local.webrtc
    # One host candidate: gatewayd answers from a public address (ICE lite
    # behaviour); the browser leg proper is aiortc's, with full ICE.
    candidate = f"1 1 udp 2130706431 {address} {port} typ host"
    return [
        Attribute("ice-ufrag", transport.ice_ufrag),
        Attribute("ice-pwd", transport.ice_pwd),
        Attribute("fingerprint", str(transport.fingerprint)),
        Attribute("setup", setup),
        Attribute("candidate", candidate),
        Attribute("end-of-candidates"),
    ]


def _assign_payload_types(
    codecs: tuple[CodecCapability, ...], previous: tuple[PayloadFormat, ...]
) -> list[tuple[int, CodecCapability]]:
    """Our payload type for each codec; in a re-offer, the number the codec
    had before in either side's SDP, and never a number that meant another
    codec (RFC 3264 section 8.3.2)."""
    taken = {f.payload_type for f in previous}
    used: set[int] = set()
    assigned = []
    for codec in codecs:
        if codec.key == "rtx":
            continue  # RTX needs apt pairing; we answer it but do not offer it
        pt = next(
            (f.payload_type for f in previous if codec.matches(f) and f.payload_type not in used),
            None,
        )
        if pt is None and codec.payload_type not in used | taken:
            pt = codec.payload_type
        if pt is None:
            # A free dynamic number, preferably none of our codecs wants.
            preferred = {c.payload_type for c in codecs}
            free = [n for n in range(96, 128) if n not in used | taken]
            pt = next((n for n in free if n not in preferred), free[0] if free else None)
        if pt is not None:
            used.add(pt)
            assigned.append((pt, codec))
    return assigned


@dataclass
class _AnswerState:
    """What answering one offer remembers from stream to stream."""

    offer: SessionDescription
    local: LocalCapabilities
    previous: SessionDescription | None
    address: str
    bundle_port: int | None = None
    used: set[str] = field(default_factory=set)  # kinds already answered

    def answer_stream(self, index: int, media: MediaDescription) -> MediaDescription | str:
        """The answered m-section, or the reason it is refused."""
        kind = media.kind
        if not media.port:
            return f"{kind} stream disabled in the offer"
        if kind not in MEDIA_KINDS or not media.is_rtp:
            return f"{kind} {media.proto} {' '.join(media.fmt)} not supported"
        port = self.local.port_for(kind)
        if port is None:
            return f"{kind} is not enabled on this leg"
        if kind in self.used:
            return f"only one {kind} stream is supported"
        security = _choose_security(self.offer, media, self.local)
        if isinstance(security, str):
            return security
        chosen = _choose_codecs(media, self.local.codecs_for(kind))
        if isinstance(chosen, str):
            return chosen
        self.used.add(kind)
        if self.local.bundle and media.mid in self.offer.bundle_mids:
            self.bundle_port = self.bundle_port or port
            port = self.bundle_port
        previous = (
            self.previous.media[index]
            if self.previous and index < len(self.previous.media)
            else None
        )
        attributes = self._codec_attributes(media, chosen)
        direction = stream_direction(self.offer, media).reversed().intersect(self.local.direction)
        attributes.extend(_common_attributes(self.local, kind, direction, rtcp_mux=media.rtcp_mux))
        if media.is_dtls:
            setup = _DTLS_ANSWER_SETUP.get(media.setup or self.offer.setup or "actpass", "active")
            attributes.extend(_dtls_attributes(self.local, setup, self.address, port))
        elif security is not None:
            kept = _previous_keys(previous).get(security.suite)
            key = (
                kept.keys[0]
                if kept is not None
                else CryptoKey(_key_text(self.local, security.suite))
            )
            attributes.append(
                Attribute("crypto", str(Crypto(security.tag, security.suite, (key,))))
            )
        fmt = tuple(str(f.payload_type) for f, _ in chosen)
        return MediaDescription(kind, port, media.proto, fmt, attributes=tuple(attributes))

    def _codec_attributes(
        self, media: MediaDescription, chosen: list[tuple[PayloadFormat, CodecCapability]]
    ) -> list[Attribute]:
        attributes = [Attribute("mid", media.mid)] if media.mid is not None else []
        for offered, codec in chosen:
            pt = offered.payload_type
            rate = f"{offered.encoding}/{offered.clock_rate}"
            channels = f"/{codec.channels}" if codec.channels != 1 else ""
            attributes.append(Attribute("rtpmap", f"{pt} {rate}{channels}"))
            fmtp = codec.answer_fmtp(offered)
            if fmtp:
                attributes.append(Attribute("fmtp", f"{pt} {fmtp}"))
            common = [fb for fb in offered.rtcp_feedback if fb in codec.rtcp_feedback]
            attributes.extend(Attribute("rtcp-fb", f"{pt} {fb}") for fb in common)
        return attributes


def _choose_security(
    session: SessionDescription, media: MediaDescription, local: LocalCapabilities
) -> Crypto | str | None:
    """The offered crypto line we take, None for no SDES keys (plain RTP or
    DTLS), or the reason the stream is refused."""
    if media.is_dtls:
        if local.webrtc is None:
            return f"{media.kind} {media.proto} needs DTLS-SRTP, which this leg does not have"
        if not (media.fingerprints or session.fingerprints):
            return f"{media.kind} {media.proto} offer has no a=fingerprint"
        return None
    secure_profile = "SAVP" in media.proto.upper()
    if local.srtp is SrtpPolicy.OFF:
        return f"{media.kind} {media.proto}: SRTP is disabled here" if secure_profile else None
    offered = media.crypto
    chosen = next((c for c in offered if _usable_crypto(c, local)), None)
    if chosen is not None:
        return chosen
    if secure_profile or local.srtp is SrtpPolicy.REQUIRE:
        if not offered:
            return f"{media.kind}: SRTP is required here, the offer is plain {media.proto}"
        suites = " ".join(dict.fromkeys(c.suite for c in offered))
        note = ""
        if any(c.suite in local.crypto_suites for c in offered):
            note = " (keys with MKI or session parameters are not supported)"
        ours = " ".join(local.crypto_suites)
        return f"no common {media.kind} SRTP suite: offered {suites}, we support {ours}{note}"
    return None  # best-effort SRTP (RFC 8643): plain RTP is fine


def _usable_crypto(crypto: Crypto, local: LocalCapabilities) -> bool:
    if crypto.suite not in local.crypto_suites or len(crypto.keys) != 1:
        return False
    key = crypto.keys[0]
    # pylibsrtp has no MKI support, so keys that need one cannot be used.
    if key.mki is not None or key.key_bytes is None:
        return False
    if len(key.key_bytes) != SRTP_KEY_SALT_LENGTH[crypto.suite]:
        return False
    return all(p.startswith(HARMLESS_SRTP_SESSION_PARAMS) for p in crypto.session_params)


def _choose_codecs(
    media: MediaDescription, codecs: tuple[CodecCapability, ...]
) -> list[tuple[PayloadFormat, CodecCapability]] | str:
    """The offered formats we take, in the offer's order, each with the
    codec of ours it matched; or the reason none of them is usable."""
    offered = media.payload_formats
    chosen: list[tuple[PayloadFormat, CodecCapability]] = []
    for fmt in offered:
        codec = next((c for c in codecs if c.key != "rtx" and c.matches(fmt)), None)
        if codec is not None:
            chosen.append((fmt, codec))
    if not any(not codec.is_auxiliary for _, codec in chosen):
        names = [f.name for f in offered if (f.encoding or "").lower() not in AUXILIARY_CODECS]
        ours = [c.name for c in codecs if not c.is_auxiliary]
        return (
            f"no common {media.kind} codec: offered {' '.join(dict.fromkeys(names)) or 'none'},"
            f" we support {' '.join(dict.fromkeys(ours))}"
        )
    # RTX (RFC 4588) is taken only for a primary format we took.
    rtx = next((c for c in codecs if c.key == "rtx"), None)
    taken = {str(f.payload_type) for f, _ in chosen}
    for fmt in offered:
        if rtx is not None and rtx.matches(fmt) and fmt.parameters.get("apt") in taken:
            chosen.append((fmt, rtx))
    order = {f.payload_type: n for n, f in enumerate(offered)}
    return sorted(chosen, key=lambda pair: order[pair[0].payload_type])
