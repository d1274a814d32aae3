"""Sending a study to a configured peer (C-STORE, as a C-MOVE's sub-operations)
and the list of peers to send to; permission ``studies:send``.

The sending is ``dicom_node/scp/send.py``, built from the C-MOVE's own parts
by the composition root and handed in through the API context (api/ never
imports scp/); this module only maps its answers to HTTP: 200 with the counts
when the peer was reached (failed instances included, listed), 502 when no
association to it could be used (nothing sent), 404 for a name that is no
configured peer, 503 with Retry-After when ``max_concurrent_sends`` sends are
already running in this process.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.deps import Context, TranscoderDep, client_address, require
from api.errors import error_response
from api.schemas.common import AUTH_ERRORS, CONFLICT, MAX_ID, NOT_FOUND, ErrorResponse
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.services.query.retrieve import PeerUnavailable, SendersBusy

router = APIRouter(prefix="/api", tags=["sending"])

# a send holds a worker for up to send_time_limit_seconds; a minute is a fair wait
SEND_RETRY_AFTER_SECONDS = 60

Sender = Annotated[Principal, Depends(require(Permission.STUDIES_SEND))]
StudyId = Annotated[int, Path(ge=1, le=MAX_ID)]


class PeerPublic(BaseModel):
    ae_title: str
    host: str
    port: int
    tls: bool


class SendRequest(BaseModel):
    # an AE title is at most 16 characters (PS3.5 6.2)
    peer: str = Field(min_length=1, max_length=16, description="a configured peer's AE title")


class FailedInstance(BaseModel):
    sop_instance_uid: str
    reason: str


class SendPublic(BaseModel):
    peer: str
    study_instance_uid: str
    instances: int = Field(description="instances of the study the node holds")
    completed: int = Field(description="stored by the peer (success)")
    warning: int = Field(description="stored by the peer with a warning")
    failed: int
    failures: list[FailedInstance] = Field(description="the first 100 failed instances")


@router.get("/peers", response_model=list[PeerPublic], responses=AUTH_ERRORS)
def list_peers(context: Context, _user: Sender) -> list[PeerPublic]:
    """The peers a study may be sent to (the ``peers`` setting), by AE title."""
    peers = context.settings.peers
    return [
        PeerPublic(ae_title=p.ae_title, host=p.host, port=p.port, tls=p.tls)
        for _, p in sorted(peers.items())
    ]


@router.post(
    "/studies/{study_id}/send",
    response_model=SendPublic,
    responses={
        **AUTH_ERRORS,
        **NOT_FOUND,
        **CONFLICT,
        502: {"model": ErrorResponse, "description": "the peer could not be reached: nothing sent"},
        503: {
            "model": ErrorResponse,
            "description": "max_concurrent_sends sends are running: try again (Retry-After)",
        },
    },
)
def send_study(
    request: Request,
    context: Context,
    transcoder: TranscoderDep,
    user: Sender,
    study_id: StudyId,
    body: SendRequest,
) -> SendPublic | JSONResponse:
    """Send every stored instance of the study to the peer, waiting for the
    peer's answer to each (bounded: what is not sent within
    ``send_time_limit_seconds`` fails, and a peer that stops reading is cut
    then). Audited as a C-MOVE is (110106 Export, ``instances_exported``),
    with the user as the actor. A rejected study is not sent (409)."""
    if context.sender is None:  # a context built without one (never in the node)
        return _unavailable("sending studies is not available in this process")
    try:
        sent = context.sender.send(
            context.db,
            transcoder,
            study_id=study_id,
            peer_ae=body.peer,
            principal=user,
            source_address=client_address(request),
        )
    except SendersBusy:
        return _unavailable("the node is already sending as many studies as it may: try later")
    except PeerUnavailable as exc:
        return error_response(502, str(exc))
    counts = sent.result.counts
    return SendPublic(
        peer=sent.peer,
        study_instance_uid=sent.study_instance_uid,
        instances=sent.instances,
        completed=counts.get("completed", 0),
        warning=counts.get("warning", 0),
        failed=counts.get("failed", 0),
        failures=[
            FailedInstance(sop_instance_uid=uid, reason=reason)
            for uid, reason in sent.result.failures
        ],
    )


def _unavailable(message: str) -> JSONResponse:
    return error_response(503, message, headers={"Retry-After": str(SEND_RETRY_AFTER_SECONDS)})
