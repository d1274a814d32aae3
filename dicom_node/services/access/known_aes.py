"""Calling AE titles the node knows (``known_ae_required_for``, docs/security.md).

Known: listed in ``allowed_calling_aets`` or ``peers``, or the AE title of a
modality registered in the node (Modalities in the API) that is not retired.
A retired device is no longer expected to send; one in maintenance still is.
The registered titles are read at most once per ``ttl_seconds`` (10 s) and
process, so a guarded C-STORE costs no query: a modality registered, renamed or
retired through the API is known (or no longer) within that long.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from dicom_node.db.engine import Database
from dicom_node.db.models import Modality
from dicom_node.domain.enums import ModalityStatus
from dicom_node.log_limit import LogLimiter

log = logging.getLogger("dicom_node.scp")

CACHE_SECONDS = 10.0

_failures = LogLimiter(log)


def registered_ae_titles(db: Database) -> frozenset[str]:
    """AE titles of the registered modalities that are not retired."""
    with db.read() as session:
        titles = session.scalars(
            select(Modality.dicom_ae_title).where(Modality.status != ModalityStatus.RETIRED.value)
        )
        return frozenset(title.strip() for title in titles)


class KnownAeTitles:
    """``is_known(ae_title)``, configured titles first, then the cached registry."""

    def __init__(
        self,
        db: Database,
        configured: Iterable[str],
        *,
        ttl_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._configured = frozenset(title.strip() for title in configured)
        self._ttl = ttl_seconds
        self._clock = clock
        self._registered: frozenset[str] = frozenset()
        self._expires = -float("inf")
        self._lock = threading.Lock()

    def is_known(self, ae_title: str) -> bool:
        title = ae_title.strip()
        return bool(title) and (title in self._configured or title in self._registry())

    def _registry(self) -> frozenset[str]:
        with self._lock:
            now = self._clock()
            if now >= self._expires:
                # one thread reads, the others wait for it: once per ttl at most
                try:
                    self._registered = registered_ae_titles(self._db)
                except SQLAlchemyError as exc:
                    # the last titles read stay in use (none yet: only the configured
                    # ones are known); tried again after the ttl
                    _failures.error(
                        "registry", "cannot read the registered modalities: %s", type(exc).__name__
                    )
                self._expires = now + self._ttl
            return self._registered
