"""The audit of one image's reads: frames, bulk data, a rendered image.

A viewer asks for each image of a series in turn, and again as the reader
scrolls back: a 500-image CT read once is 500 requests, each a disclosure of
the same study to the same person. One 110103 per request would be 500 rows
(and 500 writes taking SQLite's one writer lock from C-STORE ingest) for no
more knowledge. So, as for the polled worklist (api/listing_audit.py): the
first such read of a study by a user from an address, per kind of read, is
audited at once, before the answer's first byte; the same reads within
``IMAGE_READ_AUDIT_INTERVAL`` are counted, and the count goes in the next
event of that key (``repeats_since_last_event``). Whole-study, whole-series
and metadata retrievals stay one event per request.
"""

from __future__ import annotations

from fastapi import Request

from api.deps import ApiContext, client_address
from api.listing_audit import RepeatedListingAudit
from dicom_node.domain.permissions import Principal
from dicom_node.services.dicomweb.instances import StoredInstance, record_instances_accessed

# seconds during which repeated reads of one study's images by one user from
# one address are counted into the next event instead of each writing one
IMAGE_READ_AUDIT_INTERVAL = 300.0


def image_reads() -> RepeatedListingAudit:
    """The per-process memory of which image reads were audited when."""
    return RepeatedListingAudit(IMAGE_READ_AUDIT_INTERVAL)


def audit_image_read(
    request: Request,
    context: ApiContext,
    user: Principal,
    instance: StoredInstance,
    action: str,
) -> None:
    """Record (or count) one read of ``instance``'s images; see the module."""
    reads: RepeatedListingAudit = request.app.state.image_reads
    address = client_address(request)
    key = (user.user_id, address, instance.study_pk, action)
    repeats = reads.due(key)
    if repeats is None:
        return
    try:
        record_instances_accessed(
            context.db,
            user,
            [instance],
            action=action,
            source_address=address,
            details={"repeats_since_last_event": repeats} if repeats else None,
        )
    except BaseException:
        reads.not_written(key, repeats)
        raise
