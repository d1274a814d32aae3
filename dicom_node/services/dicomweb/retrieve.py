"""Instances as Part 10 parts for WADO-RS study, series and instance retrieve.

Each instance goes in the first of the client's transfer syntaxes
(negotiation.dicom_syntaxes, best first) that the node can give it in: as
stored where the client names none, ``*`` or the stored one; else transcoded
to a syntax the Transcoder may produce (uncompressed, or a lossless one with an
encoder here; never a lossy one, never from a syntax without a decoder).

As stored, the stored file is streamed as it is, a chunk at a time (byte for
byte what was received, file meta included). Transcoded, the instance is read,
transcoded and written to memory when its turn comes (one instance at a time).

A single instance that cannot be given in any accepted syntax, or whose
transcoding fails, is a 406 before anything is sent. In a study or series,
instances that cannot be given are left out: those known before the answer
starts (no route) are counted in a Warning header; one whose transcoding fails
(a damaged instance) is left out with a log line only (the headers are gone).
Nothing acceptable at all: 406. A busy Transcoder (TranscoderBusy) is not the
instance's fault and must not pass for a complete answer: the first instance to
transcode is transcoded before the answer starts (busy: 503 with Retry-After);
busy later, the stream is cut short without its closing boundary (logged), so
the client sees an error, not a study with instances missing.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmwrite
from pydicom.dataset import Dataset

from dicom_node.domain.part10_source import read_stored_instance
from dicom_node.domain.transcode import (
    TranscodeError,
    Transcoder,
    TranscoderBusy,
    can_decode,
    can_encode,
    is_lossy,
)
from dicom_node.services.dicomweb.instances import StoredInstance
from dicom_node.services.dicomweb.multipart import Part, PartUnavailable, bytes_chunks, file_chunks
from dicom_node.services.dicomweb.negotiation import AS_STORED, DICOM, NotAcceptable
from dicom_node.storage import FileStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Plan:
    """What a retrieve sends: the instances (for the audit) and their parts."""

    instances: list[StoredInstance]
    parts: list[Part]
    left_out: int  # instances no accepted syntax can carry


def route(stored: str, syntaxes: list[str]) -> str | None:
    """``AS_STORED``, a syntax to transcode to, or None (no accepted syntax)."""
    for syntax in syntaxes:
        if syntax in (AS_STORED, stored):
            return AS_STORED
        if not is_lossy(syntax) and can_encode(syntax) and can_decode(stored):
            return syntax
    return None


def plan_retrieve(
    instances: list[StoredInstance],
    syntaxes: list[str],
    store: FileStore,
    transcoder: Transcoder,
    *,
    max_dataset_bytes: int,
    single: bool,
) -> Plan:
    """The parts of a retrieve. ``single``: one instance, transcoded (if need be)
    now, so that a failure is a 406 rather than an empty answer."""
    sent: list[StoredInstance] = []
    parts: list[Part] = []
    eager = True  # the first transcoding of a study or series: before the answer starts
    for instance in instances:
        target = route(instance.transfer_syntax_uid, syntaxes)
        if target is None:
            continue
        path = store.absolute(instance.file_path)
        if target == AS_STORED:
            content_type = f"{DICOM}; transfer-syntax={instance.transfer_syntax_uid}"
            parts.append(Part(content_type, _stored(path)))
        else:
            produce = _transcoded(path, target, transcoder, max_dataset_bytes)
            if single:
                try:
                    data = produce()
                except TranscoderBusy:
                    raise  # not the instance's fault: 503, try again
                except TranscodeError as exc:
                    raise NotAcceptable(exc.reason) from None
                parts.append(Part(f"{DICOM}; transfer-syntax={target}", _ready(data)))
            elif eager:
                eager = False
                parts.append(Part(f"{DICOM}; transfer-syntax={target}", _early(produce)))
            else:
                parts.append(Part(f"{DICOM}; transfer-syntax={target}", _late(produce)))
        sent.append(instance)
    if not parts:
        raise NotAcceptable("no instance can be given in an accepted transfer syntax")
    return Plan(sent, parts, len(instances) - len(sent))


def _stored(path: Path) -> Callable[[], Iterator[bytes]]:
    def chunks() -> Iterator[bytes]:
        try:
            yield from file_chunks(path)
        except OSError as exc:
            log.error("stored instance unreadable for a retrieve: %s", type(exc).__name__)
            raise PartUnavailable from None

    return chunks


def _transcoded(
    path: Path, target: str, transcoder: Transcoder, max_dataset_bytes: int
) -> Callable[[], bytes]:
    def produce() -> bytes:
        try:
            dataset = read_stored_instance(path, max_dataset_bytes=max_dataset_bytes)
        except Exception as exc:  # missing, too large, garbage: pydicom raises many kinds
            raise TranscodeError(f"stored instance unreadable: {type(exc).__name__}") from None
        return _part10(transcoder.transcode(dataset, target))

    return produce


def _ready(data: bytes) -> Callable[[], Iterator[bytes]]:
    return lambda: bytes_chunks(data)


def _early(produce: Callable[[], bytes]) -> Callable[[], Iterator[bytes]]:
    """Transcoded now: TranscoderBusy is raised before the answer starts (503);
    a damaged instance is left out when its turn comes, as in ``_late``."""
    try:
        data = produce()
    except TranscoderBusy:
        raise
    except TranscodeError as exc:
        reason = exc.reason

        def left_out() -> Iterator[bytes]:
            log.warning("instance left out of a WADO-RS answer: %s", reason)
            raise PartUnavailable
            yield b""  # a generator, as the other parts

        return left_out
    return _ready(data)


def _late(produce: Callable[[], bytes]) -> Callable[[], Iterator[bytes]]:
    def chunks() -> Iterator[bytes]:
        try:
            data = produce()
        except TranscoderBusy as exc:
            # the answer has started: cut it short (no closing boundary) rather
            # than let a study with instances missing pass for a complete one
            log.error("WADO-RS answer cut short, transcoding capacity busy: %s", exc.reason)
            raise
        except TranscodeError as exc:
            log.warning("instance left out of a WADO-RS answer: %s", exc.reason)
            raise PartUnavailable from None
        yield from bytes_chunks(data)

    return chunks


def _part10(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    try:
        dcmwrite(buffer, dataset, enforce_file_format=True)
    except Exception as exc:  # a value pydicom cannot write in the target encoding
        raise TranscodeError(f"transcoded instance not writable: {type(exc).__name__}") from None
    return buffer.getvalue()
