"""Throw-away certificate authorities and certificates for the TLS tests, made
with the ``openssl`` command line (the ``cryptography`` package is not a
dependency of the node)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support import require


@dataclass(frozen=True)
class Issued:
    certificate: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """A trusted CA with a server/client certificate for the node and one for a
    peer, and a second, untrusted CA with a client certificate of its own."""

    ca: Path  # the trusted CA's certificate: the node's tls_ca_bundle
    node: Issued  # SAN 127.0.0.1 and localhost; server and client use
    peer: Issued  # another AE's certificate, same CA, same SANs
    wrong_host: Issued  # same CA, SAN elsewhere.invalid only
    stranger: Issued  # issued by the untrusted CA
    stranger_ca: Path


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(
        ["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True, timeout=60
    )


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
        "-keyout", key, "-out", cert, "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return cert, key


def _issue(directory: Path, name: str, ca: tuple[Path, Path], san: str) -> Issued:
    key, csr, cert = (directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        f"subjectAltName={san}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
    )
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
        "-subj", f"/CN={name}",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
        "-sha256", "-days", "2", "-extfile", extensions, "-out", cert,
        cwd=directory,
    )  # fmt: skip
    return Issued(cert, key)


def make_pki(directory: Path) -> Pki:
    require(shutil.which("openssl") is not None, "the openssl command is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    trusted = _ca(directory, "test-ca")
    untrusted = _ca(directory, "stranger-ca")
    local = "IP:127.0.0.1,DNS:localhost"
    return Pki(
        ca=trusted[0],
        node=_issue(directory, "node", trusted, local),
        peer=_issue(directory, "peer", trusted, local),
        wrong_host=_issue(directory, "wrong-host", trusted, "DNS:elsewhere.invalid"),
        stranger=_issue(directory, "stranger", untrusted, local),
        stranger_ca=untrusted[0],
    )
