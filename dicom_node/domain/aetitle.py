"""Known peers: AE@host:port[/tls] (PS3.8 9.3.2). What an AE title may be: domain/vr.py (AE)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.vr import validate_ae_title

# The per-peer option that makes the node's associations to that peer use DICOM
# TLS (PS3.15 B.1, the BCP 195 profile), in the string forms: ``AE@host:port/tls``
TLS_SUFFIX = "/tls"
_TABLE_KEYS = frozenset({"ae_title", "host", "port", "tls"})


@dataclass(frozen=True, slots=True)
class Peer:
    """A remote AE the node may open associations to (C-MOVE, storage commitment).

    ``tls``: the node opens its associations to this peer over TLS, checking the
    peer's certificate against ``tls_ca_bundle`` and its host name (or IP address)
    against the certificate's subjectAltName.
    """

    ae_title: str
    host: str
    port: int
    tls: bool = False

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}{TLS_SUFFIX if self.tls else ''}"


def parse_peer(text: str) -> Peer:
    """Parse ``AE@host:port`` (IPv6 hosts in brackets: ``AE@[::1]:104``), with
    ``/tls`` at the end for a peer reached over DICOM TLS (``AE@host:2762/tls``)."""
    shown = text.strip()
    ae_part, sep, address = shown.partition("@")
    if not sep:
        raise InvalidValue(f"peer {shown!r} is not of the form AE@host:port")
    ae_title = validate_ae_title(ae_part)
    address, slash, option = address.partition("/")
    if slash and option.strip().lower() != TLS_SUFFIX[1:]:
        raise InvalidValue(f"peer {shown!r}: unknown option {option!r} (only /tls)")
    host, sep, port_text = address.rpartition(":")
    if not sep or not host:
        raise InvalidValue(f"peer {shown!r} is not of the form AE@host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return Peer(ae_title=ae_title, host=host, port=_port(shown, port_text), tls=bool(slash))


def peer_from_table(ae_title: str, table: Mapping[str, object]) -> Peer:
    """A peer given as a table, keyed by its AE title: ``{host = "10.1.2.3",
    port = 2762, tls = true}`` in TOML (``tls`` may be left out: false). The
    settings' JSON form (with ``ae_title``, as the main process hands it to its
    DICOM workers) is accepted too."""
    unknown = sorted(set(table) - _TABLE_KEYS)
    if unknown:
        raise InvalidValue(f"peer {ae_title!r}: unknown keys {', '.join(unknown)}")
    title = validate_ae_title(str(table.get("ae_title", ae_title)))
    if title != validate_ae_title(ae_title):
        raise InvalidValue(f"peer {ae_title!r} is listed under another AE title {title!r}")
    host, port, tls = table.get("host"), table.get("port"), table.get("tls", False)
    if not isinstance(host, str) or not host.strip():
        raise InvalidValue(f"peer {ae_title!r} needs a host")
    if isinstance(port, bool) or not isinstance(port, int | str):
        raise InvalidValue(f"peer {ae_title!r} needs a port")
    if not isinstance(tls, bool):
        raise InvalidValue(f"peer {ae_title!r}: tls must be true or false")
    return Peer(title, host.strip().strip("[]"), _port(ae_title, str(port)), tls)


def _port(peer: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InvalidValue(f"peer {peer!r} has an invalid port {text!r}")
    return int(text)


def parse_peer_list(text: str) -> list[Peer]:
    """Parse a comma-separated list of peers; duplicates of one AE title are refused."""
    peers = [parse_peer(part) for part in text.split(",") if part.strip()]
    seen: set[str] = set()
    for peer in peers:
        if peer.ae_title in seen:
            raise InvalidValue(f"peer AE title {peer.ae_title!r} is listed twice")
        seen.add(peer.ae_title)
    return peers
