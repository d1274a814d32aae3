"""Patients, studies, series and instances (REST: /api/studies).

The same services as REST (services/query/studies.py): the search with its
C-FIND matching and its audit event, a study opened audited as REST's detail
(110103), and the visibility rule applied by every load (a referring physician
sees only their orders' studies; anything else is null / NOT_FOUND).

Studies, patients, series and instances are loaded per operation in batches
(one statement for every study of a page, one for all their series, two for a
window of every series' instances), so a worklist page of 50 with studies,
patients and series is a fixed number of statements.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, TypeVar, cast

import strawberry
from sqlalchemy.orm import Session
from strawberry.types import Info

from api.graphql import relay
from api.graphql.access import requires
from api.graphql.context import GraphQLContext
from api.graphql.relay import Connection
from dicom_node.domain.enums import Completeness, MetadataStatus, StudyStatus
from dicom_node.domain.errors import InvalidValue, NotFound
from dicom_node.domain.permissions import Permission
from dicom_node.domain.query import check_value_count
from dicom_node.domain.vr import is_valid_uid
from dicom_node.services.access.visibility import sees_every_order
from dicom_node.services.query.studies import (
    InstanceInfo,
    InstancePage,
    PatientInfo,
    SeriesInfo,
    StudyFilters,
    StudySort,
    StudySummary,
    instances_of_series,
    patients_by_ids,
    patients_of_studies,
    record_study_access,
    record_study_search,
    record_study_views,
    search_studies,
    series_of_studies,
    studies_of_patients,
    study_summaries,
    visible_study_id,
)
from dicom_node.services.workflow.worklist_listing import WorklistStudy

if TYPE_CHECKING:
    from api.graphql.orders import ImagingRequest
    from api.graphql.reports import Report

Info_ = Info[GraphQLContext, None]
T = TypeVar("T")

# REST's sort parameter: a field, a leading '-' for descending
STUDY_SORTS = frozenset(f"{sign}{sort.value}" for sort in StudySort for sign in ("", "-"))
DEFAULT_STUDY_SORT = "-received"


@strawberry.type(description="A patient of the DICOM index, as their images named them.")
class Patient:
    id: int
    patient_id: str = strawberry.field(description="PatientID")
    issuer_of_patient_id: str = strawberry.field(description="IssuerOfPatientID ('' if none)")
    name: str | None = strawberry.field(description="PatientName (DICOM PN)")
    birth_date: str | None = strawberry.field(description="PatientBirthDate (DA: YYYYMMDD)")
    sex: str | None

    @classmethod
    def of(cls, patient: PatientInfo) -> Patient:
        return cls(
            id=patient.id,
            patient_id=patient.patient_id,
            issuer_of_patient_id=patient.issuer_of_patient_id,
            name=patient.patient_name,
            birth_date=patient.patient_birth_date,
            sex=patient.patient_sex,
        )

    @strawberry.field(
        description="The patient's studies the caller may see, newest first.",
        extensions=[requires(Permission.STUDIES_READ)],
    )
    async def studies(self, info: Info_) -> list[DicomStudy]:
        summaries = await info.context.loader(_patient_studies).load(self.id)
        return [DicomStudy.of(summary) for summary in summaries]


@strawberry.type(description="A DICOM instance (one stored image or object).")
class Instance:
    id: int
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    instance_number: int | None
    transfer_syntax_uid: str
    file_size: float = strawberry.field(description="bytes (a Float: may exceed 32 bits)")
    received_at: datetime
    calling_ae_title: str | None
    quarantined: bool = strawberry.field(
        description="held for reconciliation: arrived under this study for another patient"
    )

    @classmethod
    def of(cls, instance: InstanceInfo) -> Instance:
        return cls(
            id=instance.id,
            sop_instance_uid=instance.sop_instance_uid,
            sop_class_uid=instance.sop_class_uid,
            series_instance_uid=instance.series_instance_uid,
            instance_number=instance.instance_number,
            transfer_syntax_uid=instance.transfer_syntax_uid,
            file_size=instance.file_size,
            received_at=instance.received_at,
            calling_ae_title=instance.calling_ae_title,
            quarantined=instance.quarantined,
        )


@strawberry.type
class Series:
    id: int
    series_instance_uid: str
    modality: str | None
    series_number: int | None
    series_description: str | None
    body_part_examined: str | None
    station_name: str | None
    instance_count: int

    @classmethod
    def of(cls, series: SeriesInfo) -> Series:
        return cls(
            id=series.id,
            series_instance_uid=series.series_instance_uid,
            modality=series.modality,
            series_number=series.series_number,
            series_description=series.series_description,
            body_part_examined=series.body_part_examined,
            station_name=series.station_name,
            instance_count=series.instance_count,
        )

    @strawberry.field(
        description="A page of the series' instances (instance number order): "
        "a series of thousands of images is never sent whole.",
        extensions=[requires(Permission.STUDIES_READ)],
    )
    async def instances(
        self, info: Info_, first: int | None = None, after: str | None = None
    ) -> Connection[Instance]:
        offset, limit = relay.page_window(first, after)
        page = await info.context.loader(_instance_pages).load((self.id, offset, limit))
        return relay.connection(
            [Instance.of(instance) for instance in page.items], total=page.total, offset=offset
        )


@strawberry.type(description="A study of the DICOM index (REST: GET /api/studies/{id}).")
class DicomStudy:
    # what both a search result and a worklist entry carry: a study built
    # from a worklist entry (worklist_study) answers these without a statement
    id: int
    study_instance_uid: str
    accession_number: str | None
    patient_id: str | None = strawberry.field(description="PatientID")
    patient_name: str | None
    study_date: str | None = strawberry.field(description="StudyDate as sent (DA: YYYYMMDD)")
    study_description: str | None
    body_part_examined: str | None
    series_count: int
    instance_count: int
    status: StudyStatus
    # the whole summary; None for a study built from a worklist entry, whose
    # other fields are loaded (in one batch for the page) when asked for
    summary: strawberry.Private[StudySummary | None]

    @classmethod
    def of(cls, study: StudySummary) -> DicomStudy:
        return cls(
            id=study.id,
            study_instance_uid=study.study_instance_uid,
            accession_number=study.accession_number,
            patient_id=study.patient_id,
            patient_name=study.patient_name,
            study_date=study.study_date,
            study_description=study.study_description,
            body_part_examined=study.body_part_examined,
            series_count=study.series_count,
            instance_count=study.instance_count,
            status=StudyStatus(study.status),
            summary=study,
        )

    @classmethod
    def of_worklist(cls, study: WorklistStudy) -> DicomStudy:
        return cls(
            id=study.id,
            study_instance_uid=study.study_instance_uid,
            accession_number=study.accession_number,
            patient_id=study.patient_id,
            patient_name=study.patient_name,
            study_date=study.study_date,
            study_description=study.description,
            body_part_examined=study.body_part,
            series_count=study.series_count,
            instance_count=study.instance_count,
            status=StudyStatus(study.status),
            summary=None,
        )

    async def _full(self, info: Info_) -> StudySummary:
        if self.summary is not None:
            return self.summary
        found = await info.context.loader(_summaries).load(self.id)
        if found is None:  # gone (or out of view) since the page was read
            raise NotFound(f"no study {self.id}")
        return found

    def _summary_field(self, info: Info_, pick: Callable[[StudySummary], T]) -> T:
        """``pick`` of the whole summary: at once for a search result (no
        coroutine per field of a page); for a study built from a worklist
        entry an awaitable the executor awaits (one batch for the page)."""
        if self.summary is not None:
            return pick(self.summary)

        async def later() -> T:
            return pick(await self._full(info))

        return cast(T, later())

    @strawberry.field(description="IssuerOfPatientID ('' if none)")
    def issuer_of_patient_id(self, info: Info_) -> str:
        return self._summary_field(info, lambda study: study.issuer_of_patient_id)

    @strawberry.field
    def patient_birth_date(self, info: Info_) -> str | None:
        return self._summary_field(info, lambda study: study.patient_birth_date)

    @strawberry.field
    def patient_sex(self, info: Info_) -> str | None:
        return self._summary_field(info, lambda study: study.patient_sex)

    @strawberry.field
    def study_time(self, info: Info_) -> str | None:
        return self._summary_field(info, lambda study: study.study_time)

    @strawberry.field
    def referring_physician_name(self, info: Info_) -> str | None:
        return self._summary_field(info, lambda study: study.referring_physician_name)

    @strawberry.field(description="ModalitiesInStudy")
    def modalities(self, info: Info_) -> list[str]:
        return self._summary_field(info, lambda study: study.modalities)

    @strawberry.field
    def metadata_status(self, info: Info_) -> MetadataStatus:
        return self._summary_field(info, lambda study: MetadataStatus(study.metadata_status))

    @strawberry.field
    def completeness(self, info: Info_) -> Completeness:
        return self._summary_field(info, lambda study: Completeness(study.completeness))

    @strawberry.field
    def order_id(self, info: Info_) -> int | None:
        return self._summary_field(info, lambda study: study.order_id)

    @strawberry.field
    def first_received_at(self, info: Info_) -> datetime | None:
        return self._summary_field(info, lambda study: study.first_received_at)

    @strawberry.field
    def last_received_at(self, info: Info_) -> datetime | None:
        return self._summary_field(info, lambda study: study.last_received_at)

    @strawberry.field(extensions=[requires(Permission.STUDIES_READ)])
    async def patient(self, info: Info_) -> Patient | None:
        return await patient_of_study(info.context, self.id)

    @strawberry.field(
        description="The study's series, by series number.",
        extensions=[requires(Permission.STUDIES_READ)],
    )
    async def series(self, info: Info_) -> list[Series]:
        # the study's detail (its series, their instances): audited as REST's
        # detail is (study_viewed), once per study and operation, however reached
        await info.context.loader(_study_views).load(self.id)
        return [Series.of(s) for s in await info.context.loader(_study_series).load(self.id)]

    @strawberry.field(
        description="The order the study was performed for.",
        extensions=[requires(Permission.ORDERS_READ)],
    )
    async def order(
        self, info: Info_
    ) -> Annotated[ImagingRequest, strawberry.lazy("api.graphql.orders")] | None:
        from api.graphql.orders import order_by_id

        order_id = (await self._full(info)).order_id
        return await order_by_id(info.context, order_id) if order_id is not None else None

    @strawberry.field(
        description="The study's report (as REST's study detail shows it).",
        extensions=[requires(Permission.REPORTS_READ)],
    )
    async def report(
        self, info: Info_
    ) -> Annotated[Report, strawberry.lazy("api.graphql.reports")] | None:
        from api.graphql.reports import report_of_study

        return await report_of_study(info.context, self.id)


# --------------------------------------------------------------------------- batch loaders


async def _summaries(context: GraphQLContext, ids: Sequence[int]) -> Sequence[StudySummary | None]:
    return await context.read(study_summaries, principal=context.user, study_ids=ids)


async def _studies(context: GraphQLContext, ids: Sequence[int]) -> Sequence[DicomStudy | None]:
    found = await context.loader(_summaries).load_many(ids)
    return [DicomStudy.of(summary) if summary is not None else None for summary in found]


async def _patients(context: GraphQLContext, ids: Sequence[int]) -> Sequence[PatientInfo | None]:
    return await context.read(patients_by_ids, principal=context.user, patient_ids=ids)


async def _study_patients(
    context: GraphQLContext, study_ids: Sequence[int]
) -> Sequence[PatientInfo | None]:
    return await context.read(patients_of_studies, principal=context.user, study_ids=study_ids)


async def _patient_studies(
    context: GraphQLContext, patient_ids: Sequence[int]
) -> Sequence[list[StudySummary]]:
    return await context.read(studies_of_patients, principal=context.user, patient_ids=patient_ids)


async def _study_views(context: GraphQLContext, study_ids: Sequence[int]) -> Sequence[None]:
    await context.write(
        record_study_views, study_ids, principal=context.user, source_address=context.address
    )
    return [None] * len(study_ids)


async def _study_series(
    context: GraphQLContext, study_ids: Sequence[int]
) -> Sequence[list[SeriesInfo]]:
    return await context.read(series_of_studies, principal=context.user, study_ids=study_ids)


async def _instance_pages(
    context: GraphQLContext, keys: Sequence[tuple[int, int, int]]
) -> Sequence[InstancePage]:
    """Keys: (series id, offset, limit). One window per distinct (offset,
    limit) asked in the step (usually one: every series of a page asks the
    same ``first``), all in one session."""
    windows: dict[tuple[int, int], list[int]] = {}
    for series_id, offset, limit in keys:
        windows.setdefault((offset, limit), []).append(series_id)
    principal = context.user

    def load(session: Session) -> dict[tuple[int, int, int], InstancePage]:
        pages: dict[tuple[int, int, int], InstancePage] = {}
        for (offset, limit), series_ids in windows.items():
            found = instances_of_series(
                session,
                principal=principal,
                series_ids=series_ids,
                offset=offset,
                limit=limit,
            )
            for series_id, page in zip(series_ids, found, strict=True):
                pages[(series_id, offset, limit)] = page
        return pages

    pages = await context.read(load)
    return [pages[key] for key in keys]


async def study_by_id(context: GraphQLContext, study_id: int) -> DicomStudy | None:
    """A study by id, batched per operation; None when there is none the caller may see."""
    return await context.loader(_studies).load(study_id)


async def patient_by_id(context: GraphQLContext, patient_id: int) -> Patient | None:
    """A patient (the DICOM patients table) by id, batched per operation; None
    when the caller may see none of their studies."""
    found = await context.loader(_patients).load(patient_id)
    return Patient.of(found) if found is not None else None


async def patient_of_study(context: GraphQLContext, study_id: int) -> Patient | None:
    """A study's patient, batched per operation; None when the caller may not
    see the study."""
    found = await context.loader(_study_patients).load(study_id)
    return Patient.of(found) if found is not None else None


def worklist_study(
    context: GraphQLContext, study: WorklistStudy
) -> DicomStudy | Awaitable[DicomStudy | None]:
    """The study of a worklist entry. For a caller the visibility rule does
    not narrow (every worklist reader), the entry's summary is the study: no
    statement and no await (a page of 50 would otherwise pay 50 coroutines for
    nothing); its other fields are batch-loaded if asked for. Anyone else's
    goes through the loader, which applies the rule (the page was not read
    through it)."""
    if sees_every_order(context.user):
        return DicomStudy.of_worklist(study)
    return study_by_id(context, study.id)


# the fields of DicomStudy a worklist entry's summary does not carry (those
# read from the whole summary, ``_summary_field``): asked of a page's studies,
# the page loads the summaries in one batch first (``worklist_studies``)
SUMMARY_FIELDS = frozenset(
    {
        "issuerOfPatientId",
        "patientBirthDate",
        "patientSex",
        "studyTime",
        "referringPhysicianName",
        "modalities",
        "metadataStatus",
        "completeness",
        "orderId",
        "firstReceivedAt",
        "lastReceivedAt",
    }
)


async def worklist_studies(
    context: GraphQLContext, studies: Sequence[WorklistStudy]
) -> list[DicomStudy | None]:
    """The whole studies of a page of worklist entries, in one batch (None
    for a study the caller may not see): for a page that asks for fields the
    entries' summaries lack, so each study's fields are then answered at once
    instead of one awaitable per field of each item."""
    found = await context.loader(_summaries).load_many([study.id for study in studies])
    return [DicomStudy.of(summary) if summary is not None else None for summary in found]


async def study_patients(context: GraphQLContext, study_ids: Sequence[int]) -> list[Patient | None]:
    """The studies' patients, in one batch (as ``patient_of_study`` each)."""
    found = await context.loader(_study_patients).load_many(study_ids)
    return [Patient.of(patient) if patient is not None else None for patient in found]


# --------------------------------------------------------------------------- root fields


@strawberry.input(description="One DICOM matching key, as REST's query parameter.")
class StudyKey:
    keyword: str = strawberry.field(description="a DICOM keyword, e.g. PatientName")
    value: str = strawberry.field(description="C-FIND matching: DOE*, 20240101-20240131, a\\b")


def _keys(keys: list[StudyKey] | None, *, max_list_values: int) -> dict[str, str]:
    """The keys as REST reads them from its query string: one value per
    keyword, at most ``max_list_values`` values in a list."""
    found: dict[str, str] = {}
    for key in keys or ():
        if key.keyword in found:
            raise InvalidValue(
                f"{key.keyword} given twice: send one value (several values: a\\b)",
                field=key.keyword,
            )
        try:
            check_value_count(key.keyword, key.value, max_list_values)
        except InvalidValue as exc:
            raise InvalidValue(str(exc), field=key.keyword) from None
        found[key.keyword] = key.value
    return found


async def _opened(info: Info_, summary: StudySummary | None, label: str) -> DicomStudy:
    """A study opened by id or UID: audited as REST's detail (110103)."""
    if summary is None:
        raise NotFound(f"no study {label}")
    context = info.context
    await context.write(
        record_study_access, principal=context.user, study=summary, source_address=context.address
    )
    # its series, if asked, are part of this audited read
    context.loader(_study_views).prime(summary.id, None)
    return DicomStudy.of(summary)


@strawberry.type
class Query:
    @strawberry.field(
        description="Search studies with C-FIND matching (REST: GET /api/studies): "
        "rejected studies are withdrawn; audited as a Query (110112) with the keys.",
        extensions=[requires(Permission.STUDIES_READ)],
    )
    async def studies(
        self,
        info: Info_,
        first: int | None = None,
        after: str | None = None,
        keys: list[StudyKey] | None = None,
        sort: Annotated[
            str,
            strawberry.argument(
                description="study_date, accession or received; a leading '-' sorts descending"
            ),
        ] = DEFAULT_STUDY_SORT,
        metadata_status: MetadataStatus | None = None,
        completeness: Completeness | None = None,
        status: StudyStatus | None = None,
    ) -> Connection[DicomStudy]:
        context = info.context
        user = context.user
        filters = StudyFilters(
            metadata_status=metadata_status, completeness=completeness, status=status
        )
        # refused before the search, unaudited, as REST's parameter validation
        offset, limit = relay.page_window(first, after)
        if sort not in STUDY_SORTS:
            raise InvalidValue(f"sort must be one of {sorted(STUDY_SORTS)}", field="sort")
        asked: dict[str, str] = {}
        failure: str | None = "search failed"
        try:
            asked = _keys(keys, max_list_values=context.settings.max_query_list_values)
            page = await context.read(
                search_studies,
                principal=user,
                keys=asked,
                filters=filters,
                sort=StudySort(sort.lstrip("-")),
                descending=sort.startswith("-"),
                offset=offset,
                limit=limit,
            )
            failure = None
        except InvalidValue as exc:
            failure = str(exc)
            raise
        finally:
            await context.write(
                record_study_search,
                principal=user,
                keys=asked,
                filters=filters,
                source_address=context.address,
                failure=failure,
            )
        return relay.connection(
            [DicomStudy.of(study) for study in page.items], total=page.total, offset=offset
        )

    @strawberry.field(
        description="One study (REST: GET /api/studies/{id}); audited as "
        "Instances Accessed (110103).",
        extensions=[requires(Permission.STUDIES_READ)],
    )
    async def study(self, info: Info_, id: int) -> DicomStudy:
        found = await info.context.loader(_summaries).load(id)
        return await _opened(info, found, str(id))

    @strawberry.field(
        description="One study by StudyInstanceUID; audited as Instances Accessed (110103).",
        extensions=[requires(Permission.STUDIES_READ)],
    )
    async def study_by_uid(self, info: Info_, uid: str) -> DicomStudy:
        if not is_valid_uid(uid):
            raise InvalidValue("uid is not a valid DICOM UID", field="uid")
        context = info.context
        study_id = await context.read(visible_study_id, principal=context.user, study_uid=uid)
        found = await context.loader(_summaries).load(study_id)
        return await _opened(info, found, uid)
