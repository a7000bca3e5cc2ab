"""Browser legs: concurrent 1:1 video calls forwarded without decoding, per core.

Each call is two browsers and two gateway legs: browser A <-> leg A ==
Passthrough == leg B <-> browser B, both directions, Opus audio (50 packets/s)
and VP8 640x480 at 30 frames/s (about 1 Mbit/s) each way, over ICE, DTLS-SRTP,
bundle and rtcp-mux on loopback.

The gateway legs run in a child process whose CPU (utime + stime) is
measured over a steady window, and whose resident memory growth per call is
reported. The browsers are aiortc peers in this process; so that they can
stand in for many browsers they send media encoded once in advance (a 3 s
closed group of pictures, looped) and count what they receive without
decoding it. Their CPU is reported separately.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from multiprocessing.connection import Connection
from typing import Any

from bench import emit, log
from bench._browser import Browser
from bench._load import cpu_seconds, rss_bytes

VIDEO_FPS = 30
AUDIO_PTIME = 0.02
SECONDS_OF_MEDIA = 3


# --- the gateway (child process) ------------------------------------------------------------
def _gateway_child(conn: Connection) -> None:
    from gateway.settings import WebRtcSettings
    from gateway.webrtc import Passthrough, WebRtcLeg

    async def main() -> None:
        settings = WebRtcSettings(max_legs=100000, connect_timeout=120)
        calls: list[tuple[WebRtcLeg, WebRtcLeg, Passthrough]] = []
        while True:
            message = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            if message[0] == "calls":  # offers of the A browsers -> answers, and offers to B
                answers, offers, legs = [], [], []
                for offer in message[1]:
                    leg_a, leg_b = WebRtcLeg(settings), WebRtcLeg(settings)
                    answers.append(await leg_a.accept_offer(offer))
                    offers.append(await leg_b.create_offer())
                    legs.append((leg_a, leg_b))
                conn.send((answers, offers))
                for (_leg_a, leg_b), answer in zip(legs, conn.recv(), strict=True):
                    await leg_b.accept_answer(answer)
                waits = [leg.connected.wait() for pair in legs for leg in pair]
                await asyncio.wait_for(asyncio.gather(*waits), 120)
                for leg_a, leg_b in legs:
                    calls.append((leg_a, leg_b, Passthrough(leg_a, leg_b)))
                conn.send("connected")
            elif message[0] == "stop":
                for leg_a, leg_b, passthrough in calls:
                    passthrough.close()
                    await leg_a.close()
                    await leg_b.close()
                conn.send("stopped")
                return

    asyncio.run(main())


# --- the browsers (this process) ------------------------------------------------------------
def _encode_media() -> tuple[list[list[bytes]], list[list[bytes]]]:
    """3 s of VP8 640x480 (first frame a keyframe) and Opus tone, as RTP payloads."""
    from aiortc.codecs.opus import OpusEncoder
    from aiortc.codecs.vpx import Vp8Encoder
    from av import AudioFrame, VideoFrame

    from tests.support.webrtc import PatternTrack, ToneTrack

    async def frames() -> tuple[list[VideoFrame], list[AudioFrame]]:
        video_track, audio_track = PatternTrack(640, 480), ToneTrack()
        for track in (video_track, audio_track):  # no real-time pacing while encoding
            track._start, track._timestamp = time.time() - 3600, 0
        video = [await video_track.recv() for _ in range(VIDEO_FPS * SECONDS_OF_MEDIA)]
        audio = [await audio_track.recv() for _ in range(int(SECONDS_OF_MEDIA / AUDIO_PTIME))]
        return video, audio

    video_frames, audio_frames = asyncio.run(frames())
    vp8 = Vp8Encoder()
    vp8.target_bitrate = 1_000_000
    video = [vp8.encode(f, force_keyframe=(i == 0))[0] for i, f in enumerate(video_frames)]
    opus = OpusEncoder()
    audio = [opus.encode(f)[0] for f in audio_frames]
    return video, [p for p in audio if p]


async def _feed(browsers: list[Browser], video: list[list[bytes]], audio: list[list[bytes]],
                stop: asyncio.Event) -> None:  # fmt: skip
    """Push every browser's next frames at real-time pace (one timer for all)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent_video = sent_audio = 0
    while not stop.is_set():
        elapsed = loop.time() - start
        while sent_video <= elapsed * VIDEO_FPS:
            payloads = video[sent_video % len(video)]
            for browser in browsers:
                track = browser.tracks["video"]
                for i, payload in enumerate(payloads):
                    track.push(payload, sent_video * 3000, i == len(payloads) - 1)
            sent_video += 1
        while sent_audio <= elapsed / AUDIO_PTIME:
            for payload in audio[sent_audio % len(audio)]:
                for browser in browsers:
                    browser.tracks["audio"].push(payload, sent_audio * 960, True)
            sent_audio += 1
        await asyncio.sleep(0.005)


async def _run(calls: int, warmup: float, window: float) -> dict[str, float]:
    from aiortc import RTCSessionDescription

    video, audio = await asyncio.get_running_loop().run_in_executor(None, _encode_media)
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.get_context("spawn").Process(
        target=_gateway_child, args=(child,), daemon=True
    )
    proc.start()
    assert proc.pid is not None
    pid = proc.pid
    await asyncio.sleep(1.0)
    rss_before = rss_bytes(pid)
    browsers_a = [Browser() for _ in range(calls)]
    browsers_b = [Browser() for _ in range(calls)]
    loop = asyncio.get_running_loop()
    offers = [await b.offer() for b in browsers_a]
    parent.send(("calls", offers))
    answers_a, offers_b = await loop.run_in_executor(None, parent.recv)
    for browser, answer in zip(browsers_a, answers_a, strict=True):
        await browser.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    parent.send([await b.answer(o) for b, o in zip(browsers_b, offers_b, strict=True)])
    assert await loop.run_in_executor(None, parent.recv) == "connected"
    browsers = browsers_a + browsers_b
    stop = asyncio.Event()
    feeder = asyncio.ensure_future(_feed(browsers, video, audio, stop))
    await asyncio.sleep(warmup)
    for browser in browsers:
        browser.received = {"audio": 0, "video": 0}
    cpu_start, own_start, wall_start = cpu_seconds(pid), time.process_time(), time.monotonic()
    await asyncio.sleep(window)
    elapsed = time.monotonic() - wall_start
    cpu = 100 * (cpu_seconds(pid) - cpu_start) / elapsed
    peers_cpu = 100 * (time.process_time() - own_start) / elapsed
    rss_after = rss_bytes(pid)
    fps = [b.received["video"] / elapsed for b in browsers]
    aps = [b.received["audio"] / elapsed for b in browsers]
    stop.set()
    await feeder
    parent.send(("stop",))
    assert await loop.run_in_executor(None, parent.recv) == "stopped"
    proc.join(10)
    for browser in browsers:
        await browser.pc.close()
    return {
        "cpu_pct": cpu,
        "peers_cpu_pct": peers_cpu,
        "rss_per_call": (rss_after - rss_before) / calls,
        "rx_video_fps_min": min(fps),
        "rx_video_fps_avg": sum(fps) / len(fps),
        "rx_audio_pps_min": min(aps),
        "video_kbps": sum(len(p) for f in video for p in f) * 8 / SECONDS_OF_MEDIA / 1000,
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench webrtc")
    parser.add_argument("--calls", default="10,40")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=10.0)
    args = parser.parse_args(argv)
    for calls in (int(c) for c in args.calls.split(",")):
        result = asyncio.run(_run(calls, args.warmup, args.window))
        log(f"{calls} browser-to-browser calls: {result}")
        per_call = result["cpu_pct"] / calls
        extra: dict[str, Any] = {
            "calls": calls,
            "video_kbps_each_way": round(result["video_kbps"]),
            "rx_video_fps_min": round(result["rx_video_fps_min"], 1),
            "rx_audio_pps_min": round(result["rx_audio_pps_min"], 1),
            "peers_cpu_pct": round(result["peers_cpu_pct"], 1),
        }
        emit("webrtc", "passthrough_cpu_per_call", per_call, "%core/call", **extra)
        emit("webrtc", "passthrough_calls_per_core", 100 / per_call, "calls/core", **extra)
        emit("webrtc", "memory_per_call", result["rss_per_call"] / 1e6, "MB/call", calls=calls)
