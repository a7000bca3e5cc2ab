"""Dial-out through a SIP bridge: setup time and dials per second.

Figures (``python -m bench bridge [--calls N] [--concurrency C]``):
- ``setup_invite_to_200`` p50/p95 (ms): INVITE sent -> 200 OK, as
  ``gatewayd_bridge_setup_seconds`` measures it;
- ``setup_dial_to_answered`` p50/p95 (ms): ``Bridge.dial()`` called -> the
  ``answered`` event (rewrite, RTP ports, RFC 3263, INVITE, digest retry);
- ``dials_per_second``: answered and hung-up calls per second at the given
  concurrency.
Two targets: a SIPp UAS dialled directly, and the same UAS behind Kamailio
that challenges every INVITE (407, so each call is two INVITEs). Everything
runs on loopback; the bridge and its SIP endpoint share this one process.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from bench import emit, log, percentile
from bridges.base import DialState
from bridges.service import BridgeService
from bridges.sip.bridge import SipParticipant
from bridges.sip.endpoint import SipEndpoint
from gateway.calls import CallRegistry
from gateway.log import configure_logging
from gateway.media.rtp_transport import RtpPortAllocator
from gateway.settings import load_settings
from tests.support.kamailio import KamailioServer
from tests.support.net import free_port
from tests.support.sipp import SippUas

SECRET = "bench-secret"


async def _run(
    proxy: str, target: str, auth: bool, calls: int, concurrency: int
) -> dict[str, float]:
    credentials = f"    username: gw\n    password: {SECRET}\n" if auth else ""
    settings = load_settings(
        f"sip: {{port: {free_port()}}}\nmedia: {{address: 127.0.0.1}}\n"
        f"bridges:\n  - name: bench\n    type: sip\n    proxy: '{proxy}'\n{credentials}"
        f"    max_calls: {concurrency}\n    codecs: {{audio: [PCMU], video: []}}\n"
    )
    endpoint = SipEndpoint(CallRegistry())
    await endpoint.start(settings)
    service = BridgeService(endpoint, RtpPortAllocator(44000, 47999))
    await service.start(settings)
    invite_to_200: list[float] = []
    dial_to_answer: list[float] = []
    failed = 0
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        nonlocal failed
        async with gate:
            started = time.perf_counter()
            participant = await service.registry.dial("bench", target, "guest")
            assert isinstance(participant, SipParticipant)
            if await participant.wait_answered(timeout=10):
                dial_to_answer.append(time.perf_counter() - started)
                invite_to_200.append(participant.setup_seconds or 0.0)
            else:
                failed += 1
            await participant.hangup("bench")
            if await participant.wait_ended(timeout=10) not in (DialState.ENDED,):
                failed += participant.state is not DialState.CANCELLED

    began = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(calls)))
    elapsed = time.perf_counter() - began
    await service.stop()
    await endpoint.stop()
    return {
        "invite_p50": percentile(invite_to_200, 50) * 1000,
        "invite_p95": percentile(invite_to_200, 95) * 1000,
        "dial_p50": percentile(dial_to_answer, 50) * 1000,
        "dial_p95": percentile(dial_to_answer, 95) * 1000,
        "rate": len(dial_to_answer) / elapsed,
        "failed": failed,
    }


def _report(label: str, result: dict[str, float], calls: int, concurrency: int) -> None:
    extra: dict[str, Any] = {"target": label, "calls": calls, "concurrency": concurrency,
             "failed": result["failed"]}  # fmt: skip
    for metric, key in (("p50", "invite_p50"), ("p95", "invite_p95")):
        emit("bridge", f"setup_invite_to_200_{metric}", result[key], "ms", **extra)
    for metric, key in (("p50", "dial_p50"), ("p95", "dial_p95")):
        emit("bridge", f"setup_dial_to_answered_{metric}", result[key], "ms", **extra)
    emit("bridge", "dials_per_second", result["rate"], "calls/s", **extra)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench bridge")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args(argv)
    configure_logging("warning", stream=sys.stderr)  # stdout is for the JSON lines
    with SippUas() as uas:
        log(f"bridge: {args.calls} dials to SIPp directly")
        result = asyncio.run(_run(uas.address, "service", False, args.calls, args.concurrency))
        _report("sipp", result, args.calls, args.concurrency)
        routes = {"service": f"sip:service@{uas.address}"}
        with KamailioServer({"gw": SECRET}, static_routes=routes) as proxy:
            log(f"bridge: {args.calls} dials through Kamailio with digest auth")
            result = asyncio.run(_run(proxy.address, "service", True, args.calls, args.concurrency))
            _report("kamailio+sipp", result, args.calls, args.concurrency)
