"""A real baresip user agent on loopback, driven through its ctrl_tcp socket.

``Baresip`` writes ``config`` and ``accounts`` into a temp dir, starts
``baresip -f DIR`` and talks JSON netstrings to ctrl_tcp: ``command()`` returns
the response with the same token, ``wait_event()`` returns the next unseen event
of a type. Events and responses are read by one background thread; every wait
is bounded. In asyncio tests call the blocking methods via ``asyncio.to_thread``.

Facts about Debian 12's baresip 1.0.0 that shaped this module:
- ``aufile`` is only an audio *source* here; ``audio_player aufile,x.wav`` records
  nothing. The ``sndfile`` filter module writes ``dump-<time>-dec.wav`` (what was
  received, decoded) and ``-enc.wav`` (what was sent) per call into ``snd_path``.
- ``sip_listen IP:P`` also opens TLS on P+1, so both ports must be free.
- ``stdio.so`` fails with stdin from /dev/null (epoll refuses it); not loaded.
- Menu commands: accept, answermode, auplay, ausrc, callstat, dial, hangup, help,
  insmod, listcalls, options, quit, reginfo, rmmod, uadel, uafind, uanew, uanext,
  vidsrc, about; during a call also aubitrate, audio_debug (RTP/RTCP counters),
  callfind, hold, line, mute, prevhold, prevresume, reinvite, resume, sndcode
  (DTMF; there is no ``send_dtmf``), statmode, transfer, video_debug, video_dir.
- Events (``type``) in the binary: REGISTERING, REGISTER_OK, REGISTER_FAIL,
  UNREGISTERING, CALL_INCOMING, CALL_RINGING, CALL_PROGRESS, CALL_ESTABLISHED,
  CALL_CLOSED (``param`` = reason), CALL_LOCAL_SDP / CALL_REMOTE_SDP (offer or
  answer), CALL_RTPESTAB, CALL_RTCP (``rtcp_stats``), CALL_MENC, CALL_DTMF_START
  (``param`` = digit), CALL_DTMF_END, TRANSFER, TRANSFER_FAILED, MWI_NOTIFY,
  AUDIO_ERROR, VU_TX_REPORT, VU_RX_REPORT, SHUTDOWN, EXIT. Events of an account
  in ``accounts`` fire before ctrl_tcp is up, so the account is added via ``uanew``.
- A failing command answers ``ok: false`` (``hold`` with no call: "Invalid argument").
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import wave
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.support.net import free_port

BARESIP = "/usr/bin/baresip"
MODULES_DIR = "/usr/lib/baresip/modules"
CODEC_MODULES = {"PCMU": "g711.so", "PCMA": "g711.so", "G722": "g722.so", "opus": "opus.so"}
VIDEO_MODULES = {"vp8": ("VP8", "vp8.so"), "h264": ("H264", "avcodec.so")}
MEDIAENC_MODULES = dict.fromkeys(("srtp", "srtp-mand", "srtp-mandf"), "srtp.so")
MEDIAENC_MODULES["dtls_srtp"] = "dtls_srtp.so"
MAX_NETSTRING = 1 << 20

Event = dict[str, Any]


class BaresipError(RuntimeError):
    """baresip died, did not answer in time, or refused a command."""


@dataclass(frozen=True)
class RtpStats:
    """RTP counters of one stream of the current call (``audio_debug`` / ``video_debug``)."""

    tx_packets: int
    rx_packets: int
    lost: int
    raw: str


def parse_rtp_debug(text: str) -> RtpStats:
    """Read ``TX: packets=N``, RTCP member ``rcvd=N`` and ``lost=N`` from a debug command."""
    tx = re.search(r"TX: packets=(\d+)", text)
    rcvd = [int(n) for n in re.findall(r"rcvd=(\d+)", text)]
    lost = [int(n) for n in re.findall(r"lost=(-?\d+)", text)]
    return RtpStats(int(tx.group(1)) if tx else 0, sum(rcvd), sum(lost), text)


def dominant_frequency(wav_path: Path, skip_s: float = 0.2) -> float:
    """The strongest frequency (Hz) in a 16-bit WAV's first channel, after ``skip_s``."""
    with wave.open(str(wav_path)) as w:
        rate, channels = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    samples = data.reshape(-1, channels)[int(rate * skip_s) :, 0].astype(np.float64)
    if samples.size < rate // 10:
        raise ValueError(f"{wav_path} holds only {samples.size} samples")
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[int(np.argmax(spectrum))])


def _port_pair() -> int:
    """A free port P whose P+1 is free too (baresip puts SIP over TLS there)."""
    for _ in range(50):
        port = free_port()
        try:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    s.bind(("127.0.0.1", port + 1))
        except (OSError, OverflowError):
            continue
        return port
    raise RuntimeError("no free port pair")


def _rtp_block(size: int = 40) -> tuple[int, int]:
    """A random block below the kernel's ephemeral range (32768+) for RTP/RTCP."""
    first = random.randrange(20000, 32000 - size, 2)
    return first, first + size - 1


@dataclass(eq=False)
class Baresip:
    """One baresip process with one account; see the module docstring for facts.

    ``registrar`` is ``127.0.0.1:PORT`` of a SIP registrar (the account registers
    there with ``password``); without it the UA is reached at ``contact_uri``.
    ``codecs``: PCMU, PCMA, G722, opus. ``video``: vp8 or h264 (fakevideo source).
    ``mediaenc``: srtp, srtp-mand, srtp-mandf or dtls_srtp.
    """

    user: str
    _: KW_ONLY
    registrar: str | None = None
    password: str | None = None
    codecs: Sequence[str] = ("PCMU",)
    answermode: str = "auto"
    tone_hz: int = 1000
    video: str | None = None
    mediaenc: str | None = None
    extra_config: dict[str, str] = field(default_factory=dict)
    start_timeout: float = 10.0

    def __post_init__(self) -> None:
        unknown = [c for c in self.codecs if c not in CODEC_MODULES]
        if unknown or (self.video and self.video not in VIDEO_MODULES):
            raise ValueError(f"unsupported codec {unknown or self.video}")
        if self.mediaenc and self.mediaenc not in MEDIAENC_MODULES:
            raise ValueError(f"unsupported mediaenc {self.mediaenc}")
        self.workdir: Path | None = None  # made by start(), removed by stop()
        self._cond = threading.Condition()
        self._tokens = 0
        self._reset()

    def _reset(self) -> None:
        """Fresh ports and run state, for the first start and for a retry."""
        self.sip_port = _port_pair()
        self.ctrl_port = free_port()
        self.rtp_ports = _rtp_block()
        self.proc: subprocess.Popen[bytes] | None = None
        self._final_log: str | None = None
        self.events: list[Event] = []
        self._pending: list[Event] = []
        self._responses: dict[str, Event] = {}
        self._sock: socket.socket | None = None
        self._sock_closed = False
        self._reader: threading.Thread | None = None

    @property
    def uri(self) -> str:
        """Where to reach this UA: its AOR at the registrar, else its own listen address."""
        return f"sip:{self.user}@{self.registrar or f'127.0.0.1:{self.sip_port}'}"

    @property
    def contact_uri(self) -> str:
        """The UA's own address, bypassing any registrar."""
        return f"sip:{self.user}@127.0.0.1:{self.sip_port}"

    def config_text(self) -> str:
        """The generated ``config`` file."""
        modules = sorted({CODEC_MODULES[c] for c in self.codecs})
        modules += ["ausine.so", "sndfile.so", "ctrl_tcp.so"]
        if self.video:
            modules += ["fakevideo.so", VIDEO_MODULES[self.video][1]]
        if self.mediaenc:
            modules.append(MEDIAENC_MODULES[self.mediaenc])
        lines = {
            "poll_method": "epoll",
            "sip_listen": f"127.0.0.1:{self.sip_port}",
            "net_interface": "127.0.0.1",
            "dns_server": "127.0.0.1:53",
            "audio_source": f"ausine,{self.tone_hz}",
            "ausrc_srate": "48000",
            "ausrc_channels": "2",
            "snd_path": str(self.record_dir),
            "rtp_ports": f"{self.rtp_ports[0]}-{self.rtp_ports[1]}",
            "rtp_stats": "yes",
            "statmode_default": "off",
            "ctrl_tcp_listen": f"127.0.0.1:{self.ctrl_port}",
            "module_path": MODULES_DIR,
        }
        if self.video:
            lines |= {"video_source": "fakevideo,nil", "video_display": "fakevideo,nil"}
        lines |= self.extra_config
        text = [f"{k}\t{v}" for k, v in lines.items()]
        text += [f"module\t{m}" for m in modules]
        text += ["module_app\taccount.so", "module_app\tmenu.so"]
        return "\n".join(text) + "\n"

    def account_line(self) -> str:
        """The one line of the generated ``accounts`` file."""
        params = [f"answermode={self.answermode}", f"audio_codecs={','.join(self.codecs)}"]
        if self.registrar:
            params += [f"auth_pass={self.password or ''}", "regint=300"]
        else:
            params.append("regint=0")
        if self.video:
            params.append(f"video_codecs={VIDEO_MODULES[self.video][0]}")
        if self.mediaenc:
            params.append(f"mediaenc={self.mediaenc}")
        return f"<{self.uri}>;" + ";".join(params)

    def log_text(self) -> str:
        """What baresip printed so far (kept after ``stop()`` removed the temp dir)."""
        if self._final_log is not None or self.workdir is None:
            return self._final_log or ""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def record_dir(self) -> Path:
        """Where sndfile writes this UA's WAV files."""
        assert self.workdir is not None, "not started"
        return self.workdir / "rec"

    @property
    def log_path(self) -> Path:
        """stdout and stderr of baresip."""
        assert self.workdir is not None, "not started"
        return self.workdir / "baresip.log"

    def start(self) -> Baresip:
        """Start baresip; wait for ctrl_tcp and, with a registrar, for REGISTER_OK.

        If another process took one of the free ports first, retries on new ones.
        """
        for attempt in range(3):
            try:
                return self._start_once()
            except BaresipError as exc:
                if attempt == 2 or "Address already in use" not in str(exc):
                    raise
                self._reset()
        raise AssertionError("unreachable")

    def _start_once(self) -> Baresip:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"baresip-{self.user}-"))
        self.record_dir.mkdir()
        (self.workdir / "config").write_text(self.config_text())
        # The account is added with ``uanew`` once ctrl_tcp is connected, so that
        # REGISTERING / REGISTER_OK are not emitted before anyone listens.
        (self.workdir / "accounts").write_text("# added at run time with uanew\n")
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [BARESIP, "-f", str(self.workdir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        try:
            self._connect()
            self.call("uanew", self.account_line())
            if self.registrar:
                self.wait_registered()
        except BaseException:
            self.stop()
            raise
        return self

    def _connect(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise self._error(f"baresip exited with {self.proc.returncode}")
            log = self.log_text()
            if "ctrl_tcp: failed to listen" in log:  # another process has the port
                raise self._error("ctrl_tcp could not listen")
            if "baresip is ready" not in log:  # printed once every module is loaded
                time.sleep(0.05)
                continue
            try:
                self._sock = socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=0.5)
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise self._error("ctrl_tcp never accepted a connection")
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read_loop, name="baresip-ctrl", daemon=True)
        self._reader.start()

    def _error(self, what: str) -> BaresipError:
        return BaresipError(f"{what} ({self.user}):\n{self.log_text()}")

    def _read_loop(self) -> None:
        """Split netstrings, file responses by token and events in arrival order."""
        assert self._sock is not None
        buf = b""
        try:
            while chunk := self._sock.recv(65536):
                buf += chunk
                while (colon := buf.find(b":")) > 0:
                    size = int(buf[:colon])
                    if size > MAX_NETSTRING:
                        raise ValueError(f"netstring of {size} bytes")
                    if len(buf) < colon + size + 2:
                        break
                    self._file(json.loads(buf[colon + 1 : colon + 1 + size]))
                    buf = buf[colon + size + 2 :]
        except (OSError, ValueError) as exc:
            # waiters see the closed flag and raise with baresip's log
            with self._cond:
                self.events.append({"type": "CTRL_ERROR", "param": repr(exc)})
        with self._cond:
            self._sock_closed = True
            self._cond.notify_all()

    def _file(self, msg: Event) -> None:
        with self._cond:
            if msg.get("response"):
                self._responses[str(msg.get("token"))] = msg
            elif msg.get("event"):
                self.events.append(msg)
                self._pending.append(msg)
            self._cond.notify_all()

    def command(self, name: str, params: str = "", timeout: float = 5.0) -> Event:
        """Run a menu command; returns ``{"response", "ok", "data", "token"}``."""
        if self._sock is None:
            raise self._error("not started")
        with self._cond:
            self._tokens += 1
            token = f"t{self._tokens}"
        body = json.dumps({"command": name, "params": params, "token": token}).encode()
        self._sock.sendall(str(len(body)).encode() + b":" + body + b",")
        with self._cond:
            if not self._cond.wait_for(
                lambda: token in self._responses or self._sock_closed, timeout
            ):
                raise self._error(f"no answer to {name!r} within {timeout}s")
            if token not in self._responses:
                raise self._error(f"ctrl_tcp closed during {name!r}")
            return self._responses.pop(token)

    def call(self, name: str, params: str = "", timeout: float = 5.0) -> str:
        """Run a command that must succeed; returns its ``data`` text."""
        resp = self.command(name, params, timeout)
        if not resp.get("ok"):
            raise self._error(f"{name} {params!r} failed: {resp.get('data')!r}")
        return str(resp.get("data", ""))

    def wait_event(
        self,
        event_type: str | tuple[str, ...],
        timeout: float = 10.0,
        match: Callable[[Event], bool] | None = None,
    ) -> Event:
        """Return (and consume) the oldest unseen event of ``event_type``, waiting if needed.

        ``event_type`` may be a tuple of types; ``match`` filters further (e.g. by ``id``).
        """
        types = (event_type,) if isinstance(event_type, str) else event_type

        def find() -> Event | None:
            for event in self._pending:
                if event.get("type") in types and (match is None or match(event)):
                    self._pending.remove(event)
                    return event
            return None

        deadline = time.monotonic() + timeout
        with self._cond:
            while (event := find()) is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._sock_closed:
                    break
                self._cond.wait(remaining)
            seen = [e.get("type") for e in self.events]
        if event is not None:
            return event
        why = "ctrl_tcp closed" if self._sock_closed else f"timeout {timeout}s"
        raise self._error(f"no {event_type} ({why}); events so far: {seen}")

    def wait_registered(self, timeout: float | None = None) -> Event:
        """Wait for REGISTER_OK of this UA's account; REGISTER_FAIL raises."""
        event = self.wait_event(("REGISTER_OK", "REGISTER_FAIL"), timeout or self.start_timeout)
        if event["type"] == "REGISTER_FAIL":
            raise self._error(f"REGISTER_FAIL: {event.get('param')}")
        return event

    def dial(self, uri: str) -> None:
        """Place a call (answer events come as CALL_RINGING / CALL_ESTABLISHED)."""
        self.call("dial", uri)

    def accept(self) -> None:
        """Answer the incoming call (``answermode=manual``)."""
        self.call("accept")

    def hangup(self) -> None:
        """Hang up the current call."""
        self.call("hangup")

    def hold(self) -> None:
        """Put the current call on hold (re-INVITE with sendonly)."""
        self.call("hold")

    def resume(self) -> None:
        """Resume the current call."""
        self.call("resume")

    def send_dtmf(self, digits: str) -> None:
        """Send DTMF digits as RFC 4733 events (``sndcode``)."""
        self.call("sndcode", digits)

    def audio_stats(self) -> RtpStats:
        """RTP counters of the current call's audio."""
        return parse_rtp_debug(self.call("audio_debug"))

    def video_stats(self) -> RtpStats:
        """RTP counters of the current call's video."""
        return parse_rtp_debug(self.call("video_debug"))

    def recordings(self, kind: str = "dec") -> list[Path]:
        """WAV files written by sndfile: ``dec`` = received audio, ``enc`` = sent audio."""
        return sorted(self.record_dir.glob(f"dump-*-{kind}.wav"))

    def wait_recording(self, timeout: float = 5.0, kind: str = "dec") -> Path:
        """The newest finished WAV (its header counts frames once the call is gone)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for path in reversed(self.recordings(kind)):
                try:
                    with wave.open(str(path)) as w:
                        if w.getnframes() > 0:
                            return path
                except (wave.Error, EOFError):
                    continue
            time.sleep(0.1)
        raise self._error(f"no finished {kind} recording in {self.record_dir}")

    def stop(self, timeout: float = 3.0) -> int | None:
        """``quit``, then SIGTERM, then SIGKILL by PID; removes the temp dir."""
        code: int | None = None
        if self.proc is not None:
            quit_sent = False
            if self.proc.poll() is None and self._sock is not None and not self._sock_closed:
                # a failed quit falls through to the signals below
                with contextlib.suppress(BaresipError, OSError):
                    quit_sent = bool(self.command("quit", timeout=1.0).get("ok"))
            for sig in (None, signal.SIGTERM, signal.SIGKILL):
                if sig is None and not quit_sent:
                    continue
                if sig is not None and self.proc.poll() is None:
                    self.proc.send_signal(sig)
                try:
                    self.proc.wait(timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
            code = self.proc.returncode
        if self._sock is not None:
            self._sock.close()
        if self._reader is not None:
            self._reader.join(timeout)
        self._final_log = self.log_text()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return code

    def __enter__(self) -> Baresip:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
