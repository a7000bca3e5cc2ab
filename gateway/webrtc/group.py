"""Media of a room with three or more legs: one audio mix, video of the others.

Two legs talk directly (``links.MediaLinker``); from the third on, every
leg's audio goes into one ``AudioMixer`` and each hears the others
(mix-minus), whatever its codec; each leg's video shows one other
participant: the active speaker (the loudest in the mix for ``HOLD``
seconds), or, while nobody speaks, whom it saw before (at first the
earliest other participant with video, usually the agent). A switch asks
the new source for a keyframe, so the picture changes within a frame or
two. Video goes through the router: passed through where the codecs
match, transcoded where they differ (a VP8 browser to an H.264 room
system).

A room system (any leg that is not a browser) sees up to four others at once
in the ``grid`` layout (``media.sip_layout``, the default): its video comes
from a ``VideoCompositor`` that decodes the others' video and composes one
picture (two side by side, three or four in a 2x2 grid; the active speaker
is kept in when more than four have video), encoded in the room system's
codec at its declared size and bandwidth, with its keyframe requests and a
keyframe every ``KEYFRAME_EVERY`` seconds. With only one other picture, or
while somebody shares a screen (shown full size, as Pexip shows a
presentation to legacy endpoints without BFCP), and in the ``speaker``
layout, it gets one participant's video through the router instead: no
decoding where the codecs match. This is how an MCU such as Pexip serves
legacy endpoints; a browser grid of every participant would need one
receive slot per participant and is not built.
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Callable
from typing import Any

from gateway.log import get_logger
from gateway.media.compositor import VideoCompositor
from gateway.media.mixer import AudioMixer
from gateway.media.router import Route, RoutedStream, Router, RtpPort
from gateway.webrtc.leg import WebRtcLeg
from gateway.webrtc.port import ScreenOrCamera, WebRtcPort

log = get_logger(__name__)

#: Seconds between active-speaker checks, and how long a new speaker must lead.
CHECK_EVERY = 0.25
HOLD = 1.5
#: Smoothed RMS (16-bit) above which a member counts as speaking.
SPEAKING = 300.0
#: Seconds between the keyframes sent unasked to a SIP leg's video.
KEYFRAME_EVERY = 10.0
#: Pictures in a room system's grid at most.
GRID_TILES = 4
LAYOUTS = ("grid", "speaker")


def stream_of(leg: Any, kind: str, ports: list[WebRtcPort]) -> RoutedStream | None:
    """``leg``'s stream of ``kind`` for the router or mixer (a new port for a browser)."""
    if isinstance(leg, WebRtcLeg):
        slot = "audio" if kind == "audio" else "video"
        if slot not in leg.attached():
            return None
        # video to a router: the browser's screen while it shares, else its camera
        port = WebRtcPort(leg, slot) if kind == "audio" else ScreenOrCamera(leg)
        ports.append(port)
        return port
    media = getattr(leg, "media", None)
    stream: RoutedStream | None = media(kind) if media is not None else None
    return stream


def repeat(seconds: float, action: Callable[[], None], *, now: bool = False) -> Callable[[], None]:
    """Run ``action`` every ``seconds`` on the running loop (also at once when ``now``);
    returns the stop function."""
    loop = asyncio.get_running_loop()
    handle: asyncio.TimerHandle | None = None

    def tick() -> None:
        nonlocal handle
        action()
        handle = loop.call_later(seconds, tick)

    if now:
        tick()
    else:
        handle = loop.call_later(seconds, tick)
    return lambda: handle.cancel() if handle is not None else None


def periodic_keyframes(route: Route, every: float = KEYFRAME_EVERY) -> Callable[[], None]:
    """A keyframe on ``route`` every ``every`` seconds, for SIP peers that never ask (a room
    system that joins late or drops a packet would wait for the next keyframe
    forever); returns the stop function."""
    return repeat(every, route.keyframe_requested)


def bandwidth_cap(port: RtpPort, sink: RtpPort, every: float = 5.0) -> Callable[[], None]:
    """Keep a browser's video to ``sink`` under the bandwidth ``sink`` declared (b=TIAS/AS):
    a REMB with that value now and every ``every`` seconds (nothing when it declared none or
    ``port`` is no browser's); returns the stop function."""
    negotiated = sink.negotiated
    limit = negotiated.remote_bandwidth if negotiated is not None else None
    if not limit or not isinstance(port, WebRtcPort):
        return nothing
    leg, slot = port.leg, port.slot

    def tell() -> None:
        leg.send_bitrate_estimate(slot, limit)

    return repeat(every, tell, now=True)


def nothing() -> None:
    """The stop function of what was never started."""
    return None


def _both(first: Callable[[], None], second: Callable[[], None]) -> Callable[[], None]:
    def stop() -> None:
        first()
        second()

    return stop


class GroupMedia:
    """The media of ``legs`` (three or more); ``close()`` undoes it all."""

    def __init__(self, router: Router, legs: list[Any], *, layout: str = "grid") -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}")
        self.router = router
        self.legs = list(legs)
        self.layout = layout
        self.compositor: VideoCompositor | None = None
        self._grids: dict[int, tuple[Any, ...]] = {}  # sink leg -> the legs it sees
        self._grid_stops: dict[int, Callable[[], None]] = {}  # sink leg -> keyframe hooks
        self._grid_sources: dict[int, tuple[RoutedStream, Callable[[], None]]] = {}
        self._sharing = False
        self.mixer = AudioMixer(router.executor)
        self._ports: list[WebRtcPort] = []
        self._voice: dict[int, RoutedStream] = {}  # id(leg) -> its stream in the mix
        self._screens: dict[int, RoutedStream] = {}  # id(leg) -> its video as a sink
        self._routes: dict[int, tuple[Any, Route, RoutedStream]] = {}  # sink leg -> source
        self._tickers: dict[int, Callable[[], None]] = {}  # route -> periodic keyframes
        self.active: Any = None
        self._candidate: Any = None
        self._candidate_since = 0.0
        self.switches = 0
        for leg in self.legs:
            voice = stream_of(leg, "audio", self._ports)
            if voice is not None:
                self._voice[id(leg)] = voice
                self.mixer.add(voice)
            screen = stream_of(leg, "video", self._ports)
            if screen is not None:
                self._screens[id(leg)] = screen
        self._loop = asyncio.get_running_loop()
        self._sharing = self._anyone_sharing()
        self._choose()
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(CHECK_EVERY, self._check)

    # --- active speaker ------------------------------------------------------------------
    def _anyone_sharing(self) -> bool:
        return any(isinstance(leg, WebRtcLeg) and leg.sharing() for leg in self.legs)

    def _speaker(self) -> Any:
        for leg in self.legs:  # a shared screen is what everybody wants to see
            if isinstance(leg, WebRtcLeg) and leg.sharing():
                return leg
        levels = self.mixer.levels()
        loudest, level = None, SPEAKING
        for leg in self.legs:
            voice = self._voice.get(id(leg))
            if voice is not None and levels.get(voice, 0.0) > level:
                loudest, level = leg, levels[voice]
        return loudest

    def _check(self) -> None:
        self._timer = self._loop.call_later(CHECK_EVERY, self._check)
        sharing = self._anyone_sharing()
        if sharing != self._sharing:  # a share began or ended: grids give way or return
            self._sharing = sharing
            self._choose()
        speaker = self._speaker()
        now = self._loop.time()
        if speaker is None or speaker is self.active:
            self._candidate = None
            return
        if isinstance(speaker, WebRtcLeg) and speaker.sharing():
            self.active, self._candidate = speaker, None
            self._choose()
            return
        if speaker is not self._candidate:
            self._candidate, self._candidate_since = speaker, now
            return
        if now - self._candidate_since >= HOLD:
            self.active = speaker
            self._candidate = None
            self._choose()

    # --- video -----------------------------------------------------------------------------
    def _source_for(self, sink: Any) -> Any:
        with_video = [leg for leg in self.legs if leg is not sink and id(leg) in self._screens]
        if not with_video:
            return None
        if self.active in with_video:
            return self.active
        current = self._routes.get(id(sink))
        if current is not None and current[0] in with_video:
            return current[0]
        return with_video[0]

    def _choose(self) -> None:
        for sink in self.legs:
            screen = self._screens.get(id(sink))
            if screen is None:
                continue
            grid = self._grid_for(sink, screen)
            if grid:
                self._show_grid(sink, screen, grid)
                continue
            self._end_grid(sink, screen)
            source = self._source_for(sink)
            current = self._routes.get(id(sink))
            if current is not None and current[0] is source:
                continue
            if current is not None:
                self._drop(current)
                del self._routes[id(sink)]
            if source is None:
                continue
            stream = self._video_source(source)
            if stream is None:
                continue
            route = self.router.link(stream, screen)
            stream.request_keyframe()
            if not isinstance(screen, WebRtcPort):
                self._tickers[id(route)] = _both(
                    periodic_keyframes(route), bandwidth_cap(stream, screen)
                )
            self._routes[id(sink)] = (source, route, stream)
            self.switches += 1
        used = {id(leg) for legs in self._grids.values() for leg in legs}
        for key in [key for key in self._grid_sources if key not in used]:
            _stream, stop = self._grid_sources.pop(key)
            stop()

    # --- the grid ----------------------------------------------------------------------------
    def _grid_for(self, sink: Any, screen: RoutedStream) -> tuple[Any, ...]:
        """The legs ``sink`` sees in a grid, or () when it gets one picture."""
        if self.layout != "grid" or isinstance(screen, WebRtcPort) or self._sharing:
            return ()
        others = [leg for leg in self.legs if leg is not sink and id(leg) in self._screens]
        if len(others) < 2:
            return ()
        if len(others) > GRID_TILES and self.active in others[GRID_TILES - 1 :]:
            others.remove(self.active)
            others.insert(0, self.active)
        return tuple(others[:GRID_TILES])

    def _show_grid(self, sink: Any, screen: RoutedStream, legs: tuple[Any, ...]) -> None:
        current = self._routes.pop(id(sink), None)
        if current is not None:
            self._drop(current)
        shown = self._grids.get(id(sink))
        if shown is not None and len(shown) == len(legs) and all(map(operator.is_, shown, legs)):
            return
        if self.compositor is None:
            self.compositor = VideoCompositor(self.router.executor)
        compositor = self.compositor
        streams = [self._grid_source(leg, compositor) for leg in legs]
        if shown is None:
            screen.switch_source()
            compositor.add_sink(screen, streams)

            def keyframe() -> None:
                compositor.request_keyframe(screen)

            self._grid_stops[id(sink)] = _both(
                self.router.on_keyframe_request(screen, keyframe), repeat(KEYFRAME_EVERY, keyframe)
            )
            self.switches += 1
        else:
            compositor.set_sources(screen, streams)
        self._grids[id(sink)] = legs

    def _grid_source(self, leg: Any, compositor: VideoCompositor) -> RoutedStream:
        """``leg``'s video as a compositor source (made once, shared by every grid)."""
        known = self._grid_sources.get(id(leg))
        if known is not None:
            return known[0]
        if isinstance(leg, WebRtcLeg):  # a port of its own, its packets all the compositor's
            port = ScreenOrCamera(leg)
            compositor.add_source(port)

            def stop_port() -> None:
                compositor.remove_source(port)
                port.close()

            self._grid_sources[id(leg)] = (port, stop_port)
            return port
        stream = self._screens[id(leg)]  # its packets also go to the browsers' routes
        compositor.add_source(stream, own=False)
        self._grid_sources[id(leg)] = (
            stream,
            _both(
                self.router.tap(stream, compositor.feed), lambda: compositor.remove_source(stream)
            ),
        )
        return stream

    def _end_grid(self, sink: Any, screen: RoutedStream) -> None:
        if self._grids.pop(id(sink), None) is None:
            return
        if self.compositor is not None:
            self.compositor.remove_sink(screen)
        self._grid_stops.pop(id(sink), nothing)()
        screen.switch_source()

    def _video_source(self, leg: Any) -> RoutedStream | None:
        if isinstance(leg, WebRtcLeg):  # one port per route: it goes with the route
            return stream_of(leg, "video", self._ports)
        return self._screens.get(id(leg))  # a SIP stream feeds every route from it

    def _drop(self, current: tuple[Any, Route, RoutedStream]) -> None:
        _source, route, stream = current
        stop = self._tickers.pop(id(route), None)
        if stop is not None:
            stop()
        self.router.unlink(route)
        if isinstance(stream, WebRtcPort):
            self.router.remove(stream)
            stream.close()
            self._ports.remove(stream)

    def close(self) -> None:
        """Stop mixing and switching; release every route and port (idempotent)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.mixer.close()
        for current in list(self._routes.values()):
            self._drop(current)
        self._routes.clear()
        for stop in [*self._grid_stops.values(), *(s for _, s in self._grid_sources.values())]:
            stop()
        self._grid_stops.clear()
        self._grid_sources.clear()
        self._grids.clear()
        if self.compositor is not None:
            self.compositor.close()
        for stream in self._screens.values():
            self.router.remove(stream)
        for port in self._ports:
            port.close()
        self._ports.clear()
