"""What the C-MOVE and C-GET handlers hand to pynetdicom's retrieve loops
(``QueryRetrieveServiceClass._move_scp`` / ``_get_scp``), so that its counts,
its Failed SOP Instance UID List and the bytes on the wire are right.

pynetdicom announces the number of sub-operations, then takes one data set per
sub-operation from the handler, sends it with ``Association.send_c_store`` and
counts the result. Three things are added here:

- **every instance goes through the loop**, those the node cannot send too
  (:class:`Unsendable`): its ``send_c_store`` raises at once, and pynetdicom
  counts that sub-operation failed, lists its UID and decrements the remaining
  count. An instance left out instead stayed "remaining": the final response
  said sub-operations remained (pynetdicom reuses its last Pending message) and
  a Cancel response counted failed ones as remaining (PS3.4 C.4.2.3.1,
  C.4.3.3.1). pynetdicom's two log lines for such a deliberate failure are
  dropped (:func:`deliberately_failing`): the node logs one line per retrieve.
- **an instance whose stored syntax was accepted is sent from its file**
  (:class:`StoredFile`): pynetdicom streams the data set bytes after the file
  meta from disk (``_config.STORE_SEND_CHUNKED_DATASET``, set in
  ``scp/server.py``), so they are the stored bytes (pydicom does not re-encode
  them: a VR UN element stays UN, a Deflated data set stays as deflated) and
  no decoded copy is held in memory. pynetdicom's loops take only a Dataset
  from the handler, so the association's class is switched to
  :class:`SubOperationAssociation`, whose ``send_c_store`` sends a
  :class:`StoredFile` by its path (the way ``scp/polling.py`` switches the
  class of the DUL provider; ``tests/unit/test_sub_operations.py`` guards the
  pynetdicom internals used).
- **the final response's Error Comment** (:func:`comment_final_response`):
  pynetdicom builds the final C-MOVE/C-GET response itself once the handler
  has given every sub-operation; the node's summary of the failures is added
  to it as it is sent (EVT_DIMSE_SENT is triggered before the message is
  encoded).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dsutils import encode
from pynetdicom.events import Event

from dicom_node.scp import status

# A UID under the node's root (2.25, PS3.5 B.2) that is no transfer syntax: no
# peer can have accepted it, so even pynetdicom's own send_c_store fails an
# Unsendable before anything goes on the wire.
NOT_A_TRANSFER_SYNTAX = "2.25.268029700841588903870018619107892711502"
C_GET_RSP, C_MOVE_RSP = 0x8010, 0x8021  # Command Field (PS3.7 E.1)
_NOT_FINAL = {status.PENDING, status.PENDING_WARNING, status.CANCEL}


class NotSent(Exception):
    """An :class:`Unsendable` given to ``send_c_store``."""


class StoredFile(Dataset):
    """A stored instance sent as its file's data set bytes (only the file meta
    is read: pynetdicom takes the C-STORE request's UIDs and the transfer
    syntax from it)."""

    def __init__(self, path: Path, meta: Dataset) -> None:
        super().__init__()
        self.path = path
        self.file_meta = FileMetaDataset(meta)
        self.SOPClassUID = meta.MediaStorageSOPClassUID
        self.SOPInstanceUID = meta.MediaStorageSOPInstanceUID

    @classmethod
    def of(
        cls, path: Path, *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str
    ) -> StoredFile | None:
        """The file at ``path`` when its file meta names the instance as its
        data set does (the index's values); None when it does not (a file
        written by another application, stored unchanged, may name another
        instance there: it is then sent decoded, under its data set's UIDs).
        Raises what pydicom raises on a missing or damaged file."""
        meta = read_file_meta_info(path)
        named = (
            str(meta.get("MediaStorageSOPClassUID", "")),
            str(meta.get("MediaStorageSOPInstanceUID", "")),
            str(meta.get("TransferSyntaxUID", "")),
        )
        if named != (sop_class_uid, sop_instance_uid, transfer_syntax_uid):
            return None
        return cls(path, meta)


class Unsendable(Dataset):
    """An instance the node does not send: its sub-operation fails (``reason``
    is the node's, for the audit)."""

    def __init__(self, sop_class_uid: str, sop_instance_uid: str, reason: str) -> None:
        super().__init__()
        self.reason = reason
        self.SOPClassUID = sop_class_uid
        self.SOPInstanceUID = sop_instance_uid
        self.file_meta = FileMetaDataset()
        self.file_meta.TransferSyntaxUID = UID(NOT_A_TRANSFER_SYNTAX)


class SubOperationAssociation(Association):
    """An association the node's C-STORE sub-operations go out on. Adds no
    state: only ``send_c_store`` differs."""

    def send_c_store(self, dataset: str | Path | Dataset, *args: Any, **kwargs: Any) -> Dataset:
        if isinstance(dataset, Unsendable):
            raise NotSent(dataset.reason)
        if isinstance(dataset, StoredFile):
            # streamed from the file (STORE_SEND_CHUNKED_DATASET)
            return super().send_c_store(dataset.path, *args, **kwargs)
        return super().send_c_store(dataset, *args, **kwargs)


def sends_stored_files(assoc: Association) -> None:
    """Switch ``assoc`` (the destination association of a C-MOVE, the
    requester's of a C-GET) to :class:`SubOperationAssociation`."""
    if type(assoc) is Association:
        assoc.__class__ = SubOperationAssociation
    elif not isinstance(assoc, SubOperationAssociation):
        raise TypeError(f"unexpected association class {type(assoc).__name__}")


# ------------------------------------------------------------------ log lines

_deliberate = threading.local()


@contextmanager
def deliberately_failing() -> Iterator[None]:
    """Around the handler's yield of an :class:`Unsendable`: pynetdicom's
    warning and error lines for that sub-operation (on this thread, the
    association's) are dropped; the node logs the retrieve's failures itself."""
    _deliberate.active = True
    try:
        yield
    finally:
        _deliberate.active = False


class _DeliberateFailureFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING or not getattr(_deliberate, "active", False)


DELIBERATE_FAILURE_FILTER = _DeliberateFailureFilter()


def install_log_filter() -> None:
    """Once per process (``scp/server.py configure_pynetdicom``)."""
    logging.getLogger("pynetdicom.service_class").addFilter(DELIBERATE_FAILURE_FILTER)


# ------------------------------------------------------------- Error Comment

_lock = threading.Lock()
# requester association -> {Message ID of its C-MOVE/C-GET: Error Comment}
_comments: weakref.WeakKeyDictionary[Association, dict[int, str]] = weakref.WeakKeyDictionary()


def comment_final_response(assoc: Association, message_id: int, comment: str) -> None:
    """Have the final response pynetdicom sends for request ``message_id`` on
    ``assoc`` carry ``comment`` as its Error Comment (0000,0902), LO."""
    with _lock:
        _comments.setdefault(assoc, {})[message_id] = comment[: status.ERROR_COMMENT_MAX]
    assoc.bind(evt.EVT_DIMSE_SENT, _add_comment)  # once: pynetdicom ignores a second bind


def _add_comment(event: Event) -> None:
    command = event.message.command_set
    if command is None or command.get("CommandField") not in (C_GET_RSP, C_MOVE_RSP):
        return
    if command.get("Status") in _NOT_FINAL:
        return
    with _lock:
        comment = _comments.get(event.assoc, {}).pop(
            int(command.get("MessageIDBeingRespondedTo", -1)), None
        )
    if not comment:
        return
    command.ErrorComment = comment
    # the Command Group Length pynetdicom computed no longer counts it (PS3.7 6.3.1)
    del command.CommandGroupLength
    command.CommandGroupLength = len(encode(command, True, True) or b"")
