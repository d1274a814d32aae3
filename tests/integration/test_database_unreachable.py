"""A PostgreSQL host that accepts TCP but never answers (a hung server, a
half-open firewall) must fail a connection attempt, not hang it for ever: the
SCP's refusal (0xA700) depends on it."""

from __future__ import annotations

import socket
import time

import pytest
from sqlalchemy.exc import OperationalError

from dicom_node.db.engine import POSTGRES_CONNECT_ARGS, make_engine


def test_a_database_host_that_never_answers_fails_the_connection_within_the_timeout() -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nobody speaks
    port = silent.getsockname()[1]
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres")
    started = time.monotonic()
    try:
        with pytest.raises(OperationalError), engine.connect():
            pass
    finally:
        engine.dispose()
        silent.close()
    took = time.monotonic() - started
    assert took < POSTGRES_CONNECT_ARGS["connect_timeout"] + 5, took
