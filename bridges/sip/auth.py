"""SIP digest authentication, sans-IO (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760).

Works on header *values* (WWW-Authenticate, Authorization, Proxy-Authenticate,
Proxy-Authorization), never on whole messages. Time comes from an injected
``Clock``, randomness from an injected source; nothing here logs, and no
exception message carries a user name, a password or a digest.

sipmessage 0.7.1 supplies the data model (``AuthChallenge``, ``AuthCredentials``,
``AuthParameters``) and string quoting, but not the parser or serializer: it
splits on commas inside quoted strings (so RFC 3261's own ``qop="auth,auth-int"``
fails), keeps parameter names case-sensitive, lets a duplicate parameter win,
accepts unbalanced quotes, quotes ``qop`` in credentials (a token there) and
does not force quotes on ``uri``. The functions below replace those parts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import random
import re
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from sipmessage.address import quote
from sipmessage.auth import AuthChallenge, AuthCredentials, AuthParameters

from gateway.clock import Clock
from gateway.errors import BadRequest

#: Challenge and credentials header names per challenging status.
AUTH_HEADERS: Mapping[int, tuple[str, str]] = {
    401: ("WWW-Authenticate", "Authorization"),
    407: ("Proxy-Authenticate", "Proxy-Authorization"),
}

# hashlib names of the base hash of each algorithm family.
_HASHES = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}

#: Supported algorithms, strongest first: a client answers the strongest one offered.
ALGORITHMS: tuple[str, ...] = tuple(
    base + sess for base in ("SHA-512-256", "SHA-256", "MD5") for sess in ("", "-sess")
)
_CANONICAL = {name.upper(): name for name in ALGORITHMS}
_STRENGTH = {name: len(ALGORITHMS) - rank for rank, name in enumerate(ALGORITHMS)}

# Hostile-input caps (h11 style): a header value longer than any sane digest
# value, or with more parameters than the grammar has, is malformed.
MAX_VALUE_LENGTH = 4096
MAX_PARAMETERS = 32

_TCHARS = r"[A-Za-z0-9\-.!%*_+`'~]+"
_TOKEN = re.compile(_TCHARS)
_NC = re.compile(r"[0-9A-Fa-f]{8}")
_HEX = re.compile(r"[0-9a-f]+")
_SCHEME = re.compile(rf"[ \t]*({_TCHARS})[ \t]+")
# name = token / quoted-string, then "," or the end. Control characters other
# than tab are refused even when escaped: a CR or LF would split the header.
_CONTROL = r"\x00-\x08\x0a-\x1f\x7f"
_PARAM = re.compile(
    rf"[ \t]*({_TCHARS})[ \t]*=[ \t]*"
    rf'(?:({_TCHARS})|"((?:[^"\\{_CONTROL}]|\\[^{_CONTROL}])*)")'
    r"[ \t]*(,|\Z)"
)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_CONTROL_CHAR = re.compile(f"[{_CONTROL}]")

# In a challenge qop is a quoted list; in credentials qop, nc and algorithm are
# tokens (RFC 3261 §25.1, RFC 7616 §3.4). Strict peers reject the other form.
_CHALLENGE_QUOTED = frozenset({"realm", "domain", "nonce", "opaque", "qop"})
_CREDENTIALS_QUOTED = frozenset(
    {"username", "realm", "nonce", "uri", "response", "cnonce", "opaque"}
)

_NC_MAX = 0xFFFFFFFF
# Highest nc recorded for an RFC 2069 (qop-less) use: any later use is a replay.
_SINGLE_USE = _NC_MAX + 1
# A nonce stamped this far in the future (wall clock stepped back) is not trusted.
_CLOCK_SKEW = 5.0


class DigestSyntaxError(BadRequest, ValueError):
    """A digest header value breaks the grammar (a ``ValueError`` too, like sipmessage's).

    The message says what and where, never the value: it may carry a user name.
    """


def _parse(value: str) -> tuple[str, dict[str, str]]:
    """Split ``scheme name=value, ...`` into the scheme and lower-cased parameters."""
    if len(value) > MAX_VALUE_LENGTH:
        raise DigestSyntaxError("header value too long")
    match = _SCHEME.match(value)
    if match is None:
        raise DigestSyntaxError("missing auth scheme or parameters")
    scheme, pos, params = match[1], match.end(), {}
    while True:
        match = _PARAM.match(value, pos)
        if match is None:
            raise DigestSyntaxError(f"malformed parameter at offset {pos}")
        name = match[1].lower()
        param = match[2] if match[2] is not None else _QUOTED_PAIR.sub(r"\1", match[3])
        if name in params:
            raise DigestSyntaxError(f"duplicate parameter {name!r}")
        try:
            # Digests hash bytes: a value that cannot become bytes cannot be checked.
            param.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise DigestSyntaxError(f"unencodable parameter {name!r}") from None
        params[name] = param
        if len(params) > MAX_PARAMETERS:
            raise DigestSyntaxError("too many parameters")
        pos = match.end()
        if not match[4]:
            return scheme, params


def parse_challenge(value: str) -> AuthChallenge:
    """Parse a WWW-/Proxy-Authenticate value (names lower-cased) or raise DigestSyntaxError."""
    scheme, params = _parse(value)
    return AuthChallenge(scheme=scheme, parameters=AuthParameters(**params))


def parse_credentials(value: str) -> AuthCredentials:
    """Parse a (Proxy-)Authorization value (names lower-cased) or raise DigestSyntaxError."""
    scheme, params = _parse(value)
    return AuthCredentials(scheme=scheme, parameters=AuthParameters(**params))


def _quote(value: str) -> str:
    # A CR or LF in a header value would let the value inject header lines.
    if _CONTROL_CHAR.search(value):
        raise ValueError("control character in a digest parameter")
    return str(quote(value))


def _format(scheme: str, params: Mapping[str, str], quoted: frozenset[str]) -> str:
    scheme = "Digest" if scheme.lower() == "digest" else scheme
    rendered = [
        f"{name}={_quote(value) if name in quoted or not _TOKEN.fullmatch(value) else value}"
        for name, value in params.items()
    ]
    return f"{scheme} {', '.join(rendered)}"


def format_challenge(challenge: AuthChallenge) -> str:
    """Serialize a challenge: realm, domain, nonce, opaque and qop quoted."""
    return _format(challenge.scheme, challenge.parameters, _CHALLENGE_QUOTED)


def format_credentials(credentials: AuthCredentials) -> str:
    """Serialize credentials: qop, nc and algorithm as tokens, the rest quoted."""
    if credentials.parameters is None:
        raise ValueError("digest credentials need parameters")
    return _format(credentials.scheme, credentials.parameters, _CREDENTIALS_QUOTED)


def _canonical_algorithm(name: str) -> str | None:
    return _CANONICAL.get(name.upper())


def _hash(algorithm: str, data: str | bytes) -> str:
    if isinstance(data, str):
        # surrogateescape: a header decoded that way hashes as the bytes on the wire.
        data = data.encode("utf-8", "surrogateescape")
    return hashlib.new(_HASHES[algorithm.removesuffix("-sess")], data).hexdigest()


def compute_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(username:realm:password) for the base hash of ``algorithm`` (no -sess step)."""
    return _hash(algorithm, f"{username}:{realm}:{password}")


def digest_response(
    algorithm: str,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    *,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` value (RFC 7616 §3.4.1; RFC 2069 form when ``qop`` is None).

    ``ha1`` is ``compute_ha1(...)``; the -sess step (RFC 7616 §3.4.2) is applied
    here because it needs the nonce and cnonce of the request.
    """
    if algorithm.endswith("-sess"):
        ha1 = _hash(algorithm, f"{ha1}:{nonce}:{cnonce}")
    if qop == "auth-int":
        ha2 = _hash(algorithm, f"{method}:{uri}:{_hash(algorithm, body)}")
    else:
        ha2 = _hash(algorithm, f"{method}:{uri}")
    if qop is None:
        return _hash(algorithm, f"{ha1}:{nonce}:{ha2}")
    return _hash(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


#: A source of random bytes (``os.urandom``, ``secrets.token_bytes``) or a ``random.Random``.
Rng = Callable[[int], bytes] | random.Random

# How many new-nonce challenges in a row a realm may send before the client
# concludes its credentials are refused (servers that mint a nonce per
# challenge never repeat one, so the same-nonce rule alone would loop).
DEFAULT_MAX_ATTEMPTS = 2
# stale=true with a fresh nonce is harmless once or twice; forever is a broken server.
MAX_STALE_RETRIES = 3


@dataclass(frozen=True)
class _Offer:  # one digest challenge the client can answer
    realm: str
    nonce: str
    algorithm: str
    algorithm_given: bool
    qop: str | None
    opaque: str | None
    stale: bool


def _read_offer(value: str) -> _Offer | None:
    try:
        scheme, params = _parse(value)
    except DigestSyntaxError:
        return None
    if scheme.lower() != "digest" or "realm" not in params or "nonce" not in params:
        return None
    algorithm = _canonical_algorithm(params.get("algorithm", "MD5"))
    if algorithm is None:
        return None
    qop: str | None = None
    if "qop" in params:
        options = {option.strip().lower() for option in params["qop"].split(",")}
        # auth when offered: auth-int costs a body hash and breaks on body rewrites.
        qop = "auth" if "auth" in options else "auth-int" if "auth-int" in options else None
        if qop is None:
            return None
    elif algorithm.endswith("-sess"):
        return None  # -sess needs a cnonce, which RFC 2069 mode must not send
    stale = params.get("stale", "").lower() == "true"
    given = "algorithm" in params
    return _Offer(
        params["realm"], params["nonce"], algorithm, given, qop, params.get("opaque"), stale
    )


@dataclass
class _Session:  # the challenge being answered, with its nonce count
    header: str
    offer: _Offer
    cnonce: str
    nc: int = 0


@dataclass
class _Attempts:  # challenges answered for one realm since the last success
    nonce: str
    answered: int = 1
    stale: int = 0


class DigestClient:
    """Answers digest challenges for one account (UAC side of RFC 3261 §22.2/22.3).

    Feed every 401/407 of a request to ``respond`` and add the returned header
    to the retried request; call ``accepted`` once a request carrying these
    credentials gets a final answer other than 401/407, so that later
    challenges for the realm start afresh. ``authorize`` re-uses the last
    challenge pre-emptively (re-REGISTER) with the nonce count incremented.
    """

    def __init__(
        self, username: str, password: str, *, rng: Rng, max_attempts: int = DEFAULT_MAX_ATTEMPTS
    ) -> None:
        _quote(username)  # fail at configuration, not at the first challenge
        self._username = username
        self._password = password
        self._random_bytes = rng.randbytes if isinstance(rng, random.Random) else rng
        self._max_attempts = max_attempts
        self._session: _Session | None = None
        self._attempts: dict[tuple[str, str], _Attempts] = {}

    def respond(
        self, status: int, challenges: Iterable[str], method: str, uri: str, body: bytes = b""
    ) -> tuple[str, str] | None:
        """Answer a 401 or 407: return ``(header name, value)`` or None to give up.

        Picks the strongest supported algorithm offered (SHA-512-256, then
        SHA-256, then MD5; qop before RFC 2069; the first on a tie). Gives up
        when nothing is answerable, when the nonce just answered is challenged
        again (wrong credentials), or after too many
        challenges in a row for the realm. ``stale=true`` with a new nonce is
        a silent retry, not a failure.
        """
        headers = AUTH_HEADERS.get(status)
        if headers is None:
            raise ValueError(f"status {status} is not a digest challenge")
        offers = [offer for offer in map(_read_offer, challenges) if offer is not None]
        if not offers:
            return None
        _, offer = max(
            enumerate(offers),
            key=lambda item: (_STRENGTH[item[1].algorithm], item[1].qop is not None, -item[0]),
        )
        key = (headers[1], offer.realm)
        attempts = self._attempts.get(key)
        if attempts is None:
            self._attempts[key] = _Attempts(offer.nonce)
        else:
            if offer.nonce == attempts.nonce:
                return None  # our answer to this very nonce was refused
            attempts.nonce = offer.nonce
            attempts.stale += offer.stale
            attempts.answered += not offer.stale
            if attempts.stale > MAX_STALE_RETRIES or attempts.answered > self._max_attempts:
                return None
        self._session = _Session(headers[1], offer, self._cnonce())
        return self._credentials(self._session, method, uri, body)

    def authorize(self, method: str, uri: str, body: bytes = b"") -> tuple[str, str] | None:
        """Credentials for a new request from the last challenge, or None if there is none.

        The nonce count goes up by one each time; a server that has expired the
        nonce answers ``stale=true`` and ``respond`` retries silently.
        """
        if self._session is None:
            return None
        self._attempts.clear()  # a pre-emptive request means the last one went through
        return self._credentials(self._session, method, uri, body)

    def accepted(self) -> None:
        """The last credentials were accepted: later challenges are new attempts."""
        self._attempts.clear()

    def _cnonce(self) -> str:
        raw = self._random_bytes(18)
        if not raw:
            raise ValueError("the random source returned no bytes")
        return base64.b64encode(raw).decode("ascii").rstrip("=")

    def _credentials(
        self, session: _Session, method: str, uri: str, body: bytes
    ) -> tuple[str, str] | None:
        offer = session.offer
        if session.nc >= _NC_MAX:
            return None  # nc would wrap: the peer must send a new nonce
        session.nc += 1
        if session.nc > 1 and not offer.algorithm.endswith("-sess"):
            # A fresh cnonce per request; -sess keeps it because the session key holds it.
            session.cnonce = self._cnonce()
        nc = f"{session.nc:08x}"
        ha1 = compute_ha1(offer.algorithm, self._username, offer.realm, self._password)
        cnonce, qop = session.cnonce, offer.qop
        response = digest_response(
            offer.algorithm, ha1, offer.nonce, method, uri, qop=qop, nc=nc, cnonce=cnonce, body=body
        )
        params = {"username": self._username, "realm": offer.realm, "nonce": offer.nonce}
        params.update(uri=uri, response=response)
        if offer.algorithm_given:
            # Old peers that never sent algorithm may not expect one back.
            params["algorithm"] = offer.algorithm
        if offer.qop is not None:
            params.update(cnonce=session.cnonce, qop=offer.qop, nc=nc)
        if offer.opaque is not None:
            params["opaque"] = offer.opaque
        return session.header, _format("Digest", params, _CREDENTIALS_QUOTED)


class AuthFailure(StrEnum):
    """Why ``DigestServer.verify`` refused; for counters and logs, never for the peer."""

    MISSING = "missing"
    MALFORMED = "malformed"
    UNKNOWN_USER = "unknown_user"
    BAD_RESPONSE = "bad_response"
    STALE = "stale"
    REPLAY = "replay"
    REALM_MISMATCH = "realm_mismatch"
    URI_MISMATCH = "uri_mismatch"


@dataclass(frozen=True)
class AuthResult:
    """The outcome of ``DigestServer.verify``.

    ``username`` is set only on success. On failure the caller answers with a
    fresh ``challenge(stale=result.stale)``: the same answer whether the user
    is unknown or the password is wrong.
    """

    ok: bool
    reason: AuthFailure | None = None
    username: str | None = None

    @property
    def stale(self) -> bool:
        """The credentials were right but the nonce is no longer usable: retry silently."""
        return self.reason in (AuthFailure.STALE, AuthFailure.REPLAY)


@dataclass(frozen=True)
class Ha1:
    """Stored credentials: hex H(username:realm:password) per base hash ("MD5", "SHA-256").

    Store these instead of passwords; each is password-equivalent for its realm.
    """

    digests: Mapping[str, str] = field(repr=False)

    @classmethod
    def from_password(
        cls,
        username: str,
        realm: str,
        password: str,
        hashes: Iterable[str] = tuple(_HASHES),
    ) -> Ha1:
        """Derive the stored form for the given base hashes."""
        return cls({name: compute_ha1(name, username, realm, password) for name in hashes})


#: ``lookup(username, realm)``: the password, the stored ``Ha1``, or None if unknown.
Lookup = Callable[[str, str], str | Ha1 | None]

_NONCE_FORMAT = struct.Struct(">QI")  # issue time in microseconds, per-server counter
_NONCE_MAC_LENGTH = 16


def _encode_nonce(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


class DigestServer:
    """Challenges and verifies digest credentials (UAS/proxy side of RFC 3261 §22).

    Nonces are stateless-verifiable: issue time and a counter, authenticated by
    HMAC(secret, ...) and base64url-encoded. They are stamped with the wall
    clock so that nodes sharing ``secret`` accept each other's nonces; replay
    memory (the highest nc seen per nonce) is per server object and bounded by
    ``max_tracked_nonces``.
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        clock: Clock,
        *,
        nonce_ttl: float = 300.0,
        algorithms: Iterable[str] = ("SHA-256", "MD5"),
        lookup: Lookup,
        allow_rfc2069: bool = True,
        max_tracked_nonces: int = 65536,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret must be at least 16 bytes")
        _quote(realm)
        chosen = tuple(_canonical_algorithm(name) or name for name in algorithms)
        if not chosen or not set(chosen) <= _STRENGTH.keys():
            raise ValueError(f"digest algorithms must be some of {ALGORITHMS}")
        self.realm = realm
        self.algorithms: tuple[str, ...] = chosen
        self._secret = secret
        self._clock = clock
        self._ttl = nonce_ttl
        self._lookup = lookup
        self._allow_rfc2069 = allow_rfc2069
        self._max_tracked = max_tracked_nonces
        self._counter = 0
        # nonce -> (issue time, highest nc accepted); insertion order ~ first use.
        self._seen: dict[str, tuple[float, int]] = {}
        # Nonces issued at or before this time lost their replay record: stale.
        self._floor = float("-inf")
        # Unknown users are checked against this so they cost the same as known ones.
        self._dummy_password = hmac.new(secret, b"unknown-user", "sha256").hexdigest()

    def challenge(self, stale: bool = False) -> list[str]:
        """Fresh challenge values, one per algorithm in preference order, sharing a nonce."""
        head = {"realm": self.realm, "nonce": self._new_nonce()}
        tail = {"qop": "auth", "stale": "true"} if stale else {"qop": "auth"}
        params = [{**head, "algorithm": name, **tail} for name in self.algorithms]
        return [_format("Digest", each, _CHALLENGE_QUOTED) for each in params]

    def verify(
        self,
        method: str,
        authorization: str | None,
        body: bytes = b"",
        *,
        request_uri: str | None = None,
    ) -> AuthResult:
        """Check an ``Authorization`` / ``Proxy-Authorization`` value; never raises on input.

        ``request_uri``, when given, must equal the credentials' ``uri``
        (RFC 3261 §22.4) so credentials cannot be moved to another target.
        """
        if authorization is None or not authorization.strip():
            return AuthResult(False, AuthFailure.MISSING)
        try:
            scheme, params = _parse(authorization)
        except DigestSyntaxError:
            return AuthResult(False, AuthFailure.MALFORMED)
        checked = self._check_form(scheme, params)
        if checked is None:
            return AuthResult(False, AuthFailure.MALFORMED)
        algorithm, qop = checked
        username, nonce, uri = params["username"], params["nonce"], params["uri"]
        nc, cnonce = params.get("nc"), params.get("cnonce")
        if params["realm"] != self.realm:
            return AuthResult(False, AuthFailure.REALM_MISMATCH)
        if request_uri is not None and uri != request_uri:
            return AuthResult(False, AuthFailure.URI_MISMATCH)

        known, stored = self._stored_ha1(algorithm, username)
        ha1 = stored or compute_ha1(algorithm, username, self.realm, self._dummy_password)
        expected = digest_response(
            algorithm, ha1, nonce, method, uri, qop=qop, nc=nc, cnonce=cnonce, body=body
        )
        # Constant-time compare, and the same work for unknown users, so that
        # neither timing nor the answer tells a scanner which users exist.
        matched = hmac.compare_digest(expected, params["response"].lower())
        if not known:
            return AuthResult(False, AuthFailure.UNKNOWN_USER)
        if not matched or stored is None:
            return AuthResult(False, AuthFailure.BAD_RESPONSE)

        now = self._clock.time()
        issued = self._nonce_issued_at(nonce)
        if issued is None or not (
            self._floor < issued and -_CLOCK_SKEW <= now - issued <= self._ttl
        ):
            # Right credentials, unusable nonce (expired, or minted under another
            # secret, e.g. before a restart): stale=true lets the peer retry silently.
            return AuthResult(False, AuthFailure.STALE)
        count = _SINGLE_USE if nc is None else int(nc, 16)
        if not self._record_use(nonce, issued, count, now):
            return AuthResult(False, AuthFailure.REPLAY)
        return AuthResult(True, username=username)

    def _check_form(self, scheme: str, params: Mapping[str, str]) -> tuple[str, str | None] | None:
        """The algorithm and qop of well-formed credentials, or None if malformed."""
        if scheme.lower() != "digest":
            return None
        if not {"username", "realm", "nonce", "uri", "response"} <= params.keys():
            return None
        if params.get("userhash", "false").lower() != "false":
            return None  # never offered: the username would be a hash we cannot look up
        algorithm = _canonical_algorithm(params.get("algorithm", "MD5"))
        if algorithm is None or algorithm not in self.algorithms:
            return None
        response = params["response"].lower()
        digest_size = hashlib.new(_HASHES[algorithm.removesuffix("-sess")]).digest_size
        if len(response) != 2 * digest_size or _HEX.fullmatch(response) is None:
            return None
        qop = params.get("qop")
        if qop is None:
            # RFC 2069 form: no nc/cnonce, and -sess cannot work without a cnonce.
            rfc2069 = self._allow_rfc2069 and not algorithm.endswith("-sess")
            return (algorithm, None) if rfc2069 and not {"nc", "cnonce"} & params.keys() else None
        qop = qop.lower()
        if qop not in ("auth", "auth-int") or not params.get("cnonce"):
            return None
        if _NC.fullmatch(params.get("nc", "")) is None or int(params["nc"], 16) == 0:
            return None
        return algorithm, qop

    def _stored_ha1(self, algorithm: str, username: str) -> tuple[bool, str | None]:
        """Whether the user exists, and its HA1 for ``algorithm`` if one is stored."""
        secret = self._lookup(username, self.realm)
        if secret is None:
            return False, None
        if isinstance(secret, Ha1):
            # A user stored without this hash cannot pass; to the peer it is a wrong password.
            return True, secret.digests.get(algorithm.removesuffix("-sess"))
        return True, compute_ha1(algorithm, username, self.realm, secret)

    def _mac(self, stamp: bytes) -> bytes:
        message = stamp + self.realm.encode("utf-8", "surrogateescape")
        return hmac.new(self._secret, message, "sha256").digest()[:_NONCE_MAC_LENGTH]

    def _new_nonce(self) -> str:
        # The counter keeps two challenges in the same microsecond apart, so two
        # peers never share a nonce (and its nc record).
        self._counter = (self._counter + 1) & 0xFFFFFFFF
        stamp = _NONCE_FORMAT.pack(int(self._clock.time() * 1_000_000), self._counter)
        return _encode_nonce(stamp + self._mac(stamp))

    def _nonce_issued_at(self, nonce: str) -> float | None:
        """The issue time of a nonce this secret minted, or None."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (binascii.Error, ValueError):
            return None
        # The decoder skips stray characters; only the canonical spelling is ours.
        if _encode_nonce(raw) != nonce or len(raw) != _NONCE_FORMAT.size + _NONCE_MAC_LENGTH:
            return None
        stamp, mac = raw[: _NONCE_FORMAT.size], raw[_NONCE_FORMAT.size :]
        if not hmac.compare_digest(mac, self._mac(stamp)):
            return None
        micros, _ = _NONCE_FORMAT.unpack(stamp)
        return float(micros) / 1_000_000

    def _record_use(self, nonce: str, issued: float, nc: int, now: float) -> bool:
        """Remember the highest nc per nonce; False if ``nc`` is not above it."""
        seen = self._seen
        while seen:
            oldest = next(iter(seen))
            if now - seen[oldest][0] <= self._ttl:
                break
            del seen[oldest]  # expired nonces are refused as stale anyway
        previous = seen.get(nonce)
        if previous is not None and nc <= previous[1]:
            return False
        seen[nonce] = (issued, nc)
        while len(seen) > self._max_tracked:
            oldest = next(iter(seen))
            # Forgetting a live nonce would allow its replay, so every nonce
            # issued up to it becomes stale instead.
            self._floor = max(self._floor, seen.pop(oldest)[0])
        return True
