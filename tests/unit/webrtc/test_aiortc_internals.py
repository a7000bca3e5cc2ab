"""What gateway.webrtc.aiortc_internals relies on inside aiortc and aioice.

If an aiortc or aioice upgrade renames, removes or reshapes any of it, this
test fails here, by name, rather than the gateway silently decoding video or
offering no loopback candidates.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator

import aioice.ice
import aiortc.rtcicetransport
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpTransceiver
from aiortc.codecs.base import Encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from gateway.webrtc import aiortc_internals as internals


def _params(function: object) -> list[str]:
    assert callable(function)
    return list(inspect.signature(function).parameters)


@pytest.fixture
async def transceiver() -> AsyncIterator[RTCRtpTransceiver]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    yield pc.addTransceiver("video")
    await pc.close()


def test_pinned_versions() -> None:
    from importlib.metadata import version

    # The checks below were written against these; re-read aiortc_internals on upgrade.
    assert version("aiortc") == "1.16.0"
    assert version("aioice") == "0.13.0"


def test_receiver_internals(transceiver: RTCRtpTransceiver) -> None:
    receiver = transceiver.receiver
    cls = aiortc.rtcrtpreceiver.RTCRtpReceiver
    assert _params(cls._handle_rtp_packet) == ["self", "packet", "arrival_time_ms"]
    assert inspect.iscoroutinefunction(cls._handle_rtp_packet)
    assert _params(cls.receive) == ["self", "parameters"]
    assert _params(cls._send_rtcp_pli) == ["self", "media_ssrc"]
    assert inspect.iscoroutinefunction(cls._send_rtcp_pli)
    assert _params(getattr(cls, internals.RECEIVER_STOP_DECODER)) == ["self"]
    for name in (internals.RECEIVER_CODECS, internals.RECEIVER_REMOTE_STREAMS):
        assert isinstance(getattr(receiver, name), dict), name
    assert getattr(receiver, internals.RECEIVER_DECODER_THREAD) is None  # until receive()
    assert receiver._enabled is True
    # receive() starts the decoder thread we stop; the packet handler feeds the decoder.
    assert "decoder_worker" in inspect.getsource(cls.receive)
    assert "__decoder_queue.put" in inspect.getsource(cls._handle_rtp_packet)
    assert _params(aiortc.rtcrtpreceiver.StreamStatistics) == ["clockrate"]
    assert _params(aiortc.rtcrtpreceiver.StreamStatistics.add) == ["self", "packet"]
    assert "__remote_streams.items()" in inspect.getsource(cls._run_rtcp)
    assert _params(cls._send_rtcp) == ["self", "packet"]
    assert internals.RECEIVER_RTCP_SSRC == "_RTCRtpReceiver__rtcp_ssrc"
    assert isinstance(getattr(receiver, internals.RECEIVER_RTCP_SSRC), int)  # set by the pc


def test_sender_internals(transceiver: RTCRtpTransceiver) -> None:
    sender = transceiver.sender
    cls = aiortc.rtcrtpsender.RTCRtpSender
    assert getattr(sender, internals.SENDER_ENCODER) is None
    source = inspect.getsource(cls._next_encoded_frame)
    # The passthrough path: a preset encoder is kept, non-frames go to pack().
    assert "if self.__encoder is None:" in source
    assert "isinstance(data, Frame)" in source
    assert "self.__encoder.pack(data)" in source
    assert "await self.__track.recv()" in source
    assert "_next_encoded_frame(codec)" in inspect.getsource(cls._run_rtp)
    # PLI and FIR from the remote peer end in _send_keyframe().
    assert _params(cls._send_keyframe) == ["self"]
    rtcp = inspect.getsource(cls._handle_rtcp_packet)
    assert "RTCP_PSFB_PLI" in rtcp and "self._send_keyframe()" in rtcp
    # Receiver reports about our stream: read from packet.reports against self._ssrc.
    assert _params(cls._handle_rtcp_packet) == ["self", "packet"]
    assert "packet.reports" in rtcp and "x.ssrc == self._ssrc" in rtcp
    assert "fractionLost=report.fraction_lost" in rtcp
    # REMB from the remote peer sets the encoder's target_bitrate when it has one.
    assert 'hasattr(self.__encoder, "target_bitrate")' in rtcp
    assert "self.__encoder.target_bitrate = bitrate" in rtcp
    abstract = Encoder.__abstractmethods__
    assert abstract == frozenset({"encode", "pack"})
    assert _params(Encoder.pack) == ["self", "packet"]


def test_transceiver_codecs(transceiver: RTCRtpTransceiver) -> None:
    assert transceiver._codecs == []
    assert internals.negotiated_codec(transceiver) is None


def test_ice_internals(transceiver: RTCRtpTransceiver) -> None:
    gatherer = transceiver.receiver.transport.transport.iceGatherer
    connection = gatherer._connection
    assert isinstance(connection, aioice.ice.Connection)
    assert _params(connection.get_component_candidates) == ["component", "addresses", "timeout"]
    gather = inspect.getsource(aioice.ice.Connection.gather_candidates)
    assert "get_host_addresses(" in gather
    assert "self.get_component_candidates(component=component, addresses=addresses)" in gather
    assert connection._transport_policy is aioice.ice.TransportPolicy.ALL
    assert connection.stun_server is None and connection.turn_server is None
    # Why pinning is needed at all: aioice leaves loopback out.
    assert "127.0.0.1" in inspect.getsource(aioice.ice.get_host_addresses)
    # Why the configuration always carries an explicit list.
    init = inspect.getsource(aiortc.rtcicetransport.RTCIceGatherer.__init__)
    assert "if iceServers is None:" in init


async def test_receiver_hook_hands_packets_over_and_keeps_statistics(
    transceiver: RTCRtpTransceiver,
) -> None:
    got: list[tuple[bytes, str]] = []
    hook = internals.ReceiverHook(
        transceiver.receiver, lambda packet, codec: got.append((packet.payload, codec.name))
    )
    codec = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
    getattr(transceiver.receiver, internals.RECEIVER_CODECS)[96] = codec
    packet = RtpPacket(payload_type=96, sequence_number=7, timestamp=1234, ssrc=42)
    packet.payload = b"\x90\x80\x00payload"
    await transceiver.receiver._handle_rtp_packet(packet, 0)
    unknown = RtpPacket(payload_type=111, sequence_number=8, timestamp=1234, ssrc=42)
    await transceiver.receiver._handle_rtp_packet(unknown, 0)
    assert got == [(b"\x90\x80\x00payload", "VP8")]
    assert hook.last_ssrc == 42 and hook.packets == 1
    assert 42 in getattr(transceiver.receiver, internals.RECEIVER_REMOTE_STREAMS)
    assert not internals.is_decoding(transceiver.receiver)


async def test_passthrough_track_groups_payloads_by_frame() -> None:
    track = internals.PassthroughTrack("video")
    track.push(b"a", 100, False)
    track.push(b"b", 100, True)
    track.push(b"c", 200, False)  # last packet of this frame lost
    track.push(b"d", 300, True)
    frames = [await track.recv(), await track.recv(), await track.recv()]
    assert [(f.payloads, f.timestamp) for f in frames] == [
        ([b"a", b"b"], 100),
        ([b"c"], 200),
        ([b"d"], 300),
    ]
    audio = internals.PassthroughTrack("audio")
    audio.push(b"x", 960, False)
    assert (await audio.recv()).payloads == [b"x"]


async def test_passthrough_track_drops_oldest_when_full() -> None:
    track = internals.PassthroughTrack("audio", capacity=2)
    for ts in (1, 2, 3):
        track.push(bytes([ts]), ts, True)
    assert track.dropped == 1
    assert (await track.recv()).timestamp == 2
    track.stop()
    assert (await track.recv()).timestamp == 3
    with pytest.raises(aiortc.mediastreams.MediaStreamError):
        await track.recv()


def test_passthrough_encoder_packs_as_is_and_never_encodes() -> None:
    encoder = internals.PassthroughEncoder()
    frame = internals.EncodedFrame([b"p1", b"p2"], 4242)
    assert encoder.pack(frame) == ([b"p1", b"p2"], 4242)
    with pytest.raises(TypeError):
        encoder.pack(object())
    with pytest.raises(RuntimeError):
        encoder.encode(object())


def test_passthrough_encoder_passes_bandwidth_estimates_on() -> None:
    seen: list[int] = []
    encoder = internals.PassthroughEncoder(seen.append)
    before = encoder.target_bitrate
    encoder.target_bitrate = 800_000
    assert (before, encoder.target_bitrate, seen) == (None, 800_000, [800_000])


def test_keyframe_request_hook_keeps_aiortc_behaviour(transceiver: RTCRtpTransceiver) -> None:
    asked: list[int] = []
    sender = transceiver.sender
    internals.on_keyframe_request(sender, lambda: asked.append(1))
    sender._send_keyframe()
    assert asked == [1]
    assert getattr(sender, "_RTCRtpSender__force_keyframe") is True  # noqa: B009


async def test_receiver_report_hook_gives_the_loss_of_our_stream(
    transceiver: RTCRtpTransceiver,
) -> None:
    from aiortc.rtp import RtcpReceiverInfo, RtcpRrPacket

    sender = transceiver.sender
    losses: list[float] = []
    internals.on_receiver_report(sender, losses.append)
    mine = RtcpReceiverInfo(ssrc=sender._ssrc, fraction_lost=64, packets_lost=10,
                            highest_sequence=1, jitter=0, lsr=0, dlsr=0)  # fmt: skip
    other = RtcpReceiverInfo(ssrc=sender._ssrc + 1, fraction_lost=128, packets_lost=1,
                             highest_sequence=1, jitter=0, lsr=0, dlsr=0)  # fmt: skip
    await sender._handle_rtcp_packet(RtcpRrPacket(ssrc=1, reports=[mine, other]))
    assert losses == [0.25], "only our stream's block, as a fraction"


def test_direct_path_internals(transceiver: RTCRtpTransceiver) -> None:
    """What gateway.webrtc.aiortc_fastpath does by hand is what these aiortc paths do."""
    import aiortc.rtcdtlstransport as dtls_module

    dtls = transceiver.receiver.transport
    assert isinstance(dtls, dtls_module.RTCDtlsTransport)
    for name in ("_rx_srtp", "_tx_srtp"):
        assert getattr(dtls, name) is None  # until the handshake
    assert dtls._state is dtls_module.State.NEW
    assert isinstance(dtls._rtp_router, dtls_module.RtpRouter)
    assert isinstance(dtls._rtp_header_extensions_map, aiortc.rtp.HeaderExtensionsMap)
    for counter in ("rx_bytes", "rx_packets", "tx_bytes", "tx_packets"):
        assert getattr(dtls, f"_RTCDtlsTransport__{counter}") == 0
    cls = dtls_module.RTCDtlsTransport
    receive = inspect.getsource(cls._recv_next)
    assert "first_byte > 127 and first_byte < 192 and self._rx_srtp" in receive
    assert "data = self._rx_srtp.unprotect(data)" in receive
    assert "self.__rx_bytes += len(data)" in receive and "self.__rx_packets += 1" in receive
    assert aiortc.rtp.is_rtcp(b"\x80\xc8") and not aiortc.rtp.is_rtcp(b"\x80\xd1")
    handle = inspect.getsource(cls._handle_rtp_data)
    assert "RtpPacket.parse(data, self._rtp_header_extensions_map)" in handle
    assert "receiver = self._rtp_router.route_rtp(packet)" in handle
    send = inspect.getsource(cls._send_rtp)
    assert "data = self._tx_srtp.protect(data)" in send and "self.transport._send(data)" in send
    assert "self.__tx_packets += 1" in send
    ice = inspect.getsource(aiortc.rtcicetransport.RTCIceTransport)
    assert "self._send = self._connection.send" in ice
    connection = dtls.transport._connection
    assert isinstance(connection._protocols, list) and isinstance(connection._nominated, dict)
    sendto = inspect.getsource(aioice.ice.Connection.sendto)
    assert "self._nominated.get(component)" in sendto
    assert "active_pair.protocol.send_data(data, active_pair.remote_addr)" in sendto
    assert "self.transport.sendto(data, addr)" in inspect.getsource(
        aioice.ice.StunProtocol.send_data
    )
    stun = inspect.getsource(aioice.ice.StunProtocol.datagram_received)
    assert "self.receiver.data_received(data, self.local_candidate.component)" in stun
    sender, rtp_cls = transceiver.sender, aiortc.rtcrtpsender.RTCRtpSender
    assert _params(rtp_cls._run_rtp) == ["self", "codec"]
    assert "self._run_rtp(parameters.codecs[0])" in inspect.getsource(rtp_cls.send)
    run = inspect.getsource(rtp_cls._run_rtp)
    for line in (
        "self.__rtp_started.set()",
        "sequence_number = random_sequence_number()",
        "packet.extensions.mid = self.__mid",
        "clock.current_ntp_time() >> 14",
        "self.__rtp_history[packet.sequence_number % RTP_HISTORY_SIZE]",
        "packet.serialize(self.__rtp_header_extensions_map)",
        "self.__ntp_timestamp = clock.current_ntp_time()",
        "self.__rtp_timestamp = packet.timestamp",
        "self.__octet_count += len(payload)",
        "self.__packet_count += 1",
        "self.__rtp_exited.set()",
        "if enc_frame.audio_level is not None:",  # only for frames aiortc encoded itself
    ):
        assert line in run, line
    for name in ("mid", "rtp_header_extensions_map", "rtp_history", "rtp_started", "rtp_exited"):
        assert hasattr(sender, f"_RTCRtpSender__{name}"), name
    for name in ("ntp_timestamp", "rtp_timestamp", "octet_count", "packet_count"):
        assert getattr(sender, f"_RTCRtpSender__{name}") == 0, name
    assert sender._enabled is True and isinstance(sender._ssrc, int)


async def test_track_with_a_direct_sink_hands_whole_frames_over() -> None:
    sent: list[tuple[list[bytes], int]] = []

    class Sink:
        def send(self, payloads: list[bytes], timestamp: int) -> None:
            sent.append((payloads, timestamp))

    track = internals.PassthroughTrack("video")
    track.push(b"q", 50, True)  # queued before the sender started: sent on attach
    track.attach(Sink())
    assert sent == [([b"q"], 50)]
    track.push(b"a", 100, False)
    assert len(sent) == 1  # the frame is not complete yet
    track.push(b"b", 100, True)
    assert sent[-1] == ([b"a", b"b"], 100)
    track.attach(None)
    track.push(b"c", 200, True)
    assert len(sent) == 2 and (await track.recv()).payloads == [b"c"]
