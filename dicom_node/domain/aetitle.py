"""AE titles and known peers (PS3.5 6.2, VR AE; PS3.8 9.3.2)."""

from __future__ import annotations

from dataclasses import dataclass

from dicom_node.domain.errors import InvalidValue

AE_TITLE_MAX_LENGTH = 16


def validate_ae_title(value: str) -> str:
    """Return the AE title without padding, or raise InvalidValue.

    PS3.5 table 6.2-1: at most 16 characters of the default repertoire, no
    backslash, no control characters; leading/trailing spaces are not significant,
    and an all-space value is not allowed.
    """
    stripped = value.strip(" ")
    if not stripped:
        raise InvalidValue("an AE title must not be empty")
    if len(stripped) > AE_TITLE_MAX_LENGTH:
        raise InvalidValue(f"AE title {stripped!r} is longer than {AE_TITLE_MAX_LENGTH} characters")
    for char in stripped:
        if char == "\\" or not (0x20 <= ord(char) < 0x7F):
            raise InvalidValue(f"AE title {stripped!r} contains a character not allowed: {char!r}")
    return stripped


@dataclass(frozen=True, slots=True)
class Peer:
    """A remote AE the node may open associations to (C-MOVE, storage commitment)."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


def parse_peer(text: str) -> Peer:
    """Parse ``AE@host:port`` (IPv6 hosts in brackets: ``AE@[::1]:104``)."""
    ae_part, sep, address = text.strip().partition("@")
    if not sep:
        raise InvalidValue(f"peer {text.strip()!r} is not of the form AE@host:port")
    ae_title = validate_ae_title(ae_part)
    host, sep, port_text = address.rpartition(":")
    if not sep or not host:
        raise InvalidValue(f"peer {text.strip()!r} is not of the form AE@host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidValue(f"peer {text.strip()!r} has an invalid port {port_text!r}")
    return Peer(ae_title=ae_title, host=host, port=int(port_text))


def parse_peer_list(text: str) -> list[Peer]:
    """Parse a comma-separated list of peers; duplicates of one AE title are refused."""
    peers = [parse_peer(part) for part in text.split(",") if part.strip()]
    seen: set[str] = set()
    for peer in peers:
        if peer.ae_title in seen:
            raise InvalidValue(f"peer AE title {peer.ae_title!r} is listed twice")
        seen.add(peer.ae_title)
    return peers
