"""STOW-RS (PS3.18 10.5): ``POST /dicomweb/studies[/{study}]``.

The body is read as it arrives (``request.stream()``), parsed incrementally
(services/dicomweb/multipart_reader.py) and each part written to a temp file
in the store: memory holds a chunk, never the body. Parsing and writing run on
the thread pool in steps of about a MiB, storing runs there too: the event
loop never waits for a disk. Nothing is stored before the whole body has been
read and found well formed, so a refused request (400, 413) stored nothing.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from api.deps import ApiContext, Context, Store, client_address, require
from api.errors import error_response
from api.routes.dicomweb.urls import service_url as dicomweb_url
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.services.audit.subjects import user_actor
from dicom_node.services.dicomweb.multipart_reader import (
    MalformedMultipart,
    MultipartReader,
    Part,
    TooManyParts,
    parse_media_type,
)
from dicom_node.services.dicomweb.stow import (
    DICOM_MEDIA_TYPE,
    FILE_META_ALLOWANCE,
    MAX_PARTS,
    StowResult,
    record_stow,
    response_dataset,
    store_parts,
)
from dicom_node.services.ingest.instances import IngestPolicy
from dicom_node.storage import FileStore

router = APIRouter()

DICOM_JSON = "application/dicom+json"
# parse in steps of this much: one thread-pool hop per MiB, not per network chunk
_FEED_BYTES = 1024 * 1024
_UID = r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$"

Storer = Annotated[Principal, Depends(require(Permission.IMAGES_STORE))]
StudyUID = Annotated[
    str, Path(max_length=64, pattern=_UID, description="Study Instance UID the instances must have")
]

_ERROR: dict[str, Any] = {"content": {"application/json": {}}}
_RESPONSE_MODULE: dict[str, Any] = {
    "content": {DICOM_JSON: {"schema": {"type": "object"}}},
}
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "every instance stored (Store Instances Response Module)",
        **_RESPONSE_MODULE,
    },
    202: {
        "description": "some instances stored, others failed (FailedSOPSequence, FailureReason)",
        **_RESPONSE_MODULE,
    },
    400: {"description": "not a well-formed multipart/related body; nothing stored", **_ERROR},
    401: {"description": "not signed in", **_ERROR},
    403: {"description": "the role may not store images", **_ERROR},
    409: {
        "description": "no instance stored: every one failed (FailedSOPSequence, FailureReason)",
        **_RESPONSE_MODULE,
    },
    413: {
        "description": "over stow_max_request_bytes, or more parts than taken; nothing stored",
        **_ERROR,
    },
    415: {
        "description": 'not multipart/related; type="application/dicom"',
        **_ERROR,
    },
    422: {"description": "the Study Instance UID in the URL is not a UID", **_ERROR},
}
# The body is not declared as an OpenAPI requestBody: a multipart/related body
# needs its boundary in the Content-Type header, which a schema cannot state,
# and generators (schemathesis) have no serializer for it. The descriptions say it.
_BODY_HELP = (
    'The body: multipart/related; type="application/dicom"; boundary=..., each part a '
    "DICOM Part 10 file (PS3.18 10.5). Answers the Store Instances Response Module "
    "(application/dicom+json): 200 all stored, 202 some failed, 409 none stored."
)


@router.post(
    "/studies",
    summary="STOW-RS: store instances",
    description=_BODY_HELP,
    responses=RESPONSES,
    response_class=Response,
)
async def store_instances(
    request: Request, context: Context, store: Store, principal: Storer
) -> Response:
    return await _stow(request, context, store, principal, None)


@router.post(
    "/studies/{study}",
    summary="STOW-RS: store instances of one study",
    description=_BODY_HELP + " An instance of another study fails (FailureReason A900).",
    responses=RESPONSES,
    response_class=Response,
)
async def store_study_instances(
    study: StudyUID, request: Request, context: Context, store: Store, principal: Storer
) -> Response:
    return await _stow(request, context, store, principal, study)


async def _stow(
    request: Request,
    context: ApiContext,
    store: FileStore,
    principal: Principal,
    study: str | None,
) -> Response:
    settings = context.settings
    address = client_address(request)

    async def refuse(status: int, message: str) -> Response:
        actor = user_actor(principal, address)
        await run_in_threadpool(record_stow, context.db, actor, StowResult(), reason=message)
        return error_response(status, message)

    try:
        media_type, params = parse_media_type(request.headers.get("content-type", ""))
    except MalformedMultipart:
        return await refuse(415, "the Content-Type cannot be read")
    if media_type != "multipart/related":
        return await refuse(415, 'send multipart/related; type="application/dicom"')
    part_type = params.get("type", DICOM_MEDIA_TYPE).lower()
    if part_type != DICOM_MEDIA_TYPE:
        # metadata with bulk data (application/dicom+json, +xml) is not taken
        return await refuse(415, f"only {DICOM_MEDIA_TYPE} parts are taken, not {part_type}")
    boundary = params.get("boundary", "")
    if not 1 <= len(boundary) <= 70:
        return await refuse(400, "the multipart boundary is missing or over 70 characters")
    limit = settings.stow_max_request_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return await refuse(413, f"the request is over stow_max_request_bytes ({limit} bytes)")

    reader = MultipartReader(
        boundary.encode("latin-1"),
        scratch_dir=store.tmp,
        max_part_bytes=settings.max_dataset_bytes + FILE_META_ALLOWANCE,
        max_parts=MAX_PARTS,
    )
    parts: list[Part] = []
    handed_over = False
    try:
        try:
            parts = await _read(request, reader, limit)
        except _TooLarge:
            return await refuse(413, f"the request is over stow_max_request_bytes ({limit} bytes)")
        except TooManyParts:
            return await refuse(413, f"more than {MAX_PARTS} parts in one request")
        except MalformedMultipart as exc:
            return await refuse(400, f"malformed multipart body: {exc}")
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening; nothing stored
        if not parts:
            return await refuse(400, "the request holds no part")
        handed_over = True
        result = await run_in_threadpool(
            store_parts,
            context.db,
            store,
            parts,
            principal=principal,
            source_address=address,
            policy=IngestPolicy(
                settings.duplicate_policy, max_dataset_bytes=settings.max_dataset_bytes
            ),
            study_instance_uid=study,
        )
    finally:
        reader.close()
        if not handed_over:
            for part in parts:
                if part.path is not None:
                    part.path.unlink(missing_ok=True)
    base_url = dicomweb_url(request)
    body = response_dataset(result, base_url, study)
    return Response(
        json.dumps(body).encode(), status_code=result.http_status(), media_type=DICOM_JSON
    )


class _TooLarge(Exception):
    pass


async def _read(request: Request, reader: MultipartReader, limit: int) -> list[Part]:
    """The body through the reader, a MiB at a time on the thread pool; every
    part read, or an exception (the parts read so far are in ``reader``'s
    caller's hands only on success: on failure their files are removed here)."""
    parts: list[Part] = []
    pending = bytearray()
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise _TooLarge
            pending += chunk
            if len(pending) >= _FEED_BYTES:
                data, pending = bytes(pending), bytearray()
                parts += await run_in_threadpool(reader.feed, data)
        parts += await run_in_threadpool(reader.feed, bytes(pending))
        reader.finish()
    except BaseException:
        for part in parts:
            if part.path is not None:
                part.path.unlink(missing_ok=True)
        raise
    return parts
