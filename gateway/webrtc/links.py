"""The room's ``connect``: media between two participants' legs, whatever they are.

* two browsers: ``Passthrough`` (encoded frames forwarded, nothing decoded,
  screen slot included);
* a browser and an RTP leg (a SIP call dialled in or out: anything with
  ``media(kind)`` giving the router a stream): the media ``Router`` between
  the browser's slot (``WebRtcPort``) and the leg's stream, per kind; it
  passes the codec through where both sides use it and transcodes where
  they differ (Opus <-> G.711/G.722, VP8 <-> H.264);
* two RTP legs: the router between their streams.

A browser's camera goes to an RTP leg's video, or its screen while it
shares (``port.ScreenOrCamera``: one continuous stream, a keyframe at each
switch), as Pexip shows a share to legacy endpoints without BFCP. A SIP leg's
video gets a keyframe every ``group.KEYFRAME_EVERY`` seconds unasked: many room
systems never send PLI/FIR.

Three legs or more: ``group(legs)`` (``gateway.webrtc.group.GroupMedia``:
one audio mix; browsers see the active speaker, room systems a grid of up to
four others or the active speaker, per ``media.sip_layout``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from gateway.log import get_logger
from gateway.media.router import RoutedStream, Router, RtpPort
from gateway.webrtc.group import (
    GroupMedia,
    bandwidth_cap,
    nothing,
    periodic_keyframes,
    stream_of,
)
from gateway.webrtc.leg import WebRtcLeg
from gateway.webrtc.passthrough import Passthrough
from gateway.webrtc.port import WebRtcPort

log = get_logger(__name__)

KINDS = ("audio", "video")
#: SIP audio codecs a browser also speaks: worth a renegotiation to pass them through.
PASS_THROUGH_AUDIO = frozenset({"PCMU", "PCMA"})


class RtpLeg(Protocol):
    """A non-browser leg with RTP streams (``bridges.base`` participants)."""

    def media(self, kind: str) -> RoutedStream | None:
        """The stream of ``kind`` the router takes, or None."""
        ...


class MediaLinker:
    """``connect(a, b)`` for ``gateway.rooms.room.Room``; returns the undo function."""

    def __init__(self, router: Router | None, *, sip_layout: str = "grid") -> None:
        self.router = router
        #: What room systems see in groups (``media.sip_layout``): "grid" or "speaker".
        self.sip_layout = sip_layout

    def __call__(self, a: Any, b: Any) -> Callable[[], None]:
        if isinstance(a, WebRtcLeg) and isinstance(b, WebRtcLeg):
            _same_audio(a, b)
            return Passthrough(a, b).close
        if self.router is None:
            log.warning("media: no router on this node, legs not linked")
            return nothing
        router = self.router
        ports: list[WebRtcPort] = []
        streams: list[RoutedStream] = []
        tickers: list[Callable[[], None]] = []
        for kind in KINDS:
            one, other = stream_of(a, kind, ports), stream_of(b, kind, ports)
            if one is None or other is None:
                continue
            for route in router.connect(one, other):
                if kind == "video" and not isinstance(route.sink, WebRtcPort):
                    tickers.append(periodic_keyframes(route))
                    tickers.append(bandwidth_cap(route.source, route.sink))
                if kind == "audio" and isinstance(route.source, WebRtcPort):
                    self._match_audio(route.source, route.sink)
            streams += [one, other]
        if not streams:
            log.info("media: the two legs share no kind of media")

        def undo() -> None:
            for stop in tickers:
                stop()
            for stream in streams:
                router.remove(stream)
            for port in ports:
                port.close()
            streams.clear()

        return undo

    def _match_audio(self, port: WebRtcPort, sink: RtpPort) -> None:
        """A G.711 phone and an Opus browser: ask the browser for G.711 so that audio
        passes through (the browser renegotiates with an ICE restart; media pauses
        for a moment, then the router forwards instead of transcoding)."""
        mine, theirs = port.negotiated, sink.negotiated
        if mine is None or theirs is None or not mine.codecs or not theirs.codecs:
            return
        wanted, have = theirs.codecs[0].name, mine.codecs[0].name
        if wanted.lower() == have.lower() or wanted.upper() not in PASS_THROUGH_AUDIO:
            return
        port.leg.prefer("audio", wanted)

    def group(self, legs: list[Any]) -> Callable[[], None]:
        """The room's ``group`` for three legs or more; returns the undo function."""
        if self.router is None:
            log.warning("media: no router on this node, legs not linked")
            return nothing
        return GroupMedia(self.router, legs, layout=self.sip_layout).close


def _same_audio(a: WebRtcLeg, b: WebRtcLeg) -> None:
    """Two browsers forward audio as it is, so it must be one codec: a browser that
    went to G.711 for a phone is asked back to Opus (until then its audio is dropped
    and counted)."""
    codecs = {leg: (leg.send_codec("audio") or "").lower() for leg in (a, b)}
    if codecs[a] and codecs[b] and codecs[a] != codecs[b]:
        for leg, codec in codecs.items():
            if codec != "opus":
                leg.prefer("audio", "opus")
