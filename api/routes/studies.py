"""Studies: search (C-FIND semantics over HTTP), detail, corrections, rejection.

Every read is audited (110112 Query with the keys asked; 110103 for a study
opened), every change too, with before and after. The search and the detail run
in a read transaction; the audit event is written right after, before the
answer is sent.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from api.deps import Context, client_address, require
from api.schemas.common import AUTH_ERRORS, CONFLICT, MAX_ID, MAX_PAGE_SIZE, NOT_FOUND, Page
from api.schemas.studies import (
    InstancePublic,
    SearchableMetadataStatus,
    SeriesPublic,
    StudyCorrection,
    StudyDetailPublic,
    StudyOrderPublic,
    StudyPublic,
    StudyRejection,
)
from dicom_node.db.query import ATTRIBUTES
from dicom_node.domain.enums import Completeness, MetadataStatus, StudyStatus
from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.domain.query import check_value_count
from dicom_node.services.query.studies import (
    MAX_KEY_LENGTH,
    StudyFilters,
    StudySort,
    StudySummary,
    get_study,
    record_study_access,
    record_study_search,
    search_studies,
    searchable_keywords,
)
from dicom_node.services.workflow.study_metadata import correct_study, reject_study

router = APIRouter(prefix="/api", tags=["studies"])

MAX_OFFSET = 10**9
StudyId = Annotated[int, Path(ge=1, le=MAX_ID)]
Reader = Annotated[Principal, Depends(require(Permission.STUDIES_READ))]
Corrector = Annotated[Principal, Depends(require(Permission.STUDIES_CORRECT))]

_SEARCH_PARAMETERS = ("offset", "limit", "sort", "metadata_status", "completeness", "status")
_SORTS = [f"{sign}{sort.value}" for sort in StudySort for sign in ("", "-")]


# Patterns of values the search surely accepts, per VR, for the OpenAPI document.
# Dates and times: calendar-safe days, and a two-ended range whose ends cannot be
# reversed; the search accepts more (any valid date, any ordered range).
_DATE = r"(19|20)[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|1[0-9]|2[0-8])"
_DATE_RANGE = _DATE.replace("(19|20)", "19") + "-" + _DATE.replace("(19|20)", "20")
_TIME = r"[0-5][0-9]([0-5][0-9](\.[0-9]{1,6})?)?"
_UID = r"[12](\.[1-9][0-9]{0,5}){1,6}"
_TEXT = r"^[^\x00-\x1f\x7f-\x9f]*$"
_PATTERNS = {
    "DA": rf"^({_DATE}|{_DATE}-|-{_DATE}|{_DATE_RANGE})?$",
    "TM": rf"^((0[0-9]|1[0-9]|2[0-3]){_TIME}|0[0-9]{_TIME}-(1[0-9]|2[0-3]){_TIME})?$",
    "DT": rf"^({_DATE})?$",
    "UI": rf"^({_UID}(\\{_UID})*)?$",
    "IS": r"^(-?[0-9]{1,9})?$",
}


def _pattern(keyword: str) -> str:
    attribute = ATTRIBUTES[keyword]
    if attribute.multi_valued:
        return r"^[^*?\x00-\x1f\x7f-\x9f]*$"  # no wildcards in a multi-valued key
    return _PATTERNS.get(attribute.vr, _TEXT)


def _keyword_parameters() -> list[dict[str, Any]]:
    """The DICOM keywords, documented as query parameters (read from the request)."""
    return [
        {
            "name": keyword,
            "in": "query",
            "required": False,
            "schema": {
                "type": "string",
                "pattern": _pattern(keyword),
                "maxLength": MAX_KEY_LENGTH,
            },
            "description": f"C-FIND matching on {keyword} ({ATTRIBUTES[keyword].vr}, "
            f"{ATTRIBUTES[keyword].level.value.lower()} level)",
        }
        for keyword in searchable_keywords()
    ]


def _dicom_keys(request: Request, *, max_list_values: int) -> dict[str, str]:
    """The DICOM keys of the query string; a key listing more than
    ``max_list_values`` values (settings.max_query_list_values) is 422 naming it,
    as C-FIND answers 0xC000."""
    keys: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name in _SEARCH_PARAMETERS:
            continue
        if name in keys:
            raise InvalidValue(
                f"{name} given twice: send one value (several values: a\\b)", field=name
            )
        try:
            check_value_count(name, value, max_list_values)
        except InvalidValue as exc:
            raise InvalidValue(str(exc), field=name) from None
        keys[name] = value
    return keys


def study_public(study: StudySummary) -> StudyPublic:
    return StudyPublic.model_validate(study, from_attributes=True)


@router.get(
    "/studies",
    response_model=Page[StudyPublic],
    responses=AUTH_ERRORS,
    openapi_extra={"parameters": _keyword_parameters()},
)
def search(
    request: Request,
    context: Context,
    user: Reader,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    sort: Annotated[
        str,
        Query(
            pattern="^-?(study_date|accession|received)$",
            description="study_date, accession or received; a leading '-' sorts descending",
        ),
    ] = "-received",
    metadata_status: SearchableMetadataStatus | None = None,
    completeness: Completeness | None = None,
    status: StudyStatus | None = None,
) -> Page[StudyPublic]:
    """Search studies by DICOM keywords with C-FIND matching (PS3.4 C.2.2.2).

    Any query parameter other than the paging, sorting and workflow filters is a
    DICOM keyword (case-sensitive), e.g. ``PatientName=DOE*``,
    ``StudyDate=20240101-20240131``, ``ModalitiesInStudy=CT``,
    ``StudyInstanceUID=1.2.3\\1.2.4``. Wildcards ``*`` ``?`` for text VRs, ranges
    for dates and times, UID lists; PatientName matches case-insensitively.
    Series-level keys (Modality, BodyPartExamined...) match a study when one of
    its series does. An unknown keyword or a malformed value is 422 naming it.
    Rejected studies are withdrawn (as from C-FIND). Referring physicians see
    only studies of orders they placed or are the referrer of. Audited as a
    Query (110112) with the keys.
    An integer key beyond its VR's range (IS: 32 bits) or a key listing more
    values than the node's ``max_query_list_values`` is 422 too.
    """
    filters = StudyFilters(
        metadata_status=MetadataStatus(metadata_status.value) if metadata_status else None,
        completeness=completeness,
        status=status,
    )
    descending = sort.startswith("-")
    keys: dict[str, str] = {}
    failure: str | None = "search failed"
    try:
        keys = _dicom_keys(request, max_list_values=context.settings.max_query_list_values)
        with context.db.read() as session:
            page = search_studies(
                session,
                principal=user,
                keys=keys,
                filters=filters,
                sort=StudySort(sort.lstrip("-")),
                descending=descending,
                offset=offset,
                limit=limit,
            )
        failure = None
    except InvalidValue as exc:
        failure = str(exc)
        raise
    finally:
        with context.db.unit_of_work() as session:
            record_study_search(
                session,
                principal=user,
                keys=keys,
                filters=filters,
                source_address=client_address(request),
                failure=failure,
            )
    return Page[StudyPublic](
        items=[study_public(study) for study in page.items],
        total=page.total,
        offset=offset,
        limit=limit,
    )


@router.get(
    "/studies/{study_id}",
    response_model=StudyDetailPublic,
    responses={**AUTH_ERRORS, **NOT_FOUND},
)
def detail(
    request: Request,
    context: Context,
    user: Reader,
    study_id: StudyId,
    instance_offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    instance_limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> StudyDetailPublic:
    """A study with its series (instance counts), a page of its instances, its
    order and report ids. Rejected studies are shown with their status. Audited
    as Instances Accessed (110103)."""
    with context.db.read() as session:
        found = get_study(
            session,
            principal=user,
            study_id=study_id,
            instance_offset=instance_offset,
            instance_limit=instance_limit,
        )
    with context.db.unit_of_work() as session:
        record_study_access(
            session, principal=user, study=found.study, source_address=client_address(request)
        )
    return StudyDetailPublic(
        study=study_public(found.study),
        series=[SeriesPublic.model_validate(s, from_attributes=True) for s in found.series],
        instances=[InstancePublic.model_validate(i, from_attributes=True) for i in found.instances],
        instance_total=found.instance_total,
        instance_offset=instance_offset,
        instance_limit=instance_limit,
        order=StudyOrderPublic.model_validate(found.order, from_attributes=True)
        if found.order
        else None,
        report_ids=found.report_ids,
    )


@router.patch(
    "/studies/{study_id}",
    response_model=StudyPublic,
    responses={**AUTH_ERRORS, **NOT_FOUND, **CONFLICT},
)
def correct(
    request: Request, context: Context, user: Corrector, study_id: StudyId, body: StudyCorrection
) -> StudyPublic:
    """Correct a study's indexed metadata (fields given only; ``reason`` required).

    Old and new values go to the audit event. A matched study becomes
    ``corrected``; pending, unmatched and conflict keep their status. Patient
    name, birth date and sex are the patient's (all their studies show them); a
    new PatientID moves the study to that patient (409 if that patient exists
    with other demographics given here). Stored files are never rewritten.
    A rejected study is 409."""
    changes = body.model_dump(exclude_unset=True, exclude={"reason"})
    if "patient_id" in changes and changes["patient_id"] is None:
        del changes["patient_id"]  # cannot be cleared: null leaves it as it is
    with context.db.unit_of_work() as session:
        study = correct_study(
            session,
            principal=user,
            study_id=study_id,
            changes=changes,
            reason=body.reason,
            source_address=client_address(request),
        )
    return study_public(study)


@router.post(
    "/studies/{study_id}/reject",
    response_model=StudyPublic,
    responses={**AUTH_ERRORS, **NOT_FOUND, **CONFLICT},
)
def reject(
    request: Request, context: Context, user: Corrector, study_id: StudyId, body: StudyRejection
) -> StudyPublic:
    """Reject (withdraw) a study: metadata_status -> rejected, hidden from C-FIND
    and search, never deleted. Reason required, audited; 409 if already rejected."""
    with context.db.unit_of_work() as session:
        study = reject_study(
            session,
            principal=user,
            study_id=study_id,
            reason=body.reason,
            source_address=client_address(request),
        )
    return study_public(study)
