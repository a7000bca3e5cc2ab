"""Property test of the signaling socket (hypothesis): whatever a browser sends, the
socket answers each bad frame with an ``error`` and stays usable (a frame over
64 KiB closes it with 1009, "message too big"; a hang-up ends the call with
``ended`` and a normal close), and the server logs no exception.

Frames are drawn from every message type of docs/signaling.md with fields of any
JSON shape (wrong types, missing, extra, huge, null), plus non-objects and broken
JSON; one example is a burst on one socket (joined as a citizen or an agent), and a
``ping``-like probe (an unknown type, which must get ``bad_message``) after the
burst proves the socket still answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.settings import load_settings
from gateway.web import auth, signaling
from tests.support.webapp import agent_session, serve_app

TYPES = ["hello", "offer", "answer", "candidate", "admit", "reject", "chat", "device", "mute",
         "screen", "quality", "hangup", "dial", "dial-cancel", "renegotiate", "bogus", ""]  # fmt: skip
FIELDS = ["role", "token", "appointment", "csrf", "sdp", "candidate", "participant", "text",
          "status", "audio", "video", "on", "mode", "bridge", "uri", "id"]  # fmt: skip
FUZZ = settings(
    max_examples=int(os.environ.get("SIGNALING_FUZZ_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=40) | st.just("x" * 70_000),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip
frames = st.one_of(
    st.fixed_dictionaries(
        {"v": st.sampled_from([1, 1, 1, 2, "1", None]), "type": st.sampled_from(TYPES)},
        optional={name: json_values for name in FIELDS},
    ).map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=60),
)


async def _burst(tmp_path: Path, sent: list[str], as_agent: bool) -> list[dict[str, Any]]:
    settings_ = load_settings(f"data_dir: {tmp_path}\nwebrtc:\n  ice_addresses: [127.0.0.1]\n")
    served = await serve_app(lambda: settings_, signaling.setup)
    received: list[dict[str, Any]] = []
    try:
        cookie, csrf = await agent_session(served.store)
        appointment, token = await served.store.appointments.create()
        headers = {"Cookie": f"{auth.SESSION_COOKIE}={cookie}"} if as_agent else {}
        ws = await served.client.ws_connect("/ws", headers=headers)
        hello = (
            {"v": 1, "type": "hello", "role": "agent", "appointment": appointment.id,
             "csrf": csrf}
            if as_agent else {"v": 1, "type": "hello", "role": "citizen", "token": token}
        )  # fmt: skip
        await ws.send_str(json.dumps(hello))
        for text in sent:
            await ws.send_str(text)
        await ws.send_str(json.dumps({"v": 1, "type": "probe"}))
        too_big = any(len(text.encode()) > signaling.MAX_FRAME for text in sent)
        while True:
            frame = await ws.receive(timeout=10)
            if too_big and frame.type is aiohttp.WSMsgType.CLOSE:
                # an oversized frame is answered the WebSocket way: close 1009
                assert frame.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG, frame
                break
            if frame.type is aiohttp.WSMsgType.CLOSE and any(
                m.get("type") == "ended" for m in received
            ):
                assert frame.data == aiohttp.WSCloseCode.OK, frame  # a hang-up ends it
                break
            assert frame.type is aiohttp.WSMsgType.TEXT, f"socket ended: {frame}"
            message = json.loads(frame.data)
            received.append(message)
            if message.get("type") == "error" and "probe" in message.get("message", ""):
                break
        await ws.close()
    finally:
        await served.close()
    return received


@FUZZ
@given(sent=st.lists(frames, max_size=25), as_agent=st.booleans())
def test_any_frames_get_answers_and_the_socket_stays_usable(
    tmp_path_factory: pytest.TempPathFactory,
    caplog: pytest.LogCaptureFixture,
    sent: list[str],
    as_agent: bool,
) -> None:
    caplog.set_level(logging.ERROR)
    caplog.clear()
    received = asyncio.run(_burst(tmp_path_factory.mktemp("sig"), sent, as_agent))
    for message in received:
        assert message.get("v") == 1 and isinstance(message.get("type"), str), message
        if message["type"] == "error":
            assert message.get("code") and message.get("message"), message
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
