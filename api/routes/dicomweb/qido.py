"""QIDO-RS (PS3.18 10.6): search for studies, series and instances.

The search itself is ``dicom_node/services/dicomweb/qido.py`` (C-FIND's
compiler and matching, the visibility rule, DICOM JSON); this module adapts
HTTP to it: the six resources, Accept negotiation (DICOM JSON only; an Accept
of only XML is 406), the Warning header, the 400 answer in the node's JSON
error shape for a query it cannot honour, and one 110112 Query audit event
per request, refused ones included.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response

from api.deps import Context, client_address, require
from api.errors import error_response
from api.routes.dicomweb.urls import service_url as dicomweb_url
from api.schemas.common import ErrorResponse
from dicom_node.db.query import ATTRIBUTES
from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.domain.query import Level
from dicom_node.services.dicomweb.negotiation import accepts_json, parse_accept
from dicom_node.services.dicomweb.qido import (
    INCLUDE_ALL,
    MAX_OFFSET,
    QidoResult,
    Resource,
    parse_query,
    record_qido,
    search,
)

router = APIRouter()

Reader = Annotated[Principal, Depends(require(Permission.STUDIES_READ))]
DICOM_JSON = "application/dicom+json"

# documented for clients and the OpenAPI checks; read from the request, so a bad
# value is answered 400 as PS3.18 asks (FastAPI's own validation answers 422)
_UID_PATTERN = r"^[12](\.[1-9][0-9]{0,5}){1,6}$"
StudyUid = Annotated[
    str, Path(description="StudyInstanceUID", json_schema_extra={"pattern": _UID_PATTERN})
]
SeriesUid = Annotated[
    str, Path(description="SeriesInstanceUID", json_schema_extra={"pattern": _UID_PATTERN})
]
_SWITCH = {"type": "string", "enum": ["true", "false"]}
_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "includefield",
        "in": "query",
        "required": False,
        "style": "form",
        "explode": True,
        "schema": {
            "type": "array",
            "items": {"type": "string", "enum": [INCLUDE_ALL, *sorted(ATTRIBUTES)]},
        },
        "description": "attributes to return as well (keyword or tag, comma lists, "
        "or `all`); attributes the index does not hold are not returned",
    },
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_OFFSET},
        "description": "at most this many results (the node's max_find_matches caps it)",
    },
    {
        "name": "offset",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
        "description": "skip this many results",
    },
    {
        "name": "fuzzymatching",
        "in": "query",
        "required": False,
        "schema": _SWITCH,
        "description": "accepted; `true` adds a Warning: person names are matched "
        "case-insensitively but literally (no phonetic matching)",
    },
]
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the matches as DICOM JSON (PS3.18 F.2), `[]` when none; a "
        "`Warning: 299` header when the node's cap cut the list or a switch asked "
        "for is not supported",
        "content": {
            DICOM_JSON: {"schema": {"type": "array", "items": {"type": "object"}}},
            "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
        },
    },
    400: {
        "model": ErrorResponse,
        "description": "a query parameter the node cannot honour; `field` names it",
    },
    401: {"model": ErrorResponse, "description": "no valid bearer token"},
    403: {"model": ErrorResponse, "description": "the role lacks the permission"},
    406: {"model": ErrorResponse, "description": "the Accept header allows no DICOM JSON"},
}
_ROUTE: dict[str, Any] = {
    "responses": _RESPONSES,
    "response_class": Response,
    "openapi_extra": {"parameters": _PARAMETERS},
}


def _media_type(request: Request) -> str | None:
    """The type to answer with (Accept read by the one parser of the DICOMweb
    routes), or None when it allows no JSON (406). A client that names
    ``application/json`` before any DICOM JSON range gets that label."""
    ranges = parse_accept(request.headers.get("accept"))
    if not accepts_json(ranges):
        return None
    first = next(r.media_type for r in ranges if accepts_json([r]))
    return "application/json" if first == "application/json" else DICOM_JSON


def _search(
    request: Request, context: Context, user: Principal, level: Level, **path: str
) -> Response:
    params = request.query_params.multi_items()
    path_keys = {
        keyword: path[name]
        for name, keyword in (("study", "StudyInstanceUID"), ("series", "SeriesInstanceUID"))
        if name in path
    }
    failure: str | None = "search failed"
    result: QidoResult | None = None
    media_type = _media_type(request)
    try:
        if media_type is None:
            failure = "not acceptable: only application/dicom+json is served"
            return error_response(406, failure)
        resource = Resource(level, path.get("study"), path.get("series"))
        query = parse_query(params)
        settings = context.settings
        service_url = dicomweb_url(request)
        with context.db.read() as session:
            result = search(
                session,
                user,
                resource,
                query,
                max_matches=settings.max_find_matches,
                max_list_values=settings.max_query_list_values,
                service_url=service_url,
            )
        failure = None
    except InvalidValue as exc:
        failure = str(exc)
        return error_response(400, failure, field=getattr(exc, "field", None))
    finally:
        record_qido(
            context.db,
            user,
            level=level,
            path=request.url.path,
            params=params,
            path_keys=path_keys,
            source_address=client_address(request),
            failure=failure,
        )
    assert result is not None
    answer = Response(result.json(), media_type=media_type)
    for text in result.warnings:
        answer.headers.append("Warning", f'299 {service_url}: "{text}"')
    return answer


@router.get("/studies", summary="QIDO-RS: search for studies", **_ROUTE)
def search_for_studies(request: Request, context: Context, user: Reader) -> Response:
    """Studies matching the query (C-FIND matching, PS3.18 10.6)."""
    return _search(request, context, user, Level.STUDY)


@router.get("/series", summary="QIDO-RS: search for series", **_ROUTE)
def search_for_series(request: Request, context: Context, user: Reader) -> Response:
    """Series of any study matching the query, with their study's attributes."""
    return _search(request, context, user, Level.SERIES)


@router.get("/instances", summary="QIDO-RS: search for instances", **_ROUTE)
def search_for_instances(request: Request, context: Context, user: Reader) -> Response:
    """Instances of any study matching the query, with their study's and series' attributes."""
    return _search(request, context, user, Level.IMAGE)


@router.get("/studies/{study}/series", summary="QIDO-RS: search for a study's series", **_ROUTE)
def search_for_study_series(
    request: Request, context: Context, user: Reader, study: StudyUid
) -> Response:
    """The study's series matching the query."""
    return _search(request, context, user, Level.SERIES, study=study)


@router.get(
    "/studies/{study}/instances", summary="QIDO-RS: search for a study's instances", **_ROUTE
)
def search_for_study_instances(
    request: Request, context: Context, user: Reader, study: StudyUid
) -> Response:
    """The study's instances matching the query, with their series' attributes."""
    return _search(request, context, user, Level.IMAGE, study=study)


@router.get(
    "/studies/{study}/series/{series}/instances",
    summary="QIDO-RS: search for a series' instances",
    **_ROUTE,
)
def search_for_series_instances(
    request: Request, context: Context, user: Reader, study: StudyUid, series: SeriesUid
) -> Response:
    """The series' instances matching the query."""
    return _search(request, context, user, Level.IMAGE, study=study, series=series)
