"""Digest authentication: RFC vectors, client <-> server round trips, hostile input."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import random
from collections.abc import Callable

import pytest
import sipmessage
from hypothesis import given, settings
from hypothesis import strategies as st

from bridges.sip import auth
from bridges.sip.auth import (
    ALGORITHMS,
    AUTH_HEADERS,
    AuthFailure,
    AuthResult,
    DigestClient,
    DigestServer,
    DigestSyntaxError,
    Ha1,
    compute_ha1,
    digest_response,
    format_challenge,
    format_credentials,
    parse_challenge,
    parse_credentials,
)
from gateway.clock import FakeClock

REALM = "gateway.example.org"
URI = "sip:registrar.example.org"
SECRET = b"0123456789abcdef-nonce-secret"
USERS = {"alice": "wonderland", "bob": 'p"a\\ss, word'}


def lookup(username: str, realm: str) -> str | None:
    return USERS.get(username) if realm == REALM else None


def params_of(value: str) -> dict[str, str]:
    return dict(parse_credentials(value).parameters or {})


def fixed_rng(cnonce: str) -> Callable[[int], bytes]:
    """A random source whose bytes encode to ``cnonce`` (RFC vectors use base64 cnonces)."""
    raw = base64.b64decode(cnonce)
    return lambda _n: raw


def make_server(clock: FakeClock | None = None, **kwargs: object) -> tuple[DigestServer, FakeClock]:
    clock = clock or FakeClock()
    options: dict[str, object] = {"lookup": lookup}
    options.update(kwargs)
    return DigestServer(REALM, SECRET, clock, **options), clock  # type: ignore[arg-type]


def make_client(username: str = "alice", password: str | None = None) -> DigestClient:
    return DigestClient(username, password or USERS[username], rng=random.Random(7))


def replace_params(value: str, drop: tuple[str, ...] = (), **changes: str) -> str:
    """Rewrite an Authorization value (a peer that tampers or replays)."""
    params = {k: v for k, v in params_of(value).items() if k not in drop}
    params.update(changes)
    return format_credentials(
        sipmessage.AuthCredentials("Digest", sipmessage.AuthParameters(**params))
    )


# ------------------------------------------------------------------ known answers

RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)
RFC7616 = {
    "realm": "http-auth@example.org",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    "opaque": "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
}
RFC7616_RESPONSES = {
    "MD5": "8ca523f5e9506fed4657c9700eebdbec",
    "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
}


def rfc7616_challenge(algorithm: str) -> str:
    return (
        f'Digest realm="{RFC7616["realm"]}", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{RFC7616["nonce"]}", opaque="{RFC7616["opaque"]}"'
    )


def test_rfc2617_example_response() -> None:
    ha1 = compute_ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    response = digest_response(
        "MD5",
        ha1,
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "GET",
        "/dir/index.html",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert response == "6629fae49393a05397450978507c4ef1"


def test_client_reproduces_the_rfc2617_authorization_exactly() -> None:
    client = DigestClient("Mufasa", "Circle Of Life", rng=fixed_rng("0a4f113b"))
    answer = client.respond(401, [RFC2617_CHALLENGE], "GET", "/dir/index.html")
    assert answer == (
        "Authorization",
        'Digest username="Mufasa", realm="testrealm@host.com", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", '
        'response="6629fae49393a05397450978507c4ef1", cnonce="0a4f113b", qop=auth, '
        'nc=00000001, opaque="5ccc069c403ebaf9f0171e9517f40e41"',
    )


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_client_reproduces_rfc7616_examples(algorithm: str) -> None:
    client = DigestClient("Mufasa", "Circle of Life", rng=fixed_rng(RFC7616["cnonce"]))
    answer = client.respond(401, [rfc7616_challenge(algorithm)], "GET", "/dir/index.html")
    assert answer is not None
    params = params_of(answer[1])
    assert params["response"] == RFC7616_RESPONSES[algorithm]
    assert params["algorithm"] == algorithm
    assert params["cnonce"] == RFC7616["cnonce"]
    assert params["opaque"] == RFC7616["opaque"]
    assert (params["qop"], params["nc"]) == ("auth", "00000001")


def test_server_accepts_the_rfc7616_response_math_but_not_a_foreign_nonce() -> None:
    # The response is right for the password, the nonce is not ours: stale, so a
    # real client would retry silently with our nonce. A wrong digit is refused.
    clock = FakeClock()
    server = DigestServer(
        RFC7616["realm"],
        SECRET,
        clock,
        lookup=lambda user, realm: "Circle of Life" if user == "Mufasa" else None,
    )
    client = DigestClient("Mufasa", "Circle of Life", rng=fixed_rng(RFC7616["cnonce"]))
    answer = client.respond(401, [rfc7616_challenge("SHA-256")], "GET", "/dir/index.html")
    assert answer is not None
    assert server.verify("GET", answer[1]) == AuthResult(False, AuthFailure.STALE)
    tampered = replace_params(answer[1], response="0" + RFC7616_RESPONSES["SHA-256"][1:])
    assert server.verify("GET", tampered).reason is AuthFailure.BAD_RESPONSE


def test_sess_response_follows_rfc2617_formula() -> None:
    # Written out with hashlib, independently of the module: client and server
    # share digest_response, so a round trip alone would not notice a wrong -sess step.
    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5("Mufasa:testrealm@host.com:Circle Of Life")
    session_key = md5(f"{ha1}:nonce:cnonce")
    expected = md5(f"{session_key}:nonce:00000001:cnonce:auth:{md5('GET:/dir/index.html')}")
    response = digest_response(
        "MD5-sess",
        ha1,
        "nonce",
        "GET",
        "/dir/index.html",
        qop="auth",
        nc="00000001",
        cnonce="cnonce",
    )
    assert response == expected


# ------------------------------------------------------------------ header grammar


def test_sipmessage_still_rejects_quoted_commas_which_is_why_we_parse() -> None:
    # If this starts passing, sipmessage was fixed and our parser may go.
    with pytest.raises(ValueError, match="not valid"):
        sipmessage.AuthChallenge.parse(RFC2617_CHALLENGE)
    assert parse_challenge(RFC2617_CHALLENGE).parameters["qop"] == "auth,auth-int"


def test_sipmessage_quotes_qop_in_credentials_and_we_do_not() -> None:
    creds = sipmessage.AuthCredentials(
        "Digest", sipmessage.AuthParameters(qop="auth", uri="abc", nc="00000001")
    )
    assert 'qop="auth"' in str(creds)
    assert format_credentials(creds) == 'Digest qop=auth, uri="abc", nc=00000001'


def test_parser_is_case_insensitive_on_names_and_keeps_values() -> None:
    challenge = parse_challenge('DIGEST Realm="A b",\tNONCE=xyz ,  stale=TRUE')
    assert challenge.scheme == "DIGEST"
    assert dict(challenge.parameters) == {"realm": "A b", "nonce": "xyz", "stale": "TRUE"}


def test_parser_unescapes_quoted_pairs_and_the_serializer_escapes_them() -> None:
    value = 'Digest username="a\\"b\\\\c", realm="r"'
    creds = parse_credentials(value)
    assert creds.parameters is not None
    assert creds.parameters["username"] == 'a"b\\c'
    assert format_credentials(creds) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Digest",
        "Digest ",
        'Digest realm="a""b"',
        'Digest realm="unterminated',
        "Digest realm=a b",
        'Digest realm="a", realm="b"',
        'Digest realm="a",, nonce="b"',
        'Digest realm="a",',
        "Digest =x",
        'Digest realm="a\r\nVia: injected"',
        "Digest realm=a/b",
        'Digest realm="\ud800"',
        "Digest " + ", ".join(f"p{i}=x" for i in range(40)),
        'Digest realm="' + "x" * 5000 + '"',
    ],
)
def test_parser_rejects_malformed_values(value: str) -> None:
    with pytest.raises(DigestSyntaxError):
        parse_challenge(value)


def test_syntax_errors_do_not_echo_the_value() -> None:
    with pytest.raises(DigestSyntaxError) as caught:
        parse_credentials('Digest username="secret-user", realm="x" junk')
    assert "secret-user" not in str(caught.value)
    assert caught.value.sip_status == 400


def test_serializers_refuse_header_injection() -> None:
    with pytest.raises(ValueError, match="control character"):
        format_challenge(
            sipmessage.AuthChallenge("Digest", sipmessage.AuthParameters(realm="a\r\nX: y"))
        )
    with pytest.raises(ValueError, match="control character"):
        DigestClient("alice\n", "pw", rng=random.Random(1))


# Any text a header may carry: no control characters but tab.
_texts = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cc"]) | st.just("\t"), max_size=30
)


@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True),
        _texts,
        min_size=1,
        max_size=auth.MAX_PARAMETERS,
    )
)
def test_format_then_parse_round_trips(params: dict[str, str]) -> None:
    creds = sipmessage.AuthCredentials("Digest", sipmessage.AuthParameters(**params))
    reparsed = parse_credentials(format_credentials(creds))
    assert dict(reparsed.parameters or {}) == params


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("status", [401, 407])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_round_trip(algorithm: str, status: int) -> None:
    server, _ = make_server(algorithms=(algorithm,))
    client = make_client("bob")
    challenges = server.challenge()
    assert len(challenges) == 1
    assert f"algorithm={algorithm}," in challenges[0]
    answer = client.respond(status, challenges, "REGISTER", URI)
    assert answer is not None
    header, value = answer
    assert header == AUTH_HEADERS[status][1]
    assert params_of(value)["algorithm"] == algorithm
    assert server.verify("REGISTER", value, request_uri=URI) == AuthResult(True, username="bob")
    # The same credentials with a changed method do not pass.
    server2, _ = make_server(algorithms=(algorithm,))
    answer2 = make_client("bob").respond(status, server2.challenge(), "REGISTER", URI)
    assert answer2 is not None
    assert server2.verify("INVITE", answer2[1]).reason is AuthFailure.BAD_RESPONSE


def test_stored_ha1_round_trip_and_missing_hash() -> None:
    stored = {"alice": Ha1.from_password("alice", REALM, "wonderland", ("MD5",))}
    server, _ = make_server(lookup=lambda user, realm: stored.get(user))
    # The client takes SHA-256 (offered first and stronger); only MD5 is stored.
    answer = make_client().respond(401, server.challenge(), "INVITE", URI)
    assert answer is not None
    assert server.verify("INVITE", answer[1]).reason is AuthFailure.BAD_RESPONSE
    md5_only, _ = make_server(algorithms=("MD5",), lookup=lambda user, realm: stored.get(user))
    answer = make_client().respond(401, md5_only.challenge(), "INVITE", URI)
    assert answer is not None
    assert md5_only.verify("INVITE", answer[1]).ok
    assert "wonderland" not in repr(stored["alice"])
    assert stored["alice"].digests["MD5"] not in repr(stored["alice"])


def test_auth_int_is_used_when_it_is_the_only_qop_and_binds_the_body() -> None:
    server, _ = make_server(algorithms=("SHA-256",))
    (challenge,) = server.challenge()
    auth_int_only = challenge.replace('qop="auth"', 'qop="auth-int"')
    answer = make_client().respond(401, [auth_int_only], "MESSAGE", URI, b"hello")
    assert answer is not None
    assert params_of(answer[1])["qop"] == "auth-int"
    assert server.verify("MESSAGE", answer[1], b"hello!").reason is AuthFailure.BAD_RESPONSE
    assert server.verify("MESSAGE", answer[1], b"hello").ok


def test_rfc2069_mode_round_trip_and_single_use_nonce() -> None:
    server, _ = make_server(algorithms=("MD5",))
    (challenge,) = server.challenge()
    old_style = challenge.replace(', algorithm=MD5, qop="auth"', "")
    assert "qop" not in old_style
    client = make_client()
    answer = client.respond(401, [old_style], "REGISTER", URI)
    assert answer is not None
    params = params_of(answer[1])
    assert {"qop", "nc", "cnonce", "algorithm"}.isdisjoint(params)
    assert server.verify("REGISTER", answer[1]).ok
    assert server.verify("REGISTER", answer[1]).reason is AuthFailure.REPLAY
    reused = client.authorize("REGISTER", URI)
    assert reused is not None
    assert server.verify("REGISTER", reused[1]).reason is AuthFailure.REPLAY
    strict, _ = make_server(algorithms=("MD5",), allow_rfc2069=False)
    (challenge,) = strict.challenge()
    answer = make_client().respond(401, [challenge.replace(', qop="auth"', "")], "REGISTER", URI)
    assert answer is not None
    assert strict.verify("REGISTER", answer[1]).reason is AuthFailure.MALFORMED


# ------------------------------------------------------------------ client choices


def test_client_prefers_sha256_over_md5_whatever_the_order() -> None:
    server, _ = make_server(algorithms=("MD5", "SHA-256"))
    challenges = server.challenge()
    assert "MD5" in challenges[0]
    answer = make_client().respond(401, challenges, "REGISTER", URI)
    assert answer is not None
    assert params_of(answer[1])["algorithm"] == "SHA-256"
    assert server.verify("REGISTER", answer[1]).ok


def test_client_skips_what_it_cannot_answer() -> None:
    server, _ = make_server(algorithms=("MD5",))
    unusable = [
        'Basic realm="x"',
        'Digest realm="x", nonce="n", algorithm=AKAv1-MD5',
        'Digest realm="x", nonce="n", qop="auth-conf"',
        'Digest realm="x", nonce="n", algorithm=MD5-sess',  # -sess without qop
        'Digest nonce="n"',
        "garbage",
    ]
    assert make_client().respond(401, unusable, "REGISTER", URI) is None
    answer = make_client().respond(401, [*unusable, *server.challenge()], "REGISTER", URI)
    assert answer is not None
    assert server.verify("REGISTER", answer[1]).ok


def test_client_rejects_non_challenge_status() -> None:
    with pytest.raises(ValueError, match="200"):
        make_client().respond(200, [], "REGISTER", URI)


def test_authorize_without_a_challenge_is_none() -> None:
    assert make_client().authorize("REGISTER", URI) is None


def test_nonce_count_increments_and_cnonce_is_fresh_per_request() -> None:
    server, _ = make_server()
    client = make_client()
    first = client.respond(401, server.challenge(), "REGISTER", URI)
    assert first is not None
    answers = [first[1]]
    for _ in range(3):
        again = client.authorize("REGISTER", URI)
        assert again is not None
        answers.append(again[1])
    params = [params_of(value) for value in answers]
    assert [p["nc"] for p in params] == ["00000001", "00000002", "00000003", "00000004"]
    assert len({p["cnonce"] for p in params}) == 4
    assert len({p["nonce"] for p in params}) == 1
    assert [server.verify("REGISTER", value).ok for value in answers] == [True] * 4


def test_sess_algorithms_keep_their_cnonce() -> None:
    server, _ = make_server(algorithms=("SHA-256-sess",))
    client = make_client()
    first = client.respond(401, server.challenge(), "REGISTER", URI)
    second = client.authorize("REGISTER", URI)
    assert first is not None
    assert second is not None
    assert params_of(first[1])["cnonce"] == params_of(second[1])["cnonce"]
    assert server.verify("REGISTER", first[1]).ok
    assert server.verify("REGISTER", second[1]).ok


def test_cnonce_comes_from_the_injected_source() -> None:
    seen: list[int] = []

    def rng(n: int) -> bytes:
        seen.append(n)
        return b"\x01" * n

    server, _ = make_server()
    answer = DigestClient("alice", "wonderland", rng=rng).respond(
        401, server.challenge(), "REGISTER", URI
    )
    assert answer is not None
    assert params_of(answer[1])["cnonce"] == base64.b64encode(b"\x01" * seen[0]).decode()
    a = make_client().respond(401, [RFC2617_CHALLENGE], "GET", "/")
    b = make_client().respond(401, [RFC2617_CHALLENGE], "GET", "/")
    assert a == b  # same seed, same cnonce: nothing else is random


def test_wrong_password_gives_up_on_the_same_nonce() -> None:
    client = make_client("alice", "not-the-password")
    assert client.respond(401, [RFC2617_CHALLENGE], "REGISTER", URI) is not None
    assert client.respond(401, [RFC2617_CHALLENGE], "REGISTER", URI) is None


def test_wrong_password_against_fresh_nonces_stops() -> None:
    server, _ = make_server()
    client = make_client("alice", "not-the-password")
    answers = 0
    for _ in range(50):
        answer = client.respond(401, server.challenge(), "REGISTER", URI)
        if answer is None:
            break
        answers += 1
        assert server.verify("REGISTER", answer[1]).reason is AuthFailure.BAD_RESPONSE
    assert answers == auth.DEFAULT_MAX_ATTEMPTS


def test_accepted_starts_afresh() -> None:
    server, _ = make_server()
    client = make_client()
    for _ in range(5):
        answer = client.respond(407, server.challenge(), "INVITE", URI)
        assert answer is not None
        assert server.verify("INVITE", answer[1]).ok
        client.accepted()


def test_stale_nonce_is_retried_silently() -> None:
    server, clock = make_server(nonce_ttl=300)
    client = make_client()
    first = client.respond(401, server.challenge(), "REGISTER", URI)
    assert first is not None
    assert server.verify("REGISTER", first[1]).ok
    clock.advance(301)
    again = client.authorize("REGISTER", URI)
    assert again is not None
    result = server.verify("REGISTER", again[1])
    assert (result.reason, result.stale) == (AuthFailure.STALE, True)
    retry = client.respond(401, server.challenge(stale=True), "REGISTER", URI)
    assert retry is not None
    assert server.verify("REGISTER", retry[1]).ok


def test_stale_rounds_do_not_count_as_failures_but_are_bounded() -> None:
    server, _ = make_server()
    client = make_client()
    assert client.respond(401, server.challenge(), "REGISTER", URI) is not None
    for _ in range(auth.MAX_STALE_RETRIES):
        assert client.respond(401, server.challenge(stale=True), "REGISTER", URI) is not None
    # Stale rounds left the failure budget alone: a real rejection is still answered...
    answer = client.respond(401, server.challenge(), "REGISTER", URI)
    assert answer is not None
    assert server.verify("REGISTER", answer[1]).ok
    # ...but a server that says stale forever is not followed forever.
    assert client.respond(401, server.challenge(stale=True), "REGISTER", URI) is None


def test_stale_with_the_nonce_just_answered_is_refused() -> None:
    client = make_client()
    assert client.respond(401, [RFC2617_CHALLENGE], "REGISTER", URI) is not None
    assert client.respond(401, [RFC2617_CHALLENGE + ", stale=true"], "REGISTER", URI) is None


def test_expired_nonce_with_wrong_password_is_not_stale() -> None:
    server, clock = make_server()
    answer = make_client("alice", "nope").respond(401, server.challenge(), "REGISTER", URI)
    assert answer is not None
    clock.advance(1000)
    result = server.verify("REGISTER", answer[1])
    assert (result.reason, result.stale) == (AuthFailure.BAD_RESPONSE, False)


def test_client_repr_hides_the_password() -> None:
    assert "wonderland" not in repr(make_client())
    assert "alice" not in repr(make_client())


# ------------------------------------------------------------------ server checks


def test_challenge_shape_and_fresh_nonces() -> None:
    server, _ = make_server()
    sha, md5 = server.challenge(stale=True)
    parsed = dict(parse_challenge(sha).parameters)
    assert parsed.keys() == {"realm", "nonce", "algorithm", "qop", "stale"}
    assert 'qop="auth"' in sha
    assert "algorithm=SHA-256" in sha
    assert "stale=true" in sha
    assert "algorithm=MD5" in md5
    assert dict(parse_challenge(md5).parameters)["nonce"] == parsed["nonce"]
    assert server.challenge()[0] != server.challenge()[0]  # same clock tick, still distinct


def test_replay_and_lower_nc_are_rejected() -> None:
    server, _ = make_server()
    client = make_client()
    first = client.respond(401, server.challenge(), "REGISTER", URI)
    second = client.authorize("REGISTER", URI)
    third = client.authorize("REGISTER", URI)
    assert first is not None
    assert second is not None
    assert third is not None
    assert server.verify("REGISTER", third[1]).ok
    result = server.verify("REGISTER", third[1])
    assert (result.reason, result.stale) == (AuthFailure.REPLAY, True)
    assert server.verify("REGISTER", second[1]).reason is AuthFailure.REPLAY
    assert server.verify("REGISTER", first[1]).reason is AuthFailure.REPLAY


def test_unknown_user_and_wrong_password_look_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    server, _ = make_server()
    hashed: list[str] = []
    real = auth.compute_ha1

    def counting(algorithm: str, username: str, realm: str, password: str) -> str:
        hashed.append(username)
        return real(algorithm, username, realm, password)

    results = []
    for user, password in [("alice", "wrong"), ("mallory", "wrong")]:
        answer = make_client(user, password).respond(401, server.challenge(), "INVITE", URI)
        assert answer is not None
        monkeypatch.setattr(auth, "compute_ha1", counting)
        results.append(server.verify("INVITE", answer[1]))
        monkeypatch.setattr(auth, "compute_ha1", real)
    assert [r.reason for r in results] == [AuthFailure.BAD_RESPONSE, AuthFailure.UNKNOWN_USER]
    assert [(r.ok, r.stale, r.username) for r in results] == [(False, False, None)] * 2
    assert hashed == ["alice", "mallory"]  # the unknown user costs a hash too


def test_realm_and_uri_mismatch() -> None:
    server, _ = make_server()
    answer = make_client().respond(401, server.challenge(), "INVITE", URI)
    assert answer is not None
    value = answer[1]
    assert server.verify("INVITE", value, request_uri="sip:other@example.org").reason is (
        AuthFailure.URI_MISMATCH
    )
    other_realm = replace_params(value, realm="elsewhere")
    assert server.verify("INVITE", other_realm).reason is AuthFailure.REALM_MISMATCH
    assert server.verify("INVITE", value, request_uri=URI).ok


def test_nonce_from_another_secret_or_tampered_is_stale_at_best() -> None:
    server, clock = make_server()
    other = DigestServer(REALM, b"another-secret-of-16-bytes", clock, lookup=lookup)
    answer = make_client().respond(401, other.challenge(), "INVITE", URI)
    assert answer is not None
    assert server.verify("INVITE", answer[1]).reason is AuthFailure.STALE
    assert other.verify("INVITE", answer[1]).ok


def test_only_the_canonical_spelling_of_a_nonce_is_ours() -> None:
    # base64 decoding skips stray characters; a respelled nonce is not one we issued.
    server, _ = make_server()
    respelled = [c.replace('", algorithm', '!", algorithm', 1) for c in server.challenge()]
    answer = make_client().respond(401, respelled, "INVITE", URI)
    assert answer is not None
    assert params_of(answer[1])["nonce"].endswith("!")
    assert server.verify("INVITE", answer[1]).reason is AuthFailure.STALE


def test_a_nonce_used_without_qop_cannot_be_used_with_qop() -> None:
    server, _ = make_server(algorithms=("MD5",))
    (challenge,) = server.challenge()
    old_style = make_client().respond(401, [challenge.replace(', qop="auth"', "")], "INVITE", URI)
    with_qop = make_client().respond(401, [challenge], "INVITE", URI)
    assert old_style is not None
    assert with_qop is not None
    assert server.verify("INVITE", old_style[1]).ok
    assert server.verify("INVITE", with_qop[1]).reason is AuthFailure.REPLAY


def test_nonce_from_the_future_is_stale() -> None:
    future_clock = FakeClock(start=2000.0)
    ahead = DigestServer(REALM, SECRET, future_clock, lookup=lookup)
    server, _ = make_server()  # same secret, clock 1000 s behind
    answer = make_client().respond(401, ahead.challenge(), "INVITE", URI)
    assert answer is not None
    assert server.verify("INVITE", answer[1]).reason is AuthFailure.STALE


def test_replay_memory_is_bounded_and_eviction_fails_safe() -> None:
    server, clock = make_server(max_tracked_nonces=2)
    answers = []
    for _ in range(3):
        client = make_client()
        answer = client.respond(401, server.challenge(), "REGISTER", URI)
        assert answer is not None
        answers.append(answer[1])
        clock.advance(1)
    assert [server.verify("REGISTER", value).ok for value in answers] == [True] * 3
    assert len(server._seen) == 2
    # The evicted nonce's replay is still refused (stale), never accepted.
    assert server.verify("REGISTER", answers[0]).reason is AuthFailure.STALE
    assert server.verify("REGISTER", answers[2]).reason is AuthFailure.REPLAY
    clock.advance(400)
    fresh = make_client().respond(401, server.challenge(), "REGISTER", URI)
    assert fresh is not None
    assert server.verify("REGISTER", fresh[1]).ok
    assert len(server._seen) == 1  # expired records were dropped


@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing(value: str | None) -> None:
    server, _ = make_server()
    assert server.verify("INVITE", value) == AuthResult(False, AuthFailure.MISSING)


def _valid_authorization() -> tuple[DigestServer, str]:
    server, _ = make_server()
    answer = make_client().respond(401, server.challenge(), "INVITE", URI)
    assert answer is not None
    return server, answer[1]


@pytest.mark.parametrize(
    ("drop", "changes"),
    [
        (("username",), {}),
        (("nonce",), {}),
        (("uri",), {}),
        (("response",), {}),
        (("realm",), {}),
        (("nc",), {}),
        (("cnonce",), {}),
        ((), {"nc": "1"}),
        ((), {"nc": "0000000g"}),
        ((), {"nc": "00000000"}),
        ((), {"qop": "auth-conf"}),
        ((), {"algorithm": "SHA-512-256"}),  # not offered by this server
        ((), {"algorithm": "AKAv1-MD5"}),
        ((), {"response": "abc"}),
        ((), {"response": "z" * 64}),
        ((), {"userhash": "true"}),
        (("qop",), {}),  # RFC 2069 form must not carry nc/cnonce
    ],
)
def test_malformed_credentials(drop: tuple[str, ...], changes: dict[str, str]) -> None:
    server, value = _valid_authorization()
    tampered = replace_params(value, drop, **changes)
    assert server.verify("INVITE", tampered) == AuthResult(False, AuthFailure.MALFORMED)


@pytest.mark.parametrize(
    "value",
    ["Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", "Digest", 'Digest username="a', "\x00"],
)
def test_malformed_values(value: str) -> None:
    server, _ = make_server()
    assert server.verify("INVITE", value).reason is AuthFailure.MALFORMED


def test_server_configuration_is_checked() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="16 bytes"):
        DigestServer(REALM, b"short", clock, lookup=lookup)
    with pytest.raises(ValueError, match="must be some of"):
        DigestServer(REALM, SECRET, clock, algorithms=("SHA-1",), lookup=lookup)
    with pytest.raises(ValueError, match="must be some of"):
        DigestServer(REALM, SECRET, clock, algorithms=(), lookup=lookup)
    assert "wonderland" not in repr(DigestServer(REALM, SECRET, clock, lookup=lookup))


# ------------------------------------------------------------------ fuzz

_param_names = st.sampled_from(
    ["username", "realm", "nonce", "uri", "response", "algorithm", "qop", "nc", "cnonce", "x"]
)
_param_values = st.one_of(
    st.text(max_size=20), st.from_regex(r"[0-9a-f]{8,64}", fullmatch=True), st.just(REALM)
)


@st.composite
def digest_like(draw: st.DrawFn) -> str:
    params = draw(st.lists(st.tuples(_param_names, _param_values), max_size=12))
    quote = draw(st.booleans())
    rendered = [f'{k}="{v}"' if quote else f"{k}={v}" for k, v in params]
    return draw(st.sampled_from(["Digest ", "digest\t", "Basic ", ""])) + ", ".join(rendered)


_fuzz_server, _ = make_server(algorithms=ALGORITHMS)


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(st.text(), digest_like()), body=st.binary(max_size=16))
def test_verify_never_raises(value: str, body: bytes) -> None:
    result = _fuzz_server.verify("INVITE", value, body, request_uri=URI)
    assert isinstance(result, AuthResult)
    assert not result.ok


@settings(max_examples=200, deadline=None)
@given(challenges=st.lists(st.one_of(st.text(), digest_like()), max_size=3))
def test_client_never_raises_on_hostile_challenges(challenges: list[str]) -> None:
    answer = make_client().respond(407, challenges, "INVITE", URI)
    assert answer is None or answer[0] == "Proxy-Authorization"


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_parser_raises_only_syntax_errors(value: str) -> None:
    with contextlib.suppress(DigestSyntaxError):
        parse_challenge(value)
