"""aiortc peers standing in for browsers, on loopback only (tests and bench/webrtc.py)."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import math
import re

import numpy as np
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.mediastreams import (
    AudioStreamTrack,
    MediaStreamError,
    MediaStreamTrack,
    VideoStreamTrack,
)
from aiortc.rtp import RtpPacket
from av import AudioFrame, VideoFrame

from gateway.settings import WebRtcSettings
from gateway.webrtc import aiortc_internals as internals
from gateway.webrtc.leg import WebRtcLeg

LOOPBACK = ["127.0.0.1"]


#: A gateway leg's settings in tests: ICE on loopback only, a connect timeout for slow CI.
LEG_SETTINGS = WebRtcSettings(ice_addresses=LOOPBACK, connect_timeout=15)


class PatternTrack(VideoStreamTrack):
    """Moving stripes, so every frame differs and the encoder has work to do."""

    def __init__(self, width: int = 320, height: int = 240) -> None:
        super().__init__()
        self.width, self.height = width, height
        rows = np.arange(height, dtype=np.uint16)[:, None]
        self._base = np.repeat(((rows * 4) % 256).astype(np.uint8), width, axis=1)

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        shift = (pts // 3000) % self.height
        luma = np.roll(self._base, int(shift), axis=0)
        image = np.stack([luma, 255 - luma, luma // 2], axis=2)
        frame = VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class ColourTrack(VideoStreamTrack):
    """One solid colour (RGB), 320x240: where it ends up in a composed picture is easy to
    tell."""

    def __init__(self, colour: tuple[int, int, int]) -> None:
        super().__init__()
        self._image = np.empty((240, 320, 3), np.uint8)
        self._image[:] = colour

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame.from_ndarray(self._image, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class ToneTrack(AudioStreamTrack):
    """A tone (440 Hz unless told) at about -12 dBFS, 20 ms frames at 48 kHz."""

    def __init__(self, frequency: float = 440.0) -> None:
        super().__init__()
        self.frequency = frequency
        self._sample = 0

    async def recv(self) -> AudioFrame:
        await asyncio.sleep(0)  # keep AudioStreamTrack's pacing below
        silence = await super().recv()
        assert isinstance(silence, AudioFrame)
        # aiortc paces 20 ms frames of 8 kHz silence; ours are 20 ms at 48 kHz (960
        # samples), or the encoder would get a sixth of real time.
        samples = 960
        t = (np.arange(samples) + self._sample) / 48000
        self._sample += samples
        tone = (0.25 * 32767 * np.sin(2 * math.pi * self.frequency * t)).astype(np.int16)
        frame = AudioFrame.from_ndarray(tone.reshape(1, -1), format="s16", layout="mono")
        frame.pts, frame.sample_rate = silence.pts, 48000
        frame.time_base = fractions.Fraction(1, 48000)
        return frame


def is_vp8_keyframe(payload: bytes) -> bool:
    descriptor, rest = VpxPayloadDescriptor.parse(payload)
    return bool(
        descriptor.partition_start and descriptor.partition_id == 0 and rest and not rest[0] & 1
    )


class BrowserPeer:
    """One aiortc peer connection playing a browser: counts what it decodes."""

    def __init__(
        self,
        *,
        video: bool = True,
        audio: bool = True,
        send: bool = True,
        video_codec: str | None = None,
        tone_hz: float = 440.0,
        screen: bool = False,
        colour: tuple[int, int, int] | None = None,
    ) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.video_frames = 0
        self.audio_frames = 0
        self.loud_audio_frames = 0
        self.heard: list[np.ndarray] = []  # decoded audio, first channel, 20 ms each
        self.heard_rate = 48000
        self.rtp: dict[str, list[RtpPacket]] = {"audio": [], "video": []}
        self.keyframe_requests = 0
        self.senders: dict[str, RTCRtpSender] = {}
        self.receivers: dict[str, RTCRtpReceiver] = {}
        self._tasks: list[asyncio.Task[None]] = []
        for kind, wanted in (("video", video), ("audio", audio)):
            if not wanted:
                continue
            camera = PatternTrack() if colour is None else ColourTrack(colour)
            track = (camera if kind == "video" else ToneTrack(tone_hz)) if send else None
            transceiver = self.pc.addTransceiver(
                track or kind, direction="sendrecv" if send else "recvonly"
            )
            if kind == "video" and video_codec is not None:
                codecs = RTCRtpSender.getCapabilities("video").codecs
                transceiver.setCodecPreferences([c for c in codecs if c.name == video_codec])
            self.senders[kind] = transceiver.sender
            self.receivers[kind] = transceiver.receiver
            internals.on_keyframe_request(transceiver.sender, self._keyframe_asked)
        self.screen_sender: RTCRtpSender | None = None
        if screen:  # a third m-line for screen sharing, empty until ``share``
            self.screen_sender = self.pc.addTransceiver("video", direction="sendrecv").sender
        self.pc.on("track", self._on_track)

    async def share(self, width: int = 640, height: int = 360) -> None:
        """Start sharing a "screen" (a pattern of its own size) on the screen m-line."""
        assert self.screen_sender is not None, "BrowserPeer(screen=True) has a screen m-line"
        self.screen_sender.replaceTrack(PatternTrack(width, height))

    async def stop_sharing(self) -> None:
        assert self.screen_sender is not None
        self.screen_sender.replaceTrack(None)

    def _keyframe_asked(self) -> None:
        self.keyframe_requests += 1

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track: MediaStreamTrack) -> None:
        kind = track.kind
        receiver = self.receivers.get(kind)
        # Only the receiver of our own transceiver: a gateway's offer may carry
        # more m-lines of a kind (the screen slot), whose tracks come here too.
        if receiver is not None and receiver.track is track:
            internals.tap_rtp(receiver, self.rtp[kind].append)
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()
                if kind == "video":
                    self.video_frames += 1
                else:
                    assert isinstance(frame, AudioFrame)
                    self.audio_frames += 1
                    samples = frame.to_ndarray().astype(np.float64)
                    if np.sqrt(np.mean(samples**2)) > 1000:
                        self.loud_audio_frames += 1
                    channels = len(frame.layout.channels)
                    self.heard.append(samples.reshape(-1)[::channels])
                    self.heard_rate = frame.sample_rate
                    del self.heard[:-250]  # the last 5 s

    def dominant_frequency(self, seconds: float = 2.0) -> float:
        """The loudest frequency of the last ``seconds`` of decoded audio (Hz)."""
        samples = np.concatenate(self.heard)[-int(seconds * self.heard_rate) :]
        spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
        return float(np.fft.rfftfreq(samples.size, 1 / self.heard_rate)[int(np.argmax(spectrum))])

    def strength(self, frequency: float, seconds: float = 2.0) -> float:
        """How much of the last ``seconds`` is at ``frequency`` (±10 Hz), relative to the
        strongest component (1.0: it is the strongest); 0.0 before anything was heard."""
        if not self.heard:
            return 0.0
        samples = np.concatenate(self.heard)[-int(seconds * self.heard_rate) :]
        spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
        freqs = np.fft.rfftfreq(samples.size, 1 / self.heard_rate)
        band = spectrum[(freqs > frequency - 10) & (freqs < frequency + 10)]
        return float(band.max() / spectrum.max()) if band.size and spectrum.max() > 0 else 0.0

    def video_keyframes(self) -> int:
        """VP8 keyframes among the video packets received."""
        return sum(1 for p in self.rtp["video"] if is_vp8_keyframe(p.payload))

    async def offer(self, *, strip_candidates: bool = False) -> str:
        internals.pin_host_addresses(self.pc, LOOPBACK)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp = str(self.pc.localDescription.sdp)
        return _strip_candidates(sdp) if strip_candidates else sdp

    async def accept_answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))

    async def answer(self, offer: str) -> str:
        await self.pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        internals.pin_host_addresses(self.pc, LOOPBACK)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return str(self.pc.localDescription.sdp)

    def local_candidates(self) -> list[tuple[str, str | None, int]]:
        from aiortc.sdp import candidate_to_sdp

        transceiver = self.pc.getTransceivers()[0]
        gatherer = transceiver.sender.transport.transport.iceGatherer
        return [
            ("candidate:" + candidate_to_sdp(c), transceiver.mid, 0)
            for c in gatherer.getLocalCandidates()
        ]

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _strip_candidates(sdp: str) -> str:
    return re.sub(r"a=(candidate:[^\r\n]*|end-of-candidates)\r\n", "", sdp)


async def peer_to_answering_leg(peer: BrowserPeer, leg: WebRtcLeg) -> None:
    """The browser offers, the gateway leg answers."""
    await peer.accept_answer(await leg.accept_offer(await peer.offer()))


async def offering_leg_to_peer(leg: WebRtcLeg, peer: BrowserPeer) -> None:
    """The gateway leg offers, the browser answers."""
    await leg.accept_answer(await peer.answer(await leg.create_offer()))
