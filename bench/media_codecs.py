"""``python -m bench media_codecs``: what codec work costs on one core.

Figures (one JSON line each, single thread unless said otherwise):

* G.711 encode + decode of 20 ms frames per second: libavcodec's
  ``pcm_mulaw`` (what we use) against numpy table lookup, side by side.
* Opus <-> G.711 legs per core: one leg is both directions at 50 payloads/s
  each (Opus -> PCMU and PCMU -> Opus transcoders), so its share of a core
  is 50 x (time of one payload each way).
* VP8 <-> H.264 transcodes per core at 640x480, 15 fps, one direction each.
* Threads: the same work on a ``MediaExecutor`` with 1 and 2 workers, two
  streams, to see whether PyAV's GIL release turns into parallel speed.
* The per-codec costs the registry's table is filled from.

Each figure is the best of ``--repeat`` runs, since the host is shared.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np
import numpy.typing as npt

from bench import emit, log
from mediacodecs.audio import Pcm, pcm_frame
from mediacodecs.base import AudioFrame, RtpPayload, VideoFrame
from mediacodecs.executor import MediaExecutor
from mediacodecs.g711 import G711Decoder, G711Encoder, NumpyG711Decoder, NumpyG711Encoder
from mediacodecs.registry import (
    CodecSpec,
    create_audio_decoder,
    create_audio_encoder,
    create_video_decoder,
    create_video_encoder,
)
from mediacodecs.transcode import AudioTranscoder, VideoTranscoder
from mediacodecs.video import video_frame

BENCH = "media_codecs"
OPUS = CodecSpec("opus", 48000, 2, "useinbandfec=1")
PCMU = CodecSpec("PCMU", 8000)
G722 = CodecSpec("G722", 8000)
VP8 = CodecSpec("VP8", 90000)
H264 = CodecSpec("H264", 90000, fmtp="packetization-mode=1;profile-level-id=42e01f")
WIDTH, HEIGHT, FPS = 640, 480, 15


def _best(run: Callable[[], int], repeat: int) -> float:
    """Units per second of the fastest of ``repeat`` runs (``run`` returns units)."""
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        units = run()
        best = max(best, units / (time.perf_counter() - start))
    return best


def _speech_like(rate: int, seconds: float) -> Pcm:
    """Tones with a syllable-rate envelope and noise: codecs work harder on it than on a sine."""
    t = np.arange(round(rate * seconds)) / rate
    voice = sum(np.sin(2 * np.pi * f * t) / (k + 1) for k, f in enumerate((180, 360, 720, 1100)))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    noise = np.random.default_rng(1).normal(0, 0.05, t.size)
    return (6000 * (voice * envelope + noise)).astype(np.int16)


def camera_like(index: int) -> npt.NDArray[np.uint8]:
    """A moving gradient with scrolling texture: harder than a plain gradient."""
    x = np.arange(WIDTH)[None, :]
    y = np.arange(HEIGHT)[:, None]
    rgb = np.empty((HEIGHT, WIDTH, 3), dtype=np.int32)
    rgb[..., 0] = (x + 4 * index) % 256
    rgb[..., 1] = (2 * y + 3 * index) % 256
    rgb[..., 2] = ((x + y) // 2 + 2 * index) % 256
    texture = np.roll(_TEXTURE, 3 * index, axis=1)[:HEIGHT, :WIDTH]
    camera: npt.NDArray[np.uint8] = np.clip(rgb + texture[..., None], 0, 255).astype(np.uint8)
    return camera


_TEXTURE = np.random.default_rng(2).integers(-24, 24, (HEIGHT, 2 * WIDTH), dtype=np.int32)


def _audio_payloads(codec: CodecSpec, rate: int, seconds: float) -> list[RtpPayload]:
    encoder = create_audio_encoder(codec, bitrate=32000)
    pcm = _speech_like(rate, seconds)
    step = rate // 50
    return [
        payload
        for i in range(0, pcm.size - step + 1, step)
        for payload in encoder.encode(pcm_frame(pcm[i : i + step], rate, 1, i))
    ]


def _video_payloads(codec: CodecSpec, frames: int) -> list[list[RtpPayload]]:
    encoder = create_video_encoder(codec, width=WIDTH, height=HEIGHT, fps=FPS, bitrate=800_000)
    return [
        encoder.encode(video_frame(camera_like(i), round(i * 90000 / FPS))) for i in range(frames)
    ]


def bench_g711(seconds: float, repeat: int) -> None:
    """G.711 encode + decode, ours against libavcodec."""
    pcm = _speech_like(8000, seconds)
    frames = [pcm_frame(pcm[i : i + 160], 8000, 1, i) for i in range(0, pcm.size - 159, 160)]

    def run(
        encoder: G711Encoder | NumpyG711Encoder, decoder: G711Decoder | NumpyG711Decoder
    ) -> int:
        for frame in frames:
            for payload in encoder.encode(frame):
                decoder.decode(payload)
        return len(frames)

    ours = functools.partial(run, G711Encoder("pcmu"), G711Decoder("pcmu"))
    peer = _best(functools.partial(run, NumpyG711Encoder("pcmu"), NumpyG711Decoder("pcmu")), repeat)
    emit(
        BENCH,
        "g711_encode_decode_20ms_frames_per_core",
        _best(ours, repeat),
        "frames/s",
        peer="numpy table lookup, same framing and payloads",
        peer_value=round(peer),
    )


def _transcode_all(transcoder: AudioTranscoder, payloads: list[RtpPayload]) -> int:
    for payload in payloads:
        transcoder.process(payload)
    return len(payloads)


def bench_audio_legs(seconds: float, repeat: int) -> dict[str, float]:
    """Opus <-> G.711 legs per core; returns seconds per payload each way."""
    opus = _audio_payloads(OPUS, 48000, seconds)
    pcmu = _audio_payloads(PCMU, 8000, seconds)
    to_pcmu = _best(lambda: _transcode_all(AudioTranscoder(OPUS, PCMU), opus), repeat)
    to_opus = _best(
        lambda: _transcode_all(AudioTranscoder(PCMU, OPUS, bitrate=32000), pcmu), repeat
    )
    per_payload = 1 / to_pcmu + 1 / to_opus
    share = 50 * per_payload
    emit(BENCH, "opus_to_pcmu_payloads_per_core", to_pcmu, "payloads/s")
    emit(BENCH, "pcmu_to_opus_payloads_per_core", to_opus, "payloads/s")
    emit(BENCH, "opus_g711_leg_core_share", 100 * share, "% of a core per leg (both ways)")
    emit(BENCH, "opus_g711_legs_per_core", 1 / share, "legs")
    return {"to_pcmu": 1 / to_pcmu, "to_opus": 1 / to_opus}


def _video_all(transcoder: VideoTranscoder, frames: list[list[RtpPayload]]) -> int:
    for payloads in frames:  # a frame at a time, as the router hands them over
        transcoder.process_frame([p.data for p in payloads], payloads[0].timestamp)
    return len(frames)


def _transcode_video(source: CodecSpec, sink: CodecSpec, frames: list[list[RtpPayload]]) -> int:
    return _video_all(VideoTranscoder(source, sink, WIDTH, HEIGHT, FPS, 800_000), frames)


def bench_video(frames: int, repeat: int) -> None:
    """VP8 <-> H.264 at 640x480@15 per core."""
    directions = [
        ("vp8_to_h264", VP8, H264, _video_payloads(VP8, frames)),
        ("h264_to_vp8", H264, VP8, _video_payloads(H264, frames)),
    ]
    for name, source, sink, payloads in directions:
        rate = _best(functools.partial(_transcode_video, source, sink, payloads), repeat)
        emit(BENCH, f"{name}_640x480_frames_per_core", rate, "frames/s")
        emit(BENCH, f"{name}_640x480_15fps_transcodes_per_core", rate / FPS, "streams")


def _through_executor(workers: int, jobs: list[Callable[[], object]]) -> float:
    """Jobs per second through a MediaExecutor; jobs alternate between two streams."""
    with MediaExecutor(workers, per_key=len(jobs)) as executor:
        start = time.perf_counter()
        futures: list[Future[object]] = [
            executor.submit(job, key=index % 2) for index, job in enumerate(jobs)
        ]
        for future in futures:
            future.result()
        return len(jobs) / (time.perf_counter() - start)


def _video_jobs(frames: list[list[RtpPayload]]) -> list[Callable[[], object]]:
    streams = [VideoTranscoder(VP8, H264, WIDTH, HEIGHT, FPS, 800_000) for _ in range(2)]
    return [functools.partial(_video_all, t, [f]) for f in frames for t in streams]


def _audio_jobs(
    source: CodecSpec, sink: CodecSpec, payloads: list[RtpPayload]
) -> list[Callable[[], object]]:
    streams = [AudioTranscoder(source, sink) for _ in range(2)]
    return [functools.partial(t.process, p) for p in payloads for t in streams]


def _inline(jobs: list[Callable[[], object]]) -> float:
    start = time.perf_counter()
    for job in jobs:
        job()
    return len(jobs) / (time.perf_counter() - start)


def bench_threads(frames: int, seconds: float, repeat: int) -> None:
    """Two streams through 1 and 2 workers (and called inline, no executor):
    whether PyAV's and ctypes' GIL release turns into parallel speed."""
    vp8 = _video_payloads(VP8, frames)
    opus = _audio_payloads(OPUS, 48000, seconds)
    pcmu = _audio_payloads(PCMU, 8000, seconds)
    cases: list[tuple[str, Callable[[], list[Callable[[], object]]], str]] = [
        ("vp8_to_h264", functools.partial(_video_jobs, vp8), "frames/s"),
        ("opus_to_pcmu", functools.partial(_audio_jobs, OPUS, PCMU, opus), "payloads/s"),
        ("pcmu_to_opus", functools.partial(_audio_jobs, PCMU, OPUS, pcmu), "payloads/s"),
    ]
    for name, make, unit in cases:
        inline = max(_inline(make()) for _ in range(repeat))
        one = max(_through_executor(1, make()) for _ in range(repeat))
        two = max(_through_executor(2, make()) for _ in range(repeat))
        emit(BENCH, f"{name}_1_worker", one, unit, peer="inline", peer_value=round(inline, 1))
        emit(BENCH, f"{name}_2_workers", two, unit, peer="1 worker", peer_value=round(one, 1))


def _encode_audio(codec: CodecSpec, frames: list[AudioFrame]) -> int:
    encoder = create_audio_encoder(codec, bitrate=32000)
    for frame in frames:
        encoder.encode(frame)
    return len(frames)


def _decode_audio(codec: CodecSpec, payloads: list[RtpPayload]) -> int:
    decoder = create_audio_decoder(codec)
    for payload in payloads:
        decoder.decode(payload)
    return len(payloads)


def _encode_video(codec: CodecSpec, frames: list[VideoFrame]) -> int:
    encoder = create_video_encoder(codec, width=WIDTH, height=HEIGHT, fps=FPS, bitrate=800_000)
    for frame in frames:
        encoder.encode(frame)
    return len(frames)


def _decode_video(codec: CodecSpec, frames: list[list[RtpPayload]]) -> int:
    decoder = create_video_decoder(codec)
    for payloads in frames:
        for payload in payloads:
            decoder.decode(payload)
    return len(frames)


def bench_codec_costs(seconds: float, frames: int, repeat: int) -> None:
    """Share of a core of each codec alone, for the registry's table."""
    for codec, rate in ((PCMU, 8000), (G722, 16000), (OPUS, 48000)):
        pcm = _speech_like(rate, seconds)
        step = rate // 50
        starts = range(0, pcm.size - step + 1, step)
        blocks = [pcm_frame(pcm[i : i + step], rate, 1, i) for i in starts]
        payloads = _audio_payloads(codec, rate, seconds)
        name = codec.name.lower()
        encode = _best(functools.partial(_encode_audio, codec, blocks), repeat)
        decode = _best(functools.partial(_decode_audio, codec, payloads), repeat)
        emit(BENCH, f"{name}_encode_core_share", 100 * 50 / encode, "% of a core")
        emit(BENCH, f"{name}_decode_core_share", 100 * 50 / decode, "% of a core")
    pictures = [video_frame(camera_like(i), round(i * 90000 / FPS)) for i in range(frames)]
    for codec in (VP8, H264):
        coded = _video_payloads(codec, frames)
        name = codec.name.lower()
        encode = _best(functools.partial(_encode_video, codec, pictures), repeat)
        decode = _best(functools.partial(_decode_video, codec, coded), repeat)
        emit(BENCH, f"{name}_encode_640x480_15fps_core_share", 100 * FPS / encode, "% of a core")
        emit(BENCH, f"{name}_decode_640x480_15fps_core_share", 100 * FPS / decode, "% of a core")


def main(argv: list[str]) -> None:
    """Run every figure (``--quick`` for a short smoke run)."""
    parser = argparse.ArgumentParser(prog="python -m bench media_codecs")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per run")
    parser.add_argument("--frames", type=int, default=60, help="video frames per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (best kept)")
    parser.add_argument("--quick", action="store_true", help="1 s of audio, 10 frames, 1 run")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.frames, args.repeat = 1.0, 10, 1
    log("media_codecs: G.711")
    bench_g711(args.seconds, args.repeat)
    log("media_codecs: Opus <-> G.711 legs")
    bench_audio_legs(args.seconds, args.repeat)
    log("media_codecs: VP8 <-> H.264")
    bench_video(args.frames, args.repeat)
    log("media_codecs: 1 vs 2 workers")
    bench_threads(args.frames, args.seconds, args.repeat)
    log("media_codecs: per-codec costs")
    bench_codec_costs(args.seconds, args.frames, args.repeat)
