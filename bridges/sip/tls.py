"""TLS contexts for SIP over TLS and WSS (RFC 3261 §26, RFC 5922, RFC 7118).

Built once from ``sip.tls`` at start (and again on reload) and handed to
``SipTransportLayer.listen`` / ``connect``; this module opens no sockets.

Policy: Mozilla's "intermediate" configuration (v5.7): TLS 1.2 and 1.3
only, ECDHE/DHE with AEAD ciphers for TLS 1.2 (TLS 1.3 suites are OpenSSL's,
which are the same three), the client's cipher order, no compression, no
session tickets, no renegotiation.

Server side: our certificate and key. Incoming clients are not asked for a
certificate: browsers on WSS cannot present one, and SIP peers are
authenticated by digest and the access lists, not by TLS.

Client side (trunks): the peer is verified against ``ca_file`` or, when it
is left out, the system store, and its name is checked against the host
we dialled (RFC 5922 §7.1); SNI carries that name. ``verify_peer: false``
turns both checks off, for lab peers with self-signed certificates only.
Our own certificate is offered to peers that ask (mutual TLS).
"""

from __future__ import annotations

import ipaddress
import ssl

from gateway.errors import GatewayError
from gateway.settings import SipTls

#: Mozilla "intermediate" TLS 1.2 cipher suites (guidelines v5.7), in their order.
INTERMEDIATE_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
    )
)
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


class TlsSetupError(GatewayError):
    """A ``sip.tls`` file cannot be loaded; the message names the key and the reason."""


def server_context(tls: SipTls) -> ssl.SSLContext:
    """The context for the ``tls`` and ``wss`` listeners."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _apply_policy(context)
    context.verify_mode = ssl.CERT_NONE
    _load_own_certificate(context, tls)
    return context


def client_context(tls: SipTls | None) -> ssl.SSLContext:
    """The context for connections we open (TLS trunks).

    Without a ``sip.tls`` section the peer is verified against the system
    store and no client certificate is offered.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _apply_policy(context)
    if tls is not None and not tls.verify_peer:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif tls is not None and tls.ca_file is not None:
        try:
            context.load_verify_locations(cafile=tls.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TlsSetupError(
                f"sip.tls.ca_file: cannot load CA certificates from {tls.ca_file}: {_why(exc)}"
            ) from exc
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if tls is not None:
        _load_own_certificate(context, tls)
    return context


def server_hostname(host: str) -> str:
    """The name to verify and to send as SNI for a SIP host (``[::1]`` -> ``::1``).

    Pass it as ``server_hostname`` to ``asyncio`` / ``SipTransportLayer.connect``.
    For an IP literal, OpenSSL sends no SNI (RFC 6066 §3 forbids it) and
    checks the certificate's IP address entries instead.
    """
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.rstrip(".").lower()


def _apply_policy(context: ssl.SSLContext) -> None:
    context.minimum_version = MINIMUM_VERSION
    context.set_ciphers(INTERMEDIATE_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_TICKET | ssl.OP_NO_RENEGOTIATION
    context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE


def _load_own_certificate(context: ssl.SSLContext, tls: SipTls) -> None:
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(
            f"sip.tls.cert_file/key_file: cannot load {tls.cert_file} with {tls.key_file}: "
            f"{_why(exc)}"
        ) from exc


def _why(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return exc.strerror or str(exc)
