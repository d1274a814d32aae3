"""A private network namespace for the interop tests.

Orthanc and DCMTK's storescp listen on every interface and have no option to
bind loopback only. So every process of an interop scenario runs in a network
namespace of its own, holding nothing but a loopback interface: nothing there
is reachable from the machine's network, and fixed ports cannot clash with
anything outside (each pytest process has its own namespace).

A holder process (``unshare -n`` then ``sleep``) keeps the namespace alive; the
test thread joins it with setns(2) for the duration of a test or a fixture
(the network namespace is per thread on Linux), so the processes it starts
(subprocess forks inherit the calling thread's namespaces), the sockets it
opens and the threads it creates are all inside. Leaving restores the
thread's previous namespace, so other tests in the same pytest process are
unaffected.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000  # <sched.h>

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns(CLONE_NEWNET): {os.strerror(errno)}")


def missing_prerequisite() -> str | None:
    """Why a private network namespace cannot be made here, or None."""
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (util-linux, iproute2)"
    if os.geteuid() != 0:
        return "a private network namespace needs root (CAP_SYS_ADMIN)"
    return None


class NetNamespace:
    """A network namespace with loopback up, alive until ``close``."""

    def __init__(self) -> None:
        self._holder = subprocess.Popen(
            [
                "unshare",
                "-n",
                "--",
                "sh",
                "-c",
                "ip link set lo up && echo up && exec sleep infinity",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self._holder.stdout is not None
        # blocks until loopback is up, or until sh exits (then the line is empty)
        if self._holder.stdout.readline().strip() != "up":
            self._holder.wait(timeout=10)
            assert self._holder.stderr is not None
            raise RuntimeError(
                f"could not make a network namespace: {self._holder.stderr.read().strip()}"
            )
        self._fd = os.open(f"/proc/{self._holder.pid}/ns/net", os.O_RDONLY)

    @property
    def holder_pid(self) -> int:
        """For ``nsenter --net=/proc/<pid>/ns/net`` (diagnostics by hand)."""
        return self._holder.pid

    @contextmanager
    def entered(self) -> Iterator[None]:
        """The calling thread in the namespace until the block ends."""
        previous = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            _setns(self._fd)
            try:
                yield
            finally:
                _setns(previous)
        finally:
            os.close(previous)

    def close(self) -> None:
        os.close(self._fd)
        self._holder.send_signal(signal.SIGKILL)
        self._holder.wait(timeout=10)
        for pipe in (self._holder.stdout, self._holder.stderr):
            if pipe is not None:
                pipe.close()
