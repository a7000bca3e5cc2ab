"""Opus (RFC 6716, RTP per RFC 7587) on libopus, called through ctypes.

Why not PyAV's ``libopus`` codec: through libavcodec (av 18.1.0, FFmpeg 8)
the bitrate is fixed when the encoder opens (``libopusenc`` never calls
``OPUS_SET_BITRATE`` again), and the decoder cannot conceal a lost packet
or recover it from in-band FEC (``libopusdec`` always passes
``decode_fec=0`` and an empty packet means end of stream). libopus itself
does all three, so we call the very libopus that PyAV's wheel ships
(``av.libs/libopus-*.so``; a system ``libopus`` otherwise): same library,
no new dependency, and ctypes releases the GIL during each call.

The RTP clock of Opus is always 48 kHz whatever the audio bandwidth (RFC
7587 section 4.1), but libopus takes and gives PCM at 8, 12, 16, 24 or
48 kHz natively. Next to a G.711 leg the encoder runs at 8 kHz and codes
narrowband, the decoder outputs 8 kHz: no resampler on either side, and the
encoder does less than half the work (``bench media_codecs``: ~55 against
~125 µs per 20 ms at complexity 5); next to G.722 the same at 16 kHz,
wideband. The audio a narrowband leg sends has nothing above 4 kHz anyway.

``decode_pcm``/``encode_pcm`` move plain samples (no PyAV frame), which is
what the router's inline audio path uses: libopus through ctypes and G.711
through numpy tables never touch PyAV.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import weakref
from pathlib import Path

import av
import numpy as np
from av import AudioFrame

from gateway.log import get_logger
from mediacodecs.audio import Pcm, PcmFramer, pcm_frame
from mediacodecs.base import CodecError, MediaKind, RtpPayload

RTP_CLOCK = 48000
SAMPLES_PER_FRAME = 960  # 20 ms at 48 kHz
MAX_PACKET = 1275  # RFC 6716 section 3.2.1: the largest single frame
MAX_FRAME_SAMPLES = 5760  # 120 ms at 48 kHz, the longest packet
MIN_BITRATE = 6000
MAX_BITRATE = 510000
DECODER_RATES = frozenset({8000, 12000, 16000, 24000, 48000})
#: The rates libopus encodes from and decodes to (both the same set).
PCM_RATES = DECODER_RATES
#: libopus's widest audio band per input rate (opus_defines.h OPUS_BANDWIDTH_*).
_BANDWIDTH = {8000: 1101, 12000: 1102, 16000: 1103, 24000: 1104, 48000: 1105}
#: The encoder's default complexity. libopus itself defaults to 9, Asterisk
#: and FFmpeg's libopusenc (so rtpengine) to 10, libwebrtc to 9 on desktops
#: and 5 on mobiles; FreeSWITCH leaves libopus's default. 5 costs ~55 % of 9
#: at 48 kHz for speech that listeners do not tell apart at these bitrates.
DEFAULT_COMPLEXITY = 5
#: ... and at 8 kHz (narrowband: the G.711 bridge), where SILK codes alone.
#: With in-band FEC on, complexity 2 and up also analyse and code the LBRR
#: copy at full effort: 20 ms cost ~34 µs at 1, ~65 at 2, ~94 at 5, ~156 at 9
#: (``bench media_codecs``). The input is G.711 audio, already 8-bit
#: log-PCM; PESQ-NB of the round trip on a synthetic speech-like signal was
#: 4.478 at 1, 4.480 at 5, 4.494 at 9 (32 kbit/s; no recorded speech was at
#: hand to confirm it). Operators who want more set the complexity.
NARROWBAND_COMPLEXITY = 1


def default_complexity(sample_rate: int) -> int:
    """The encoder complexity used when none is asked for, by input rate."""
    return NARROWBAND_COMPLEXITY if sample_rate <= 8000 else DEFAULT_COMPLEXITY


# opus_defines.h
_APPLICATION_VOIP = 2048
_SET_BITRATE = 4002
_SET_MAX_BANDWIDTH = 4004
_SET_COMPLEXITY = 4010
_SET_INBAND_FEC = 4012
_SET_PACKET_LOSS_PERC = 4014
_SET_DTX = 4016
_SET_SIGNAL = 4024
_SIGNAL_VOICE = 3001

_log = get_logger("mediacodecs.opus")


def _library_path() -> str:
    av_dir = Path(av.__file__).resolve().parent
    bundled = [
        *sorted((av_dir.parent / "av.libs").glob("libopus*.so*")),  # Linux wheels
        *sorted((av_dir / ".dylibs").glob("libopus*.dylib")),  # macOS wheels
    ]
    if bundled:
        return str(bundled[0])
    found = ctypes.util.find_library("opus")
    if found is None:
        raise CodecError("libopus not found (neither in the av wheel nor on the system)")
    return found


@functools.cache
def _libopus() -> ctypes.CDLL:
    lib = ctypes.CDLL(_library_path())
    lib.opus_encoder_create.restype = ctypes.c_void_p
    lib.opus_encoder_create.argtypes = [
        ctypes.c_int32,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_int),
    ]
    lib.opus_encoder_destroy.argtypes = [ctypes.c_void_p]
    lib.opus_encode.restype = ctypes.c_int32
    lib.opus_encode.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,  # const opus_int16 *pcm, passed as an address
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int32,
    ]
    lib.opus_encoder_ctl.restype = ctypes.c_int  # variadic: arguments passed as c_int
    lib.opus_decoder_create.restype = ctypes.c_void_p
    lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
    lib.opus_decode.restype = ctypes.c_int
    lib.opus_decode.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,  # None means "this packet is lost": PLC
        ctypes.c_int32,
        ctypes.c_void_p,  # opus_int16 *pcm, passed as an address
        ctypes.c_int,
        ctypes.c_int,
    ]
    lib.opus_packet_get_nb_samples.restype = ctypes.c_int
    lib.opus_packet_get_nb_samples.argtypes = [ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32]
    lib.opus_strerror.restype = ctypes.c_char_p
    lib.opus_strerror.argtypes = [ctypes.c_int]
    lib.opus_get_version_string.restype = ctypes.c_char_p
    if hasattr(lib, "opus_packet_has_lbrr"):  # libopus >= 1.5
        lib.opus_packet_has_lbrr.restype = ctypes.c_int
        lib.opus_packet_has_lbrr.argtypes = [ctypes.c_char_p, ctypes.c_int32]
    return lib


def libopus_version() -> str:
    """The libopus in use, e.g. ``libopus 1.6.1``."""
    return str(_libopus().opus_get_version_string().decode())


def _error_text(code: int) -> str:
    return str(_libopus().opus_strerror(code).decode())


class OpusEncoder:
    """PCM to Opus payloads, one per 20 ms, bitrate changeable at any time.

    ``sample_rate`` is the rate libopus encodes from (8, 12, 16, 24 or
    48 kHz); it also caps the coded band (8 kHz: narrowband, 16 kHz:
    wideband), so pick the rate of the audio's real source. Frames at
    another rate are resampled to it; ``encode_pcm`` takes samples already
    at it. RTP timestamps stay on the 48 kHz clock.

    ``fec`` turns on in-band FEC (LBRR): each packet also carries a coarse
    copy of the previous one, sized for ``expected_loss`` percent loss; it
    only exists in the SILK and hybrid modes that speech at up to ~40 kbit/s
    uses. ``complexity`` 0-10 trades CPU for quality; None picks
    ``default_complexity(sample_rate)`` (see there for what others use).
    """

    kind: MediaKind = "audio"

    def __init__(
        self,
        bitrate: int = 32000,
        *,
        channels: int = 1,
        fec: bool = True,
        expected_loss: int = 10,
        complexity: int | None = None,
        dtx: bool = False,
        sample_rate: int = RTP_CLOCK,
    ) -> None:
        if sample_rate not in PCM_RATES:
            raise CodecError(f"opus encodes from {sorted(PCM_RATES)} Hz, not {sample_rate}")
        lib = _libopus()
        error = ctypes.c_int(0)
        handle = lib.opus_encoder_create(sample_rate, channels, _APPLICATION_VOIP, error)
        if not handle or error.value:
            raise CodecError(f"opus encoder: {_error_text(error.value)}")
        self._handle: int = handle
        weakref.finalize(self, lib.opus_encoder_destroy, handle)
        self.channels = channels
        self.sample_rate = sample_rate
        self.complexity = default_complexity(sample_rate) if complexity is None else complexity
        self._samples = sample_rate // 50  # 20 ms
        self._framer = PcmFramer(sample_rate, channels, self._samples)
        self._out = ctypes.create_string_buffer(MAX_PACKET)
        self._opus_encode = lib.opus_encode
        self._timestamp = 0
        self._bitrate = 0
        self._ctl(_SET_SIGNAL, _SIGNAL_VOICE)
        self._ctl(_SET_MAX_BANDWIDTH, _BANDWIDTH[sample_rate])
        self._ctl(_SET_COMPLEXITY, self.complexity)
        self._ctl(_SET_INBAND_FEC, int(fec))
        self._ctl(_SET_PACKET_LOSS_PERC, expected_loss if fec else 0)
        self._ctl(_SET_DTX, int(dtx))
        self.set_bitrate(bitrate)

    def _ctl(self, request: int, value: int) -> None:
        result = _libopus().opus_encoder_ctl(
            ctypes.c_void_p(self._handle), ctypes.c_int(request), ctypes.c_int32(value)
        )
        if result != 0:
            raise CodecError(f"opus_encoder_ctl({request}, {value}): {_error_text(result)}")

    @property
    def bitrate(self) -> int:
        """The target in bits per second."""
        return self._bitrate

    def set_bitrate(self, bps: int) -> None:
        """Takes effect with the next packet (Opus has no keyframes to force)."""
        bps = max(MIN_BITRATE, min(MAX_BITRATE, int(bps)))
        if bps != self._bitrate:
            self._ctl(_SET_BITRATE, bps)
            self._bitrate = bps

    def set_expected_loss(self, percent: int) -> None:
        """Resize the in-band FEC to the loss the receiver reports (RTCP RR)."""
        self._ctl(_SET_PACKET_LOSS_PERC, max(0, min(100, percent)))

    def encode(self, frame: AudioFrame) -> list[RtpPayload]:
        """Encode; one payload per complete 20 ms."""
        return [self._encode_block(block) for block in self._framer.push(frame)]

    def encode_pcm(self, pcm: Pcm) -> list[RtpPayload]:
        """Encode interleaved ``s16`` samples at ``sample_rate``; one payload per 20 ms."""
        return [self._encode_block(block) for block in self._framer.push_pcm(pcm)]

    def _encode_block(self, block: Pcm) -> RtpPayload:
        size = self._opus_encode(
            self._handle,
            block.ctypes.data,
            self._samples,
            self._out,
            MAX_PACKET,
        )
        if size < 0:
            raise CodecError(f"opus_encode: {_error_text(size)}")
        payload = RtpPayload(self._out.raw[:size], self._timestamp)
        self._timestamp += SAMPLES_PER_FRAME
        return payload

    def request_keyframe(self) -> None:
        """Audio has no keyframes."""


class OpusDecoder:
    """Opus payloads to ``s16`` frames at ``sample_rate`` (pts in 1/sample_rate).

    ``conceal(next_payload)`` recovers the lost packet from the in-band FEC
    of the next one when it carries it, and otherwise runs libopus PLC.
    ``recovered`` and ``concealed`` count the two outcomes.
    """

    kind: MediaKind = "audio"
    keyframe_needed = False

    def __init__(self, *, channels: int = 1, sample_rate: int = RTP_CLOCK) -> None:
        if sample_rate not in DECODER_RATES:
            raise CodecError(f"opus decodes at {sorted(DECODER_RATES)} Hz, not {sample_rate}")
        lib = _libopus()
        error = ctypes.c_int(0)
        handle = lib.opus_decoder_create(sample_rate, channels, error)
        if not handle or error.value:
            raise CodecError(f"opus decoder: {_error_text(error.value)}")
        self._handle: int = handle
        weakref.finalize(self, lib.opus_decoder_destroy, handle)
        self.channels = channels
        self.sample_rate = sample_rate
        max_samples = MAX_FRAME_SAMPLES * sample_rate // RTP_CLOCK
        self._pcm = np.empty(max_samples * channels, dtype=np.int16)
        self._capacity = max_samples
        self._address = self._pcm.ctypes.data  # the buffer never moves
        self._opus_decode = lib.opus_decode
        self._next_pts: int | None = None
        self._last_samples = SAMPLES_PER_FRAME * sample_rate // RTP_CLOCK
        self.decode_errors = 0
        self.recovered = 0
        self.concealed = 0

    def decode(self, payload: RtpPayload) -> list[AudioFrame]:
        """One frame per payload (20 ms, or whatever the packet holds)."""
        samples, pts = self._decode(payload)
        return [self._frame(samples, pts)]

    def decode_pcm(self, payload: RtpPayload) -> Pcm:
        """The payload's samples at ``sample_rate``, interleaved; a view of the
        decoder's buffer, valid until the next call."""
        samples, _pts = self._decode(payload)
        return self._pcm[: samples * self.channels]

    def conceal(self, next_payload: RtpPayload | None = None) -> list[AudioFrame]:
        """One frame standing in for one lost packet: FEC if possible, else PLC."""
        samples, pts = self._conceal(next_payload)
        return [self._frame(samples, pts)]

    def conceal_pcm(self, next_payload: RtpPayload | None = None) -> Pcm:
        """``conceal`` as samples (a view of the decoder's buffer, like ``decode_pcm``)."""
        samples, _pts = self._conceal(next_payload)
        return self._pcm[: samples * self.channels]

    def _decode(self, payload: RtpPayload) -> tuple[int, int | None]:
        if not payload.data:
            return self._conceal()  # libopus reads a zero-length packet as a lost one
        pts = payload.timestamp * self.sample_rate // RTP_CLOCK  # ints: a Fraction costs ~2 µs
        samples = self._run(payload.data, self._capacity, fec=False)
        if samples < 0:
            self.decode_errors += 1
            _log.warning(
                "opus payload rejected", error=_error_text(samples), size=len(payload.data)
            )
            return self._conceal()
        self._last_samples = samples
        self._next_pts = pts + samples
        return samples, pts

    def _conceal(self, next_payload: RtpPayload | None = None) -> tuple[int, int | None]:
        lib = _libopus()
        use_fec = next_payload is not None and (
            not hasattr(lib, "opus_packet_has_lbrr")
            or lib.opus_packet_has_lbrr(next_payload.data, len(next_payload.data)) == 1
        )
        data = next_payload.data if use_fec and next_payload is not None else None
        # Both FEC and PLC must be asked for exactly the lost duration.
        samples = self._run(data, self._last_samples, fec=use_fec)
        if samples < 0:
            self.decode_errors += 1
            _log.warning("opus concealment failed", error=_error_text(samples))
            samples = self._last_samples
            self._pcm[: samples * self.channels] = 0
        if use_fec:
            self.recovered += 1
        else:
            self.concealed += 1
        pts = self._next_pts
        if pts is not None:
            self._next_pts = pts + samples
        return samples, pts

    def _run(self, data: bytes | None, samples: int, *, fec: bool) -> int:
        result: int = self._opus_decode(
            self._handle, data, len(data) if data else 0, self._address, samples, int(fec)
        )
        return result

    def _frame(self, samples: int, pts: int | None) -> AudioFrame:
        # pcm_frame copies, so the shared output buffer can be reused.
        return pcm_frame(self._pcm[: samples * self.channels], self.sample_rate, self.channels, pts)
