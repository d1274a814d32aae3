"""Log flood by an unauthenticated peer (issue 13): connections that each send an
A-ASSOCIATE-RQ whose calling AE title holds a control character wrote ~16 lines
each (pynetdicom's ERROR quoting the title, the node's "undecodable PDU"
warning and its 14-line traceback), as fast as the peer could connect. Now the
node's lines are rate-limited per kind and peer address, and pynetdicom's per
logger and message template, through the handler ``configure_logging`` sets up.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.logging_setup import LibraryFlood, configure_logging
from dicom_node.node import Node
from tests.builders import VERIFICATION, associate_rq
from tests.support import wait_for

CONNECTIONS = 100


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


def _attack(port: int, pdu: bytes, source: str) -> None:
    """As /tmp/review-dicom/flood.py: send, wait for the node to answer or close.
    ``source``: the peer's address (the node's own lines are limited per address,
    per process: a test of its own gets an address of its own)."""
    with socket.create_connection(
        ("127.0.0.1", port), timeout=10, source_address=(source, 0)
    ) as sock:
        sock.sendall(pdu)
        while sock.recv(4096):
            pass


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_hundred_bad_requests_write_a_bounded_number_of_lines(
    fmt: str,
    make_node: Callable[..., Node],
    restore_logging: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", fmt=fmt)
    node: Node = make_node()
    capsys.readouterr()  # the start-up lines
    pdu = associate_rq(called=b"DICOM_NODE", calling=b"AB\rX", abstract_syntaxes=[VERIFICATION])
    source = "127.0.9.2" if fmt == "text" else "127.0.9.3"
    for _ in range(CONNECTIONS):
        _attack(node.dicom_port, pdu, source)
    flood = capsys.readouterr().err
    lines = flood.splitlines()
    assert "Invalid 'Calling AE Title'" in flood  # pynetdicom's line, once at least
    assert "undecodable PDU of type 0x01" in flood
    assert "Traceback" not in flood
    assert len(lines) < 20, flood

    # a legitimate association is still logged
    ae = AE(ae_title="GOOD_AE")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="DICOM_NODE")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
    seen = ""

    def logged() -> bool:
        nonlocal seen
        seen += capsys.readouterr().err
        return "association accepted from GOOD_AE" in seen

    assert wait_for(logged)


def test_library_lines_first_at_once_then_one_per_window_with_the_count() -> None:
    """The filter alone, on a clock of its own: values in the message do not make
    new templates; counts are carried by the template's next line or, if it
    does not come back, by the next library line of any template."""
    now = [0.0]
    flood = LibraryFlood(window_seconds=10, max_templates=4, clock=lambda: now[0])
    written: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            written.append(record.getMessage())

    handler = Collect()
    handler.addFilter(flood)
    logger = logging.getLogger("pynetdicom.test_flood")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        for number in range(30):
            logger.error(f"Invalid 'Calling AE Title' value 'AB{number}' - must not")
        assert written == ["Invalid 'Calling AE Title' value 'AB0' - must not"]
        now[0] = 11
        logger.error("Invalid 'Calling AE Title' value 'ZZ' - must not")
        logger.error("Invalid 'Called AE Title' value 'ZZ' - must not")  # another field
        logger.warning("Non-conformant 'SOP Class UID' value '1.2'")
        logger.warning("Non-conformant 'SOP Class UID' value '1.3'")
        now[0] = 30
        logger.error("Unknown PDU type received '0x%02X'", 9)  # another template
        assert written == [
            "Invalid 'Calling AE Title' value 'AB0' - must not",
            "Invalid 'Calling AE Title' value 'ZZ' - must not (29 more like this in the last 11 s)",
            "Invalid 'Called AE Title' value 'ZZ' - must not",
            "Non-conformant 'SOP Class UID' value '1.2'",
            # its template did not come back: the next line of another one writes it
            "Non-conformant 'SOP Class UID' value '1.3' (0 more like this in the last 19 s)",
            "Unknown PDU type received '0x09'",
        ]
        # bounded: past max_templates, further templates share one window
        for number in range(50):
            logger.error(f"template {'x' * number} of its own")
        assert len(written) == 9
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
