"""SIP: messages parsed and answered per second, and echo calls per second.

Figures:
- ``parse_answer_rate``: an INVITE (~900 bytes with SDP) parsed, validated
  and answered (``build_response`` to bytes), in one process, per core.
- ``options_transaction_rate``: OPTIONS through the full transaction layer
  (server transaction created, 200 sent, retransmission state kept).
- ``calls_per_second`` steps: SIPp (the built-in uac flow, keeping the
  route set so it also works through a proxy) drives
  INVITE -> 200 -> ACK -> 1 s -> BYE -> 200 against the daemon's echo
  service at each rate; a step passes with < 0.1 % failed calls and >= 95 %
  of the target rate achieved. INVITE -> 200 p50/p99 comes from SIPp's
  response-time trace, CPU from /proc of the daemon.
- The peer, side by side in the same run: Kamailio 5.6 as a stateful
  record-routing proxy in front of a SIPp UAS (the anchor workload of
  shared/anchors), same SIPp uac, same rates; its CPU per call is the
  ``peer_value`` and the ratio is ours / Kamailio's (lower is better).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import emit, log, percentile
from bridges.sip.flow import Flow
from bridges.sip.message import SipRequest, build_response, parse_message, validate_request
from bridges.sip.transaction import RequestReceived, TransactionLayer
from tests.support.daemon import start_daemon
from tests.support.net import free_port
from tests.support.sipp import UAC_RR_SCENARIO, UAS_RR_SCENARIO

INVITE = (
    "INVITE sip:echo@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{n};rport\r\n"
    "Max-Forwards: 70\r\n"
    'From: "Alice" <sip:alice@127.0.0.1:5070>;tag=a{n}\r\n'
    "To: <sip:echo@127.0.0.1:5060>\r\n"
    "Call-ID: {n}-bench@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:alice@127.0.0.1:5070>\r\n"
    "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE\r\n"
    "Supported: replaces, timer\r\n"
    "User-Agent: bench\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {length}\r\n\r\n{body}"
)
SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 111 9 0 8 101\r\na=rtpmap:111 opus/48000/2\r\n"
    "a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:9 G722/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)


def _invite(n: int) -> bytes:
    return INVITE.format(n=n, length=len(SDP), body=SDP).encode()


def bench_parse(count: int) -> None:
    messages = [_invite(i) for i in range(count)]
    started = time.process_time()
    for data in messages:
        request = parse_message(data)
        assert isinstance(request, SipRequest)
        if validate_request(request, supported_extensions=("replaces",)) is None:
            bytes(build_response(request, 100))
    elapsed = time.process_time() - started
    emit("sip", "parse_answer_rate", count / elapsed, "msg/s/core", size_bytes=len(messages[0]))

    layer = TransactionLayer()
    flow = Flow("udp", ("127.0.0.1", 5060), ("127.0.0.1", 5070))
    options = [
        data.replace(b"INVITE", b"OPTIONS")
        .replace(b"\r\n\r\n" + SDP.encode(), b"\r\n\r\n")
        .replace(f"Content-Length: {len(SDP)}".encode(), b"Content-Length: 0")
        for data in messages
    ]
    started = time.process_time()
    for i, data in enumerate(options):
        request = parse_message(data)
        assert isinstance(request, SipRequest)
        layer.receive_request(request, flow, float(i))
        event = layer.next_event()
        assert isinstance(event, RequestReceived) and event.tx is not None
        layer.send_response(event.tx, build_response(request, 200, to_tag="t"), float(i))
        layer.datagrams_to_send()
    elapsed = time.process_time() - started
    emit("sip", "options_transaction_rate", count / elapsed, "msg/s/core")


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for kid in kids:
            out.extend(_children(int(kid)))
    return out


def _sipp_uac(target: str, rate: int, duration: float, workdir: Path) -> dict[str, float]:
    """Run SIPp's uac at ``rate`` for ``duration``; returns counts and response times."""
    calls = int(rate * duration)
    port = free_port(socket.SOCK_DGRAM)
    cmd = [
        "sipp",
        "-sf",
        str(UAC_RR_SCENARIO),
        target,
        "-d",
        "1000",
        "-s",
        "echo",
        "-r",
        str(rate),
        "-m",
        str(calls),
        "-l",
        str(rate * 3),
        "-nostdin",
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-trace_rtt",
        "-rtt_freq",
        "1",
        "-trace_stat",
        "-fd",
        "1",
        "-timeout",
        str(int(duration + 15)),
        "-timeout_error",
    ]
    started = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=workdir, capture_output=True, text=True, timeout=duration + 30, check=False
    )
    wall = time.monotonic() - started - 1.0  # minus the last call's 1 s hold
    rtts: list[float] = []
    for path in workdir.glob("*_rtt.csv"):
        for line in path.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2:
                try:
                    rtts.append(float(parts[1]))
                except ValueError:
                    continue
        path.unlink()
    ok = failed = 0
    for path in workdir.glob("*_.csv"):
        rows = path.read_text().splitlines()
        if len(rows) >= 2:
            header = rows[0].split(";")
            last = rows[-1].split(";")
            row = dict(zip(header, last, strict=False))
            ok = int(row.get("SuccessfulCall(C)", 0))
            failed = int(row.get("FailedCall(C)", 0))
        path.unlink()
    return {
        "returncode": proc.returncode,
        "ok": ok,
        "failed": failed,
        "achieved": ok / wall if wall > 0 else 0.0,
        "p50": percentile(rtts, 50) if rtts else float("nan"),
        "p99": percentile(rtts, 99) if rtts else float("nan"),
    }


KAMAILIO_CFG = """#!KAMAILIO
debug=1
log_stderror=yes
fork=yes
children=4
listen=udp:127.0.0.1:{port}
disable_tcp=yes
auto_aliases=no
alias="127.0.0.1:{port}"
dns=no
rev_dns=no
use_dns_cache=off
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "textops.so"
modparam("tm", "fr_timer", 5000)
request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not here"); exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    if (!is_method("ACK")) {{
        if (t_precheck_trans()) {{ t_check_trans(); exit; }}
        t_check_trans();
    }}
    if (is_method("INVITE")) {{ record_route(); }}
    $du = "sip:127.0.0.1:{uas_port}";
    if (!t_relay()) {{ sl_reply_error(); }}
    exit;
}}
"""


def _measure(
    pids: list[int], target: str, rate: int, duration: float, workdir: Path
) -> dict[str, float]:
    cpu_before = _cpu_seconds(pids)
    started = time.monotonic()
    result = _sipp_uac(target, rate, duration, workdir)
    result["cpu_pct"] = 100 * (_cpu_seconds(pids) - cpu_before) / (time.monotonic() - started)
    return result


def _passes(result: dict[str, float], rate: int) -> bool:
    total = result["ok"] + result["failed"]
    return total > 0 and result["failed"] <= total * 0.001 and result["achieved"] >= 0.95 * rate


def bench_calls(rates: list[int], duration: float, with_peer: bool) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-sip-"))
    ours: dict[int, dict[str, float]] = {}
    daemon = start_daemon(
        {"log": {"level": "warning"}, "sip": {"limits": {"requests_per_second": 0}}}
    )
    try:
        for rate in rates:
            result = _measure(
                [daemon.proc.pid], f"127.0.0.1:{daemon.sip_port}", rate, duration, workdir
            )
            ours[rate] = result
            log(f"gatewayd {rate} cps: {result}")
            if not _passes(result, rate):
                break
    finally:
        daemon.stop()
    peer: dict[int, dict[str, float]] = {}
    if with_peer and shutil.which("kamailio"):
        peer = _kamailio_steps(list(ours), duration, workdir)
    peer = {r: res for r, res in peer.items() if _passes(res, r)}  # failed steps say nothing
    passing = [r for r, res in ours.items() if _passes(res, r)]
    best = max(passing) if passing else 0
    peer_best = max(peer, default=None)
    emit(
        "sip",
        "max_calls_per_second_passing",
        best,
        "calls/s",
        peer="kamailio-5.6-proxy" if peer else None,
        peer_value=peer_best,
        note="highest step tried is the ceiling of this run",
    )
    for rate, res in ours.items():
        extra: dict[str, Any] = {
            "rate": rate,
            "failed": res["failed"],
            "achieved": round(res["achieved"], 1),
        }
        p = peer.get(rate)
        emit("sip", "invite_to_200_p50", res["p50"], "ms", **extra)
        emit("sip", "invite_to_200_p99", res["p99"], "ms", **extra)
        per_call = res["cpu_pct"] / rate
        emit(
            "sip",
            "cpu_per_call_per_second",
            per_call,
            "%core per call/s",
            peer="kamailio-5.6-proxy" if p else None,
            peer_value=round(p["cpu_pct"] / rate, 4) if p else None,
            **extra,
        )
    shutil.rmtree(workdir, ignore_errors=True)


def _kamailio_steps(
    rates: list[int], duration: float, workdir: Path
) -> dict[int, dict[str, float]]:
    port, uas_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    cfg = workdir / "kamailio.cfg"
    cfg.write_text(KAMAILIO_CFG.format(port=port, uas_port=uas_port))
    kam = subprocess.Popen(
        [
            "kamailio",
            "-DD",
            "-E",
            "-f",
            str(cfg),
            "-m",
            "256",
            "-M",
            "16",
            "-P",
            str(workdir / "kam.pid"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uas = subprocess.Popen(
        ["sipp", "-sf", str(UAS_RR_SCENARIO), "-i", "127.0.0.1", "-p", str(uas_port), "-nostdin"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results: dict[int, dict[str, float]] = {}
    try:
        time.sleep(1.5)
        if kam.poll() is not None:
            raise RuntimeError(f"kamailio exited with {kam.returncode}; check {cfg}")
        pids = _children(kam.pid)
        for rate in rates:
            results[rate] = _measure(pids, f"127.0.0.1:{port}", rate, duration, workdir)
            log(f"kamailio {rate} cps: {results[rate]}")
    finally:
        kam.terminate()
        kam.wait(10)
        uas.terminate()
        try:
            uas.wait(10)
        except subprocess.TimeoutExpired:
            uas.kill()
            uas.wait(5)
    return results


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench sip")
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rates", default="100,200,300,400,500")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--parse-only", action="store_true")
    args = parser.parse_args(argv)
    bench_parse(args.messages)
    if not args.parse_only:
        bench_calls([int(r) for r in args.rates.split(",")], args.duration, not args.no_peer)
