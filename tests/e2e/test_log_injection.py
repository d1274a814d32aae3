"""Log injection (issue 13, finding 11): a peer's line break never forges a record.

The A-ASSOCIATE-RQ is written byte by byte over a plain socket: pynetdicom as a
client would log (and validate) the hostile values itself, in this process.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import struct
from collections.abc import Callable, Iterator

import pytest

from dicom_node.logging_setup import TEXT_CONTINUATION, configure_logging
from dicom_node.node import Node
from tests.builders import VERIFICATION, associate_rq
from tests.support import wait_for

FORGED_RECORD = "1999-01-01 00:00:00,000 ERROR dicom_node.api: admin signed in"
RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


@pytest.fixture
def backend() -> str:
    """Logging does not depend on the database: SQLite only."""
    return "sqlite"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    names = ("pynetdicom", "pydicom", "py.warnings")
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)
    logging.captureWarnings(False)


def send_raw(port: int, pdu: bytes) -> int | None:
    """Send the PDU; the type of the PDU answered (2 = AC, 3 = RJ, 7 = abort), if any.
    An accepted association is released."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(pdu)
        header = _read(sock, 6)
        if len(header) < 6:
            return None
        kind, _, length = struct.unpack(">BBI", header)
        _read(sock, length)
        if kind == 0x02:
            sock.sendall(struct.pack(">BBI", 0x05, 0, 4) + b"\x00" * 4)  # A-RELEASE-RQ
            _read(sock, 10)
        return int(kind)


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


class Output:
    """What the configured handler wrote to stderr so far."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self.text = ""

    def has(self, needle: str) -> bool:
        self.text += self._capsys.readouterr().err
        return needle in self.text


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_line_breaks_in_a_uid_and_an_ae_title_forge_no_log_record(
    fmt: str,
    make_node: Callable[..., Node],
    restore_logging: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", fmt=fmt)
    node: Node = make_node()
    output = Output(capsys)
    # a UID of up to 64 characters is accepted, with a warning quoting it (pynetdicom)
    uid = ("1.2\n" + FORGED_RECORD).encode()[:64]
    assert (
        send_raw(
            node.dicom_port,
            associate_rq(
                called=b"DICOM_NODE", calling=b"EVIL", abstract_syntaxes=[uid, VERIFICATION]
            ),
        )
        == 0x02
    )
    assert wait_for(lambda: output.has("association accepted from EVIL"))
    assert "Non-conformant" in output.text  # pynetdicom did log the value
    # an AE title with a line break is refused while decoding, quoted in the error
    send_raw(
        node.dicom_port,
        associate_rq(
            called=b"DICOM_NODE", calling=b"E\n1999-01-01", abstract_syntaxes=[VERIFICATION]
        ),
    )
    assert wait_for(lambda: output.has("Invalid 'Calling AE Title'"))
    # and an ANSI escape sequence in a called AE title
    send_raw(
        node.dicom_port,
        associate_rq(called=b"\x1b[2J\x1b[H", calling=b"EVIL", abstract_syntaxes=[VERIFICATION]),
    )
    assert wait_for(lambda: output.has("Called AE Title"))

    lines = output.text.splitlines()
    assert not any(line.startswith("1999-01-01") for line in lines)
    assert "\x1b" not in output.text and "\r" not in output.text
    if fmt == "json":
        messages = [json.loads(line)["message"] for line in lines]
        assert all("\n" not in message and "\x1b" not in message for message in messages)
    else:
        for line in lines:
            assert RECORD_START.match(line) or line.startswith(TEXT_CONTINUATION), line
        messages = lines
    quoted = [message for message in messages if "Non-conformant" in message]
    assert quoted and all("\\n1999-01-01" in message for message in quoted)
