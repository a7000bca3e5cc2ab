"""DTMF reaching a call: RFC 4733 events replayed by SIPp from Debian's pcaps,
SIP INFO bodies (and the statuses of the ones we refuse or ignore), and in-band
tones played by our own ``AudioPlayer`` into a call between two of our legs.

The digits a pcap holds are read from the pcap itself (a few lines of struct
parsing), so the expectation does not come from the code under test.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from bridges.sip.call import CallState, SipCall
from bridges.sip.endpoint import SipEndpoint
from bridges.sip.media import SipMedia
from gateway.media.dtmf import DIGITS, DtmfDigit, build_dtmf_relay
from gateway.media.local import AudioListener, AudioPlayer
from mediacodecs.audio import Pcm
from mediacodecs.executor import MediaExecutor
from tests.support.aio import wait_for
from tests.support.sipp import SIPP, run_sipp

pytestmark = pytest.mark.integration

PCAP_DIR = Path("/usr/share/sip-tester")
# The pcaps are cut from one capture: one SSRC, sequence numbers rising in this
# order. SIPp replays them unchanged, so another order would send packets that
# are older than the ones before, which a receiver rightly drops as late.
PCAP_DIGITS = ("1", "5", "star", "pound", "0")
_PCAP_GLOBAL_HEADER = 24
_PCAP_RECORD_HEADER = 16
_ETHERNET = 1


# --- the pcaps -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RtpInPcap:
    payload_type: int
    sequence: int
    payload: bytes


def read_pcap_rtp(path: Path) -> list[RtpInPcap]:
    """RTP in a classic little-endian pcap of Ethernet/IPv4/UDP frames."""
    data = path.read_bytes()
    magic, link = struct.unpack_from("<I", data, 0)[0], struct.unpack_from("<I", data, 20)[0]
    assert magic == 0xA1B2C3D4 and link == _ETHERNET, f"{path}: unexpected pcap format"
    packets, pos = [], _PCAP_GLOBAL_HEADER
    while pos + _PCAP_RECORD_HEADER <= len(data):
        captured = struct.unpack_from("<I", data, pos + 8)[0]
        frame = data[pos + _PCAP_RECORD_HEADER : pos + _PCAP_RECORD_HEADER + captured]
        pos += _PCAP_RECORD_HEADER + captured
        ip = frame[14:]
        rtp = ip[(ip[0] & 0x0F) * 4 + 8 :]  # past the IPv4 and UDP headers
        csrc = rtp[0] & 0x0F
        sequence = struct.unpack_from("!H", rtp, 2)[0]
        packets.append(RtpInPcap(rtp[1] & 0x7F, sequence, rtp[12 + 4 * csrc :]))
    return packets


def pcap_digits(path: Path) -> tuple[int, str]:
    """The telephone-event payload type and the key presses in a pcap."""
    (payload_type,) = {p.payload_type for p in read_pcap_rtp(path)}
    digits, last = "", None
    for packet in read_pcap_rtp(path):
        event = packet.payload[0]
        if event != last:  # one event per key press; retransmitted ends repeat it
            digits += DIGITS[event]
            last = event
    return payload_type, digits


def _sipp_uac(payload_type: int, pcaps: list[Path]) -> str:
    """Call [service], play the pcaps, send four INFOs, hang up."""
    plays = "\n".join(
        f'  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>\n'
        '  <pause milliseconds="500"/>'
        for pcap in pcaps
    )
    infos = [
        ("application/dtmf-relay", "Signal=7\r\nDuration=160", 200),
        ("application/dtmf-relay", "Duration=160", 400),  # no Signal
        ("application/dtmf-tones", "7", 415),  # a dtmf type we do not read
        ("text/plain", "hello", 200),  # not DTMF: left to the call, which takes it
    ]
    info_xml = ""
    for cseq, (content_type, body, status) in enumerate(infos, start=2):
        info_xml += f"""
  <send retrans="500"><![CDATA[

      INFO [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} INFO
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: {content_type}
      Content-Length: [len]

{body}
  ]]></send>
  <recv response="{status}"/>
"""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="dtmf uac">
  <send retrans="500"><![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 {payload_type}
      a=rtpmap:0 PCMU/8000
      a=rtpmap:{payload_type} telephone-event/8000
      a=fmtp:{payload_type} 0-15

  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
  <send><![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
  <pause milliseconds="300"/>
{plays}
{info_xml}
  <send retrans="500"><![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 9 BYE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
  <recv response="200" crlf="true"/>
</scenario>
"""


# --- a service that keeps the digits ---------------------------------------------------------


@dataclass
class DigitSink:
    """Answers calls and keeps every digit ``SipMedia.on_dtmf`` reports."""

    digits: list[DtmfDigit] = field(default_factory=list)
    media: list[SipMedia] = field(default_factory=list)

    async def handle(self, call: SipCall) -> None:
        media = await SipMedia("127.0.0.1").open()
        self.media.append(media)
        media.bind(call)
        media.on_dtmf = self.digits.append
        assert call.on_offer is not None
        body = await call.on_offer(call, call.remote_sdp)
        assert body is not None
        await call.answer(body)

    def text(self, method: str) -> str:
        return "".join(d.digit for d in self.digits if d.method == method)


def _pcaps_or_skip() -> list[Path]:
    if not Path(SIPP).exists():
        pytest.skip("sipp missing: install Debian package sip-tester")
    pcaps = [PCAP_DIR / f"dtmf_2833_{name}.pcap" for name in PCAP_DIGITS]
    if not all(p.exists() for p in pcaps):
        pytest.skip(f"sip-tester's DTMF pcaps are not in {PCAP_DIR}")
    return pcaps


async def test_rfc2833_pcaps_replayed_by_sipp_and_info_bodies(sip: SipEndpoint) -> None:
    pcaps = _pcaps_or_skip()
    first_sequences = [read_pcap_rtp(p)[0].sequence for p in pcaps]
    assert first_sequences == sorted(first_sequences), "pcaps not in capture order"
    found = [pcap_digits(p) for p in pcaps]
    (payload_type,) = {pt for pt, _ in found}
    expected = "".join(digits for _, digits in found)
    assert len(expected) == len(pcaps)

    sink = DigitSink()
    sip.services["digits"] = sink.handle
    port = sip.local_address("udp")[1]
    result = await asyncio.to_thread(
        run_sipp,
        _sipp_uac(payload_type, pcaps),
        f"127.0.0.1:{port}",
        service="digits",
        timeout=20,
    )
    assert result.returncode == 0 and result.successful == 1, result.describe()
    await wait_for(lambda: sip.calls.active == 0)
    assert sink.text("rfc4733") == expected
    # Only the well-formed dtmf-relay INFO is a digit; 400/415/200 were checked by SIPp.
    assert sink.text("info") == "7"
    assert [d.digit for d in sink.digits if d.method == "info"] == ["7"]
    (media,) = sink.media
    assert media.digits == [*expected, "7"]


# --- two of our own legs -----------------------------------------------------------------------


@dataclass
class Leg:
    call: SipCall
    media: SipMedia


async def call_ourselves(sip: SipEndpoint, service: str) -> tuple[Leg, Leg]:
    """A call from ``sip`` to its own ``service``; returns (caller, callee) legs."""
    answered: list[Leg] = []

    async def handle(call: SipCall) -> None:
        media = await SipMedia("127.0.0.1").open()
        media.bind(call)
        assert call.on_offer is not None
        body = await call.on_offer(call, call.remote_sdp)
        assert body is not None
        await call.answer(body)
        answered.append(Leg(call, media))

    sip.services[service] = handle
    port = sip.local_address("udp")[1]
    caller_media = await SipMedia("127.0.0.1").open()
    call = await sip.invite(
        f"sip:{service}@127.0.0.1:{port}", caller_media.offer(), remote=("127.0.0.1", port)
    )
    caller_media.bind(call)
    assert await call.wait_answered(5)
    await wait_for(lambda: bool(answered))
    return Leg(call, caller_media), answered[0]


async def test_info_dtmf_from_our_own_uac(sip: SipEndpoint) -> None:
    caller, callee = await call_ourselves(sip, "info")
    heard: list[DtmfDigit] = []
    callee.media.on_dtmf = heard.append
    statuses = []
    for content_type, body in [
        ("application/dtmf-relay", build_dtmf_relay("#", 0.25)),
        ("application/dtmf", b"4"),
        ("application/dtmf-relay", b"Signal=1\r\nDuration=abc"),  # malformed Duration
        ("application/dtmf-xyz", b"4"),
        ("application/json", b"{}"),
    ]:
        response = await caller.call.info(body, content_type)
        assert response is not None
        statuses.append(response.status)
    assert statuses == [200, 200, 400, 415, 200]
    assert [(d.digit, d.method) for d in heard] == [("#", "info"), ("4", "info")]
    assert heard[0].duration == pytest.approx(0.25)
    await caller.call.hangup("done")
    await wait_for(lambda: sip.calls.active == 0)


def dtmf_tones(keys: str, tone_s: float = 0.12, gap_s: float = 0.12) -> Callable[[int, int], Pcm]:
    """A PCM source: each key's two ITU-T Q.23 frequencies, then silence."""
    rows, columns = (697, 770, 852, 941), (1209, 1336, 1477, 1633)
    keypad = "123A456B789C*0#D"
    amplitude = 32767 * 10 ** (-10 / 20)  # each tone at -10 dBFS
    position = [0]

    def source(samples: int, rate: int) -> Pcm:
        start = position[0]
        position[0] += samples
        t = np.arange(start, start + samples, dtype=np.float64) / rate
        out = np.zeros(samples)
        slot = tone_s + gap_s
        for index, key in enumerate(keys):
            row, column = divmod(keypad.index(key), 4)
            on = (t >= 0.2 + index * slot) & (t < 0.2 + index * slot + tone_s)
            out += (
                on
                * amplitude
                * (np.sin(2 * np.pi * rows[row] * t) + np.sin(2 * np.pi * columns[column] * t))
            )
        return out.astype(np.int16)

    return source


async def test_inband_tones_are_detected_by_the_listener(
    sip: SipEndpoint, executor: MediaExecutor
) -> None:
    keys = "159#0*"
    caller, callee = await call_ourselves(sip, "inband")
    heard: list[DtmfDigit] = []
    callee_audio = callee.media.streams[0]
    negotiated = callee_audio.negotiated
    assert negotiated is not None
    listener = AudioListener(callee_audio, executor, on_dtmf=heard.append)
    callee_audio.on_rtp = listener.feed
    player = AudioPlayer(caller.media.streams[0], executor, dtmf_tones(keys))
    player.start()
    try:
        await wait_for(lambda: len(heard) >= len(keys), timeout=8)
        await asyncio.sleep(0.3)  # nothing more may come
    finally:
        player.stop()
    assert "".join(d.digit for d in heard) == keys, negotiated.codecs[0].name
    assert {d.method for d in heard} == {"inband"}
    assert all(0.06 < d.duration < 0.2 for d in heard), [d.duration for d in heard]
    # The tones went as audio, not as telephone-events: the callee's leg saw no RFC 4733.
    assert callee.media.digits == []
    assert caller.call.state is CallState.ESTABLISHED
    await caller.call.hangup("done")
    await wait_for(lambda: sip.calls.active == 0)
