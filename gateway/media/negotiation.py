"""What an offer and its answer agreed, per stream, for the media plane.

``process_answer(offer, answer)`` is the offerer's view (we sent the offer:
an INVITE, a re-INVITE, or the 200 OK of a late offer whose answer comes in
the ACK); ``answer_result(offer, answer)`` is the answerer's view of the
answer we made with ``gateway.media.offer_answer.answer``. Both read only
the two descriptions, so the result can be rebuilt from a call record.

Payload types: RFC 3264 section 6.1 lets each side receive with the numbers
it wrote, and asks the answerer to reuse the offerer's. ``payload_type`` is
the offerer's number, ``send_payload_type`` the number the remote side
listed, which is what our RTP must carry; they differ only when an answerer
renumbered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.errors import NotAcceptable
from gateway.media.codec_params import AUXILIARY_CODECS
from gateway.media.sdp import (
    MediaDescription,
    SessionDescription,
    stream_address,
    stream_direction,
)
from gateway.media.sdp_attributes import (
    Direction,
    Fingerprint,
    PayloadFormat,
    SdpError,
    imageattr_max_receive,
    parse_fmtp_parameters,
)


@dataclass(frozen=True)
class NegotiatedCodec:
    """A payload format both sides agreed on; ``fmtp`` is the remote side's
    (what it wants to receive, e.g. Opus maxaveragebitrate, H.264 level)."""

    payload_type: int
    name: str
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None
    rtcp_feedback: tuple[str, ...] = ()
    send_payload_type: int | None = None

    @property
    def parameters(self) -> dict[str, str | None]:
        """The remote fmtp parameters, names lower-cased."""
        return parse_fmtp_parameters(self.fmtp)

    @property
    def sending_payload_type(self) -> int:
        """The payload type our RTP carries for this codec."""
        return self.payload_type if self.send_payload_type is None else self.send_payload_type


@dataclass(frozen=True)
class SrtpKeys:
    """The SDES crypto line both sides agreed on (RFC 4568): the suite, its
    tag, the master key and salt we protect with and the one we unprotect with."""

    suite: str
    tag: int
    # Kept out of repr so a logged stream never carries key material.
    local_key: bytes = field(repr=False)
    remote_key: bytes = field(repr=False)


@dataclass(frozen=True)
class NegotiatedStream:
    """One m-line after offer/answer. ``direction`` is ours: whether we
    send and whether we receive. A refused stream has ``accepted`` False and
    the ``reason``."""

    index: int
    kind: str
    proto: str
    accepted: bool
    reason: str | None = None
    mid: str | None = None
    codecs: tuple[NegotiatedCodec, ...] = ()
    #: Formats we listed for receiving (in our offer or answer) that ``codecs``
    #: left out but that are one of its codecs under another number: a peer
    #: that sends one of them is understood (see ``receivable``).
    also_received: tuple[NegotiatedCodec, ...] = ()
    telephone_event: NegotiatedCodec | None = None
    auxiliary: tuple[NegotiatedCodec, ...] = ()
    local_port: int = 0
    remote_address: str | None = None
    remote_port: int = 0
    remote_rtcp_address: str | None = None
    remote_rtcp_port: int | None = None
    direction: Direction = Direction.INACTIVE
    rtcp_mux: bool = False
    srtp: SrtpKeys | None = None
    dtls_setup: str | None = None
    remote_fingerprints: tuple[Fingerprint, ...] = ()
    ptime: int | None = None
    maxptime: int | None = None
    remote_bandwidth: int | None = None
    remote_max_resolution: tuple[int, int] | None = None


def process_answer(
    offer: SessionDescription, answer: SessionDescription
) -> tuple[NegotiatedStream, ...]:
    """The offerer's view of ``answer`` to our ``offer``.

    Raises ``SdpError`` when the answer does not line up with the offer
    (m-line count or media types differ) and ``NotAcceptable`` when it
    leaves no usable stream.
    """
    return _negotiate(offer, answer, we_offered=True)


def answer_result(
    offer: SessionDescription, answer: SessionDescription
) -> tuple[NegotiatedStream, ...]:
    """The answerer's view: what our ``answer`` to ``offer`` agreed."""
    return _negotiate(offer, answer, we_offered=False)


def _negotiate(
    offer: SessionDescription, answer: SessionDescription, *, we_offered: bool
) -> tuple[NegotiatedStream, ...]:
    if len(answer.media) != len(offer.media):
        raise SdpError(
            f"answer has {len(answer.media)} m-lines, the offer had {len(offer.media)}"
            " (RFC 3264 section 6)"
        )
    streams = []
    for index, (offered, answered) in enumerate(zip(offer.media, answer.media, strict=True)):
        if offered.kind != answered.kind:
            raise SdpError(
                f"answer m-line {index} is {answered.kind}, the offer's is {offered.kind}"
            )
        streams.append(_Stream(offer, answer, index, we_offered).negotiate())
    if any(m.port for m in offer.media) and not any(s.accepted for s in streams):
        reasons = "; ".join(s.reason for s in streams if s.reason)
        raise NotAcceptable(reasons or "every stream was refused")
    return tuple(streams)


def _same_codec(a: PayloadFormat, b: PayloadFormat) -> bool:
    return (
        a.encoding is not None
        and b.encoding is not None
        and a.encoding.lower() == b.encoding.lower()
        and a.clock_rate == b.clock_rate
    )


class _Stream:
    """One index of an offer and its answer, from our side."""

    def __init__(
        self, offer: SessionDescription, answer: SessionDescription, index: int, we_offered: bool
    ) -> None:
        self.index = index
        self.offered = offer.media[index]
        self.answered = answer.media[index]
        self.we_offered = we_offered
        if we_offered:
            self.local_sdp, self.remote_sdp = offer, answer
        else:
            self.local_sdp, self.remote_sdp = answer, offer
        self.local: MediaDescription = self.local_sdp.media[index]
        self.remote: MediaDescription = self.remote_sdp.media[index]

    def refused(self, reason: str) -> NegotiatedStream:
        media = self.offered
        return NegotiatedStream(
            self.index, media.kind, media.proto, accepted=False, reason=reason, mid=media.mid
        )

    def negotiate(self) -> NegotiatedStream:
        kind = self.offered.kind
        if not self.offered.port:
            return self.refused(f"{kind} stream disabled in the offer")
        if not self.answered.port:
            who = "the peer" if self.we_offered else "us"
            return self.refused(f"{kind} stream refused by {who}")
        if not self.offered.is_rtp:
            return self.refused(f"{kind} {self.offered.proto} is not RTP")
        codecs = self.codecs()
        primary = tuple(c for c in codecs if c.name.lower() not in AUXILIARY_CODECS)
        if not primary:
            return self.refused(f"{kind} answer has no codec the offer listed")
        srtp = self.srtp()
        if isinstance(srtp, str):
            return self.refused(srtp)
        events = [c for c in codecs if c.name.lower() == "telephone-event"]
        # DTMF must run at the clock of the voice codec (RFC 4733 2.1).
        telephone_event = next(
            (e for e in events if e.clock_rate == primary[0].clock_rate),
            events[0] if events else None,
        )
        address = stream_address(self.remote_sdp, self.remote)
        rtcp_mux = self.offered.rtcp_mux and self.answered.rtcp_mux
        rtcp_address, rtcp_port = address, self.remote.port
        rtcp = self.remote.rtcp
        if not rtcp_mux:
            rtcp_port = rtcp.port if rtcp is not None else self.remote.port + 1
            if rtcp is not None and rtcp.address is not None:
                rtcp_address = rtcp.address
        direction = stream_direction(self.local_sdp, self.local).intersect(
            stream_direction(self.remote_sdp, self.remote).reversed()
        )
        dtls = self.answered.is_dtls
        return NegotiatedStream(
            index=self.index,
            kind=kind,
            proto=self.answered.proto,
            accepted=True,
            mid=self.answered.mid or self.offered.mid,
            codecs=primary,
            also_received=self.also_received(primary),
            telephone_event=telephone_event,
            auxiliary=tuple(c for c in codecs if c not in primary),
            local_port=self.local.port,
            remote_address=address,
            remote_port=self.remote.port,
            remote_rtcp_address=rtcp_address,
            remote_rtcp_port=rtcp_port,
            direction=direction,
            rtcp_mux=rtcp_mux,
            srtp=srtp,
            dtls_setup=(self.local.setup or self.local_sdp.setup) if dtls else None,
            remote_fingerprints=(
                (self.remote.fingerprints or self.remote_sdp.fingerprints) if dtls else ()
            ),
            ptime=self.remote.ptime,
            maxptime=self.remote.maxptime,
            remote_bandwidth=self.remote_bandwidth(),
            remote_max_resolution=next(
                filter(None, map(imageattr_max_receive, self.remote.imageattrs)), None
            ),
        )

    def codecs(self) -> list[NegotiatedCodec]:
        """The answer's formats that the offer listed, in the answer's order."""
        offer_formats = self.offered.payload_formats
        codecs = []
        for answered in self.answered.payload_formats:
            offered = next(
                (
                    f
                    for f in offer_formats
                    if f.payload_type == answered.payload_type and _same_codec(f, answered)
                ),
                None,
            ) or next((f for f in offer_formats if _same_codec(f, answered)), None)
            if offered is None or answered.encoding is None:
                continue
            remote = answered if self.we_offered else offered
            # Listed by both, whatever the profile: room systems use it in RTP/AVP.
            feedback = tuple(f for f in answered.rtcp_feedback if f in offered.rtcp_feedback)
            codecs.append(
                NegotiatedCodec(
                    payload_type=offered.payload_type,
                    name=answered.encoding,
                    clock_rate=answered.clock_rate,
                    channels=answered.channels,
                    fmtp=remote.fmtp,
                    rtcp_feedback=feedback,
                    send_payload_type=remote.payload_type,
                )
            )
        return codecs

    def also_received(self, primary: tuple[NegotiatedCodec, ...]) -> tuple[NegotiatedCodec, ...]:
        """Our other listed numbers of an agreed codec, with our fmtp for them.

        RFC 3264 section 6.1 has a peer send only formats of the answer, but
        some send another number of the same codec that the offer listed:
        baresip 1.0 answers PT 100 of our four H.264 formats and sends PT 99.
        We did say we receive 99, so the router takes it (as rtpengine and
        Pexip do) instead of dropping the stream's media.
        """
        taken = {c.payload_type for c in primary}
        names = {(c.name.lower(), c.clock_rate) for c in primary}
        also = []
        for local in self.local.payload_formats:
            if local.payload_type in taken or local.encoding is None:
                continue
            if (local.encoding.lower(), local.clock_rate) not in names:
                continue
            also.append(
                NegotiatedCodec(
                    payload_type=local.payload_type,
                    name=local.encoding,
                    clock_rate=local.clock_rate,
                    channels=local.channels,
                    fmtp=local.fmtp,
                )
            )
        return tuple(also)

    def srtp(self) -> SrtpKeys | str | None:
        """The SDES keys, None without SDES, or why the stream fails."""
        if self.answered.is_dtls:
            return None
        secure_profile = "SAVP" in self.answered.proto.upper()
        answered = self.answered.crypto
        if not answered:
            if secure_profile:
                return f"{self.answered.kind} {self.answered.proto} answer has no a=crypto"
            return None
        chosen = answered[0]
        offered = next(
            (c for c in self.offered.crypto if c.tag == chosen.tag and c.suite == chosen.suite),
            None,
        )
        if offered is None:
            return f"answer crypto tag {chosen.tag} {chosen.suite} was not offered"
        local, remote = (offered, chosen) if self.we_offered else (chosen, offered)
        local_key, remote_key = local.keys[0].key_bytes, remote.keys[0].key_bytes
        if local_key is None or remote_key is None:
            return f"crypto tag {chosen.tag} has no inline base64 key"
        return SrtpKeys(chosen.suite, chosen.tag, local_key, remote_key)

    def remote_bandwidth(self) -> int | None:
        """The remote side's b=TIAS (bit/s) or b=AS (kbit/s) as bit/s."""
        for holder in (self.remote, self.remote_sdp):
            tias = holder.bandwidth("TIAS")
            if tias is not None:
                return tias
            kbps = holder.bandwidth("AS")
            if kbps is not None:
                return kbps * 1000
        return None
