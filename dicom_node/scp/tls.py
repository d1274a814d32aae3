"""DICOM TLS (PS3.15 Annex B) and HTTPS: every TLS context of the node is built here.

The profile is PS3.15 B.9, "BCP 195 RFC 8996 TLS Profile" (what DCMTK calls its
default, non-downgrading BCP 195 profile): TLS 1.2 or later, never SSL or TLS
1.0/1.1 (RFC 8996); in TLS 1.2 only the four ECDHE AES-GCM suites BCP 195 (RFC
9325 4.2) recommends, so every session has forward secrecy and an AEAD cipher;
TLS 1.3 with OpenSSL's suites (all AEAD, all forward secret). No TLS compression
(CRIME) and no renegotiation.

- The DICOM listener: the node's certificate chain and key; client certificates
  checked against ``tls_ca_bundle`` when ``tls_client_certificates`` is
  ``required`` (mutual authentication, as PS3.15 B.1 expects) or ``optional``.
  The handshake itself runs on the connection's own thread with a timeout
  (:func:`server_handshake`), never on the accept loop.
- Outgoing associations to a peer configured with ``/tls``: the peer's
  certificate must chain to ``tls_ca_bundle`` and name the peer's configured
  host (DNS name or IP address in its subjectAltName, RFC 6125); the node's own
  certificate is sent as the client certificate.
- HTTPS (uvicorn): the same protocol versions and TLS 1.2 suites.
"""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path
from typing import Literal

# RFC 9325 4.2 (BCP 195), in OpenSSL's names; TLS 1.3 suites are not set here
BCP195_TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
    ]
)

ClientCertificates = Literal["required", "optional", "none"]
# the audit action of a peer refused at the TLS handshake (a Security Alert, Node
# Authentication, aggregated with rejected associations)
HANDSHAKE_FAILED = "tls_handshake_failed"


class TlsConfigError(Exception):
    """A certificate, key or CA bundle the node cannot use; one line for the operator."""


class HandshakeFailed(Exception):
    """A TLS handshake that did not complete; ``str()`` is a short, fixed reason.

    ``authentication``: TLS itself refused the peer or the peer refused the node
    (a certificate that does not verify, none when one is required, a protocol
    version or suite outside the profile, an alert): a failed node
    authentication. Not so a peer that stalled or dropped the connection."""

    def __init__(self, reason: str, *, authentication: bool) -> None:
        super().__init__(reason)
        self.authentication = authentication


class ClosedBeforeHandshake(Exception):
    """The peer closed the connection without sending a byte: a port probe or a
    load balancer's health check, not a TLS client."""


def _profile(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return context


def _load_chain(context: ssl.SSLContext, certificate: Path, key: Path, what: str) -> None:
    try:
        context.load_cert_chain(certificate, key)
    except OSError as exc:  # ssl.SSLError too: not PEM, key does not match
        raise TlsConfigError(
            f"cannot use {what} certificate {certificate} with key {key}: {_reason(exc)}"
        ) from None


def _load_cas(context: ssl.SSLContext, bundle: Path) -> None:
    try:
        context.load_verify_locations(cafile=bundle)
    except OSError as exc:
        raise TlsConfigError(f"cannot use tls_ca_bundle {bundle}: {_reason(exc)}") from None


def server_context(
    certificate: Path, key: Path, ca_bundle: Path | None, client_certificates: ClientCertificates
) -> ssl.SSLContext:
    """The DICOM TLS listener's context."""
    context = _profile(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    _load_chain(context, certificate, key, "tls_certificate")
    if client_certificates != "none":
        if ca_bundle is None:
            raise TlsConfigError("client certificates cannot be checked without tls_ca_bundle")
        _load_cas(context, ca_bundle)
        context.verify_mode = (
            ssl.CERT_REQUIRED if client_certificates == "required" else ssl.CERT_OPTIONAL
        )
    return context


def client_context(
    certificate: Path | None, key: Path | None, ca_bundle: Path | None
) -> ssl.SSLContext:
    """Outgoing associations to TLS peers: the peer's certificate is verified
    against ``ca_bundle`` and must name the host the peer is configured with."""
    if ca_bundle is None:
        raise TlsConfigError("a peer configured with /tls needs tls_ca_bundle (to verify it)")
    context = _profile(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))  # CERT_REQUIRED, check_hostname
    _load_cas(context, ca_bundle)
    if certificate is not None and key is not None:
        _load_chain(context, certificate, key, "tls_certificate")
    return context


def check_http_certificate(certificate: Path, key: Path) -> None:
    """Fail at start-up, in one line, on an HTTPS certificate uvicorn could not load."""
    _load_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), certificate, key, "http_tls")


def server_handshake(
    context: ssl.SSLContext, connection: socket.socket, timeout: float
) -> ssl.SSLSocket:
    """Wrap an accepted connection and complete the server side of the handshake
    within ``timeout`` seconds in all (CPython's handshake keeps one deadline
    across its reads, so a peer trickling bytes cannot stretch it). On failure
    the connection is closed and :class:`HandshakeFailed` (or
    :class:`ClosedBeforeHandshake`) says why."""
    deadline = time.monotonic() + timeout
    try:
        connection.settimeout(timeout)
        first = connection.recv(1, socket.MSG_PEEK)  # the ClientHello's first byte
    except OSError as exc:
        connection.close()
        raise HandshakeFailed(_reason(exc, timeout=timeout), authentication=False) from None
    if not first:
        connection.close()
        raise ClosedBeforeHandshake
    tls = context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
    try:
        tls.settimeout(max(deadline - time.monotonic(), 0.001))
        tls.do_handshake()
        tls.settimeout(None)
    except (OSError, ValueError) as exc:
        tls.close()
        raise HandshakeFailed(
            _reason(exc, timeout=timeout), authentication=isinstance(exc, ssl.SSLError)
        ) from None
    return tls


def _reason(exc: BaseException, *, timeout: float | None = None) -> str:
    """Why a TLS operation failed, from OpenSSL's fixed vocabulary only: never
    text a peer could have put in a certificate or an alert."""
    if isinstance(exc, TimeoutError):
        return f"no complete handshake within {timeout:g} s" if timeout else "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    if isinstance(exc, ssl.SSLError):
        return "connection closed during the handshake"
    if isinstance(exc, OSError) and exc.strerror:
        return str(exc.strerror)
    return type(exc).__name__
