"""Self-tests of the SIP peer fixtures: the real peers talk to each other.

No gatewayd here: these prove that Kamailio, baresip and SIPp start, answer,
authenticate and carry media on loopback, so a failing gateway interop test
points at the gateway, not at its test peers.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.baresip import Baresip, BaresipError, dominant_frequency
from tests.support.kamailio import KamailioServer
from tests.support.sipp import (
    REGISTER_SCENARIO,
    UAC_RR_SCENARIO,
    UAS_RR_SCENARIO,
    SippUas,
    run_sipp,
)

pytestmark = pytest.mark.integration

StartKamailio = Callable[..., KamailioServer]
StartBaresip = Callable[..., Baresip]
StartSippUas = Callable[..., SippUas]


def _register_once(server: KamailioServer, user: str) -> str:
    """Send one REGISTER without credentials over UDP; return the whole answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(3.0)
        port = sock.getsockname()[1]
        aor = f"sip:{user}@{server.address}"
        msg = (
            f"REGISTER sip:{server.address} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <{aor}>;tag=t1\r\nTo: <{aor}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 REGISTER\r\n"
            f"Contact: <sip:{user}@127.0.0.1:{port}>\r\nExpires: 60\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(msg.encode(), ("127.0.0.1", server.port))
        return sock.recv(65535).decode()


def test_kamailio_challenges_register_and_checks_the_digest(kamailio: StartKamailio) -> None:
    server = kamailio({"carol": "c0l:on\\pw"})

    answer = _register_once(server, "carol")
    assert answer.startswith("SIP/2.0 401 "), answer
    assert 'WWW-Authenticate: Digest realm="127.0.0.1"' in answer

    for transport in ("u1", "t1"):  # UDP, then one TCP connection
        good = run_sipp(
            REGISTER_SCENARIO,
            server.address,
            service="carol",
            auth=("carol", "c0l:on\\pw"),
            transport=transport,
        )
        assert (good.returncode, good.successful, good.failed) == (0, 1, 0), good.describe()

    bad = run_sipp(REGISTER_SCENARIO, server.address, service="carol", auth=("carol", "wrong"))
    assert (bad.returncode, bad.successful, bad.failed) == (1, 0, 1), bad.describe()
    assert "401 Unauthorized" in bad.errors


def test_baresip_registers_at_kamailio_with_digest(
    kamailio: StartKamailio, baresip: StartBaresip
) -> None:
    server = kamailio({"alice": "alice-pw"})

    alice = baresip("alice", registrar=server.address, password="alice-pw")
    types = [e["type"] for e in alice.events]
    assert types[:2] == ["REGISTERING", "REGISTER_OK"], types
    assert "\x1b[32mOK" in alice.call("reginfo")

    with pytest.raises(BaresipError, match="REGISTER_FAIL"):
        baresip("alice", registrar=server.address, password="not-the-password")


def test_call_through_kamailio_carries_the_tone(
    kamailio: StartKamailio, baresip: StartBaresip
) -> None:
    server = kamailio({"alice": "a-pw", "bob": "b-pw"}, auth_invite=True)
    alice = baresip("alice", registrar=server.address, password="a-pw", tone_hz=1000)
    # Bob sends another tone: 1 kHz in his recording can only have come from Alice.
    bob = baresip("bob", registrar=server.address, password="b-pw", tone_hz=440)

    alice.dial(bob.uri)
    established = alice.wait_event("CALL_ESTABLISHED", 5)
    bob.wait_event("CALL_ESTABLISHED", 5)
    assert established["peeruri"] == bob.uri
    alice.send_dtmf("7")
    assert bob.wait_event("CALL_DTMF_START", 5)["param"] == "7"
    time.sleep(1.0)  # a second of tone
    received = bob.audio_stats()
    assert received.rx_packets >= 25, received.raw

    alice.hangup()
    alice.wait_event("CALL_CLOSED", 5)
    bob.wait_event("CALL_CLOSED", 5)

    peak = dominant_frequency(bob.wait_recording())
    assert abs(peak - 1000.0) <= 20.0, f"Bob heard {peak:.1f} Hz"
    log = server.log_text()
    assert log.count("REQ INVITE sip:bob@") == 2, "INVITE, 407, INVITE with credentials"
    assert "REQ BYE " in log, "the BYE followed the Record-Route through the proxy"


def test_sipp_uac_calls_sipp_uas(sipp_uas: StartSippUas) -> None:
    uas = sipp_uas()

    result = run_sipp("uac", uas.address, calls=10, rate=50, limit=10, timeout=10)
    assert (result.returncode, result.successful, result.failed) == (0, 10, 0), result.describe()

    answered = uas.stop()  # soft: waits out the uas scenario's 4 s timewait
    assert (answered.successful, answered.failed) == (10, 0), answered.describe()


def _processes_mentioning(path: Path) -> list[int]:
    """PIDs whose command line names ``path`` (each peer's temp dir is in its argv)."""
    needle, pids = str(path).encode(), []
    for procdir in Path("/proc").glob("[0-9]*"):
        try:
            if needle in (procdir / "cmdline").read_bytes():
                pids.append(int(procdir.name))
        except OSError:
            continue
    return pids


def test_peers_leave_no_process_or_temp_dir() -> None:
    with (
        KamailioServer({"dave": "d-pw"}) as server,
        SippUas() as uas,
        Baresip("dave", registrar=server.address, password="d-pw") as ua,
    ):
        assert ua.workdir is not None
        dirs = [server.workdir, uas.workdir, ua.workdir]
        assert all(_processes_mentioning(d) for d in dirs)
        assert len(_processes_mentioning(server.workdir)) >= 3, "Kamailio main and children"

    for path in dirs:
        assert _processes_mentioning(path) == [], f"a process of {path} is left"
        assert not path.exists(), f"{path} is left"
    assert "baresip is ready" in ua.log_text(), "the log outlives the temp dir"
    assert "REGISTER" in server.log_text()


def test_sipp_calls_through_kamailio_to_a_static_route(
    kamailio: StartKamailio, sipp_uas: StartSippUas
) -> None:
    """The gateway's case: a peer that does not REGISTER, reached via ``static_routes``."""
    uas = sipp_uas(UAS_RR_SCENARIO)
    server = kamailio({}, static_routes={"service": f"sip:{uas.address}"})

    result = run_sipp(
        UAC_RR_SCENARIO, server.address, calls=3, rate=20, service="service", timeout=10
    )
    assert (result.returncode, result.successful, result.failed) == (0, 3, 0), result.describe()
    log = server.log_text()
    assert log.count("REQ INVITE sip:service@") == 3
    assert log.count("REQ ACK ") == 3 and log.count("REQ BYE ") == 3, "via the Record-Route"
    answered = uas.stop()
    assert (answered.successful, answered.failed) == (3, 0), answered.describe()
