"""DICOMweb WADO-RS (PS3.18 10.4): studies, series and instances as Part 10
files, their metadata (DICOM JSON with BulkDataURIs), frames and bulk data.
Rendered and thumbnail resources are in rendered.py.

Every route reads within the visibility rule (services/dicomweb/instances.py:
a study the caller may not see is 404 as if missing), validates the UIDs and
lists of the URL (400), picks what it sends from Accept in one place
(services/dicomweb/negotiation.py; 406 when nothing acceptable can be made),
and commits one 110103 per study read (with the instance count) before the
first byte goes out; one image's frames and bulk data, which a viewer asks for
image after image, are audited once per study, user and address in an
interval, with the repeats counted (image_audit.py). Answers are streamed: a
study goes out a few megabytes at a time (services/dicomweb/multipart.py),
metadata an instance at a time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import Response, StreamingResponse

from api.deps import Context, Store, TranscoderDep, client_address, require
from api.routes.dicomweb.image_audit import audit_image_read
from api.routes.dicomweb.urls import service_url as dicomweb_url
from api.schemas.common import AUTH_ERRORS, NOT_FOUND, ErrorResponse
from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.domain.transcode import TranscodeError, frame_count
from dicom_node.services.dicomweb.frames import frame_parts, parse_frame_list
from dicom_node.services.dicomweb.instances import (
    StoredInstance,
    record_instances_accessed,
    visible_instances,
)
from dicom_node.services.dicomweb.metadata import (
    StoredHeader,
    check_tag_path,
    element_at,
    instance_json,
    is_pixel_path,
    little_endian_value,
    read_header,
)
from dicom_node.services.dicomweb.multipart import (
    Part,
    bytes_chunks,
    content_type,
    gathered,
    new_boundary,
    stream_parts,
)
from dicom_node.services.dicomweb.negotiation import (
    DICOM,
    OCTET_STREAM,
    MediaRange,
    NotAcceptable,
    accepts_json,
    accepts_octet_stream,
    dicom_syntaxes,
    frame_form,
    parse_accept,
)
from dicom_node.services.dicomweb.retrieve import plan_retrieve
from dicom_node.storage import FileStore

log = logging.getLogger(__name__)

router = APIRouter()

Reader = Annotated[Principal, Depends(require(Permission.STUDIES_READ))]
# Patterns documented for clients and the OpenAPI checks (values they surely
# accept), not enforced by FastAPI (which would answer 422): the values are read
# by the routes, and a malformed one is 400 as PS3.18 asks.
_UID = r"^[12](\.[1-9][0-9]{0,5}){1,6}$"
StudyUID = Annotated[
    str, Path(description="Study Instance UID", json_schema_extra={"pattern": _UID})
]
SeriesUID = Annotated[
    str, Path(description="Series Instance UID", json_schema_extra={"pattern": _UID})
]
InstanceUID = Annotated[
    str, Path(description="SOP Instance UID", json_schema_extra={"pattern": _UID})
]
FrameList = Annotated[
    str,
    Path(
        description="1-based frame numbers, comma separated",
        json_schema_extra={"pattern": r"^[1-9][0-9]{0,3}(,[1-9][0-9]{0,3}){0,3}$"},
    ),
]
TagPath = Annotated[
    str,
    Path(
        description="TTTTTTTT (hex tag), within sequences TTTTTTTT/item/TTTTTTTT",
        json_schema_extra={"pattern": r"^[0-9A-F]{8}$"},
    ),
]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "a malformed UID, frame list or tag path"},
    **AUTH_ERRORS,
    **NOT_FOUND,
    406: {"model": ErrorResponse, "description": "nothing the Accept header allows can be made"},
    503: {
        "model": ErrorResponse,
        "description": "every transcoding place stayed busy (settings.max_concurrent_transcodes): "
        "try again after Retry-After",
    },
}
_BINARY = {"schema": {"type": "string", "format": "binary"}}


def _responses(what: str, media_type: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"description": what, "content": {media_type: _BINARY}}, **_ERRORS}


_MULTIPART = "multipart/related"
_JSON = "application/dicom+json"
WARNING_AGENT = "dicom-node"


# ------------------------------------------------------------------ helpers


def _accept(request: Request) -> list[MediaRange]:
    values = request.headers.getlist("accept")
    return parse_accept(", ".join(values) if values else None)


def _not_acceptable(reason: str) -> HTTPException:
    return HTTPException(406, reason)


def _visible(
    context: Context,
    user: Principal,
    study: str,
    series: str | None = None,
    sop: str | None = None,
) -> list[StoredInstance]:
    """The instances named, within the visibility rule; 400 for a malformed UID."""
    try:
        with context.db.read() as session:
            return visible_instances(session, user, study_uid=study, series_uid=series, sop_uid=sop)
    except InvalidValue as exc:
        raise HTTPException(400, str(exc)) from None


def _audit(
    request: Request,
    context: Context,
    user: Principal,
    instances: list[StoredInstance],
    action: str,
) -> None:
    record_instances_accessed(
        context.db, user, instances, action=action, source_address=client_address(request)
    )


def _header(store: FileStore, instance: StoredInstance, max_dataset_bytes: int) -> StoredHeader:
    try:
        return read_header(store.absolute(instance.file_path), max_dataset_bytes=max_dataset_bytes)
    except Exception as exc:  # missing, truncated, garbage: pydicom raises many kinds
        # a held instance whose file cannot be read is the node's fault: 500
        log.error("stored instance unreadable for WADO-RS: %s", type(exc).__name__)
        raise RuntimeError("stored instance unreadable") from None


def _multipart(
    parts: list[Part], part_type: str, headers: dict[str, str] | None = None
) -> Response:
    boundary = new_boundary()
    return StreamingResponse(
        gathered(stream_parts(parts, boundary)),
        media_type=content_type(part_type, boundary),
        headers=headers,
    )


def _instance_url(request: Request, instance: StoredInstance) -> str:
    return (
        f"{dicomweb_url(request)}/studies/{instance.study_instance_uid}"
        f"/series/{instance.series_instance_uid}/instances/{instance.sop_instance_uid}"
    )


# ------------------------------------------------------------------ retrieve


def _retrieve(
    request: Request,
    context: Context,
    store: Store,
    transcoder: TranscoderDep,
    user: Principal,
    study: str,
    series: str | None = None,
    sop: str | None = None,
) -> Response:
    syntaxes = dicom_syntaxes(_accept(request))
    if not syntaxes:
        raise _not_acceptable("WADO-RS gives instances as multipart/related application/dicom")
    instances = _visible(context, user, study, series, sop)
    try:
        plan = plan_retrieve(
            instances,
            syntaxes,
            store,
            transcoder,
            max_dataset_bytes=context.settings.max_dataset_bytes,
            single=sop is not None,
        )
    except NotAcceptable as exc:
        raise _not_acceptable(f"not in an accepted transfer syntax: {exc}") from None
    _audit(request, context, user, plan.instances, "dicomweb_retrieve")
    headers = {}
    if plan.left_out:
        headers["Warning"] = (
            f'299 {WARNING_AGENT} "{plan.left_out} instance(s) left out: '
            'none of the accepted transfer syntaxes can carry them"'
        )
    return _multipart(plan.parts, DICOM, headers)


_RETRIEVE = _responses("the instances, one Part 10 file a part", _MULTIPART)


@router.get("/studies/{study}", responses=_RETRIEVE, summary="WADO-RS: retrieve a study")
def retrieve_study(
    request: Request,
    context: Context,
    store: Store,
    transcoder: TranscoderDep,
    user: Reader,
    study: StudyUID,
) -> Response:
    return _retrieve(request, context, store, transcoder, user, study)


@router.get(
    "/studies/{study}/series/{series}", responses=_RETRIEVE, summary="WADO-RS: retrieve a series"
)
def retrieve_series(
    request: Request,
    context: Context,
    store: Store,
    transcoder: TranscoderDep,
    user: Reader,
    study: StudyUID,
    series: SeriesUID,
) -> Response:
    return _retrieve(request, context, store, transcoder, user, study, series)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}",
    responses=_RETRIEVE,
    summary="WADO-RS: retrieve an instance",
)
def retrieve_instance(
    request: Request,
    context: Context,
    store: Store,
    transcoder: TranscoderDep,
    user: Reader,
    study: StudyUID,
    series: SeriesUID,
    instance: InstanceUID,
) -> Response:
    return _retrieve(request, context, store, transcoder, user, study, series, instance)


# ------------------------------------------------------------------ metadata


def _metadata(
    request: Request,
    context: Context,
    store: Store,
    user: Principal,
    study: str,
    series: str | None = None,
    sop: str | None = None,
) -> Response:
    if not accepts_json(_accept(request)):
        raise _not_acceptable("WADO-RS metadata is application/dicom+json")
    instances = _visible(context, user, study, series, sop)
    _audit(request, context, user, instances, "dicomweb_metadata")
    urls = [_instance_url(request, instance) for instance in instances]
    limit = context.settings.max_dataset_bytes

    def body() -> Iterator[bytes]:
        yield b"["
        first = True
        for instance, url in zip(instances, urls, strict=True):
            try:
                header = read_header(store.absolute(instance.file_path), max_dataset_bytes=limit)
                model = instance_json(header, url)
            except Exception as exc:  # unreadable file: left out, logged (the answer is under way)
                log.error("instance left out of WADO-RS metadata: %s", type(exc).__name__)
                continue
            yield (b"" if first else b",") + json.dumps(model, separators=(",", ":")).encode()
            first = False
        yield b"]"

    return StreamingResponse(body(), media_type=_JSON)


_METADATA = _responses("DICOM JSON of each instance, bulk values as BulkDataURIs", _JSON)


@router.get("/studies/{study}/metadata", responses=_METADATA, summary="WADO-RS: study metadata")
def study_metadata(
    request: Request, context: Context, store: Store, user: Reader, study: StudyUID
) -> Response:
    return _metadata(request, context, store, user, study)


@router.get(
    "/studies/{study}/series/{series}/metadata",
    responses=_METADATA,
    summary="WADO-RS: series metadata",
)
def series_metadata(
    request: Request,
    context: Context,
    store: Store,
    user: Reader,
    study: StudyUID,
    series: SeriesUID,
) -> Response:
    return _metadata(request, context, store, user, study, series)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/metadata",
    responses=_METADATA,
    summary="WADO-RS: instance metadata",
)
def instance_metadata(
    request: Request,
    context: Context,
    store: Store,
    user: Reader,
    study: StudyUID,
    series: SeriesUID,
    instance: InstanceUID,
) -> Response:
    return _metadata(request, context, store, user, study, series, instance)


# ------------------------------------------------------------------ frames and bulk data


def _frames(
    request: Request,
    context: Context,
    store: Store,
    transcoder: TranscoderDep,
    user: Principal,
    ids: tuple[str, str, str],
    numbers: list[int] | None,
    action: str,
) -> Response:
    """Frames ``numbers`` (None: all of them, the pixel data bulk data)."""
    stored = _visible(context, user, *ids)[0]
    form = frame_form(_accept(request), stored.transfer_syntax_uid)
    if form is None:
        raise _not_acceptable(
            "frames go as application/octet-stream (uncompressed) or in their stored media type"
        )
    limit = context.settings.max_dataset_bytes
    header = _header(store, stored, limit)
    if numbers is None:
        if header.pixel is None:
            raise HTTPException(404, "the instance has no pixel data")
        try:
            numbers = list(range(1, frame_count(header.dataset) + 1))
        except TranscodeError as exc:
            raise _not_acceptable(exc.reason) from None
    path = store.absolute(stored.file_path)
    try:
        parts = frame_parts(header, path, numbers, form, transcoder, max_dataset_bytes=limit)
    except NotAcceptable as exc:
        raise _not_acceptable(str(exc)) from None
    audit_image_read(request, context, user, stored, action)
    part_type = form.content_type.split(";")[0]
    return _multipart(parts, part_type)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
    responses=_responses("the frames, one a part", _MULTIPART),
    summary="WADO-RS: frames of an instance",
)
def retrieve_frames(
    request: Request,
    context: Context,
    store: Store,
    transcoder: TranscoderDep,
    user: Reader,
    study: StudyUID,
    series: SeriesUID,
    instance: InstanceUID,
    frames: FrameList,
) -> Response:
    try:
        numbers = parse_frame_list(frames)
    except InvalidValue as exc:
        raise HTTPException(400, str(exc)) from None
    ids = (study, series, instance)
    return _frames(request, context, store, transcoder, user, ids, numbers, "dicomweb_frames")


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag_path:path}",
    responses=_responses("the value (pixel data: its frames, one a part)", _MULTIPART),
    summary="WADO-RS: bulk data of an instance",
)
def retrieve_bulkdata(
    request: Request,
    context: Context,
    store: Store,
    transcoder: TranscoderDep,
    user: Reader,
    study: StudyUID,
    series: SeriesUID,
    instance: InstanceUID,
    tag_path: TagPath,
) -> Response:
    try:
        path = check_tag_path(tag_path)
    except InvalidValue as exc:
        raise HTTPException(400, str(exc)) from None
    ids = (study, series, instance)
    if is_pixel_path(path):
        return _frames(request, context, store, transcoder, user, ids, None, "dicomweb_bulkdata")
    if not accepts_octet_stream(_accept(request)):
        raise _not_acceptable("bulk data goes as application/octet-stream")
    stored = _visible(context, user, *ids)[0]
    header = _header(store, stored, context.settings.max_dataset_bytes)
    element = element_at(header.dataset, path)
    if element is None:
        raise HTTPException(404, "no bulk data at that tag path")
    value = little_endian_value(element, header)
    audit_image_read(request, context, user, stored, "dicomweb_bulkdata")
    return _multipart([Part(OCTET_STREAM, lambda: bytes_chunks(value))], OCTET_STREAM)
