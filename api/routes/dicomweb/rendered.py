"""DICOMweb rendered and thumbnail resources (PS3.18 8.3.5, 10.4.1.1.3):
an instance, one of its frames, a series or a study as a consumer image
(``image/jpeg`` by default, ``image/png``, ``image/gif``).

Which instance: the one named; for a series its middle instance (in instance
number order); for a study the middle instance of its largest series. Which
frame: the one named, else the first. The rendering itself (modality LUT,
window, MONOCHROME1, colour, viewport) is ``dicom_node/domain/rendering.py``.

Order of answers: the instance is looked up first (404, the visibility rule),
then the parameters and the Accept header are checked (400, 406): a caller
learns nothing of a parameter's fate on a study it may not see. The image is
made before the audit event (one 110103 for the one instance disclosed;
repeated reads of one study's images counted into the next event:
image_audit.py) is committed, and sent after it: an instance that cannot be
rendered is not recorded as disclosed, and a disclosure is never unaudited.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from PIL import Image
from starlette.exceptions import HTTPException

from api.deps import ApiContext, Context, Store, TranscoderDep, require
from api.routes.dicomweb.image_audit import audit_image_read
from api.routes.dicomweb.wado import InstanceUID, SeriesUID, StudyUID
from api.schemas.common import AUTH_ERRORS, ErrorResponse
from dicom_node.domain.errors import InvalidValue
from dicom_node.domain.part10_source import read_stored_instance
from dicom_node.domain.permissions import Permission, Principal
from dicom_node.domain.rendering import (
    MediaType,
    RenderError,
    Window,
    WindowFunction,
    encode,
    render,
)
from dicom_node.domain.transcode import (
    TranscodeError,
    Transcoder,
    TranscoderBusy,
    decoded_photometric_interpretation,
)
from dicom_node.services.dicomweb.instances import (
    StoredInstance,
    visible_instances,
)
from dicom_node.services.dicomweb.negotiation import parse_accept
from dicom_node.storage import FileStore

log = logging.getLogger(__name__)

router = APIRouter()

Reader = Annotated[Principal, Depends(require(Permission.STUDIES_READ))]

FrameList = Annotated[
    str,
    Path(
        description="one frame number (from 1); a list is refused with 400",
        json_schema_extra={"pattern": r"^[1-9][0-9]{0,3}$"},
    ),
]

# As in wado.py: the UIDs, the frame number and the query parameters are checked
# by this module (400, PS3.18 8.3.5), the parameters after the lookup; their
# patterns are documented (values surely accepted), not enforced by FastAPI
# (which would answer 422)
_WINDOW = r"^-?[0-9]+(\.[0-9]+)?,[0-9]+(\.[0-9]+)?,(linear|linear-exact|sigmoid)$"
_VIEWPORT = r"^[1-9][0-9]{0,4},[1-9][0-9]{0,4}$"
_QUALITY = r"^([1-9]|[1-9][0-9]|100)$"
WindowParam = Annotated[
    str | None,
    Query(
        description="center,width,function (linear, linear-exact or sigmoid; PS3.3 "
        "C.11.2.1.2); grayscale only. Default: the instance's first window, else its "
        "VOI LUT, else the frame's range",
        json_schema_extra={"pattern": _WINDOW},
    ),
]
ViewportParam = Annotated[
    str | None,
    Query(
        description="vw,vh: the image is fitted within (aspect kept); neither side over "
        "the node's rendered_max_dimension (400). The source-region form is not supported",
        json_schema_extra={"pattern": _VIEWPORT},
    ),
]
QualityParam = Annotated[
    str | None,
    Query(description="JPEG quality 1-100 (default 90)", json_schema_extra={"pattern": _QUALITY}),
]
AnnotationParam = Annotated[
    str | None,
    Query(description="accepted and ignored: nothing is burnt into the image"),
]

THUMBNAIL_SIZE = 128  # longest side of a thumbnail without a viewport

_IMAGE = {"schema": {"type": "string", "format": "binary"}}
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the rendered image",
        "content": {media_type.value: _IMAGE for media_type in MediaType},
    },
    400: {"model": ErrorResponse, "description": "a parameter the node does not accept"},
    **AUTH_ERRORS,
    404: {"model": ErrorResponse, "description": "no such study, series, instance or frame"},
    406: {
        "model": ErrorResponse,
        "description": "no acceptable media type, or the instance cannot be rendered "
        "(no pixel data, no decoder, damaged pixel data)",
    },
    503: {
        "model": ErrorResponse,
        "description": "every transcoding place stayed busy (settings.max_concurrent_transcodes): "
        "try again after Retry-After",
    },
}


@dataclass(frozen=True)
class RenderRequest:
    """One rendered or thumbnail request: who asks, with what, and the parts that
    answer it. The parameters are kept as sent and checked by ``answer``."""

    request: Request
    context: ApiContext
    store: FileStore
    transcoder: Transcoder
    user: Principal
    accept: str | None
    window: str | None
    viewport: str | None
    quality: str | None
    thumbnail: bool

    def instances(
        self, study: str, series: str | None = None, sop: str | None = None
    ) -> list[StoredInstance]:
        try:
            with self.context.db.read() as session:
                return visible_instances(
                    session, self.user, study_uid=study, series_uid=series, sop_uid=sop
                )
        except InvalidValue as exc:  # a malformed UID
            raise HTTPException(400, str(exc)) from None

    def answer(self, instance: StoredInstance, frames: str | None = None) -> Response:
        """Check the parameters, render, audit, answer."""
        media_type = negotiate(self.accept)
        window = parse_window(self.window)
        viewport = parse_viewport(self.viewport, self.context.settings.rendered_max_dimension)
        quality = parse_quality(self.quality)
        index = parse_frame(frames)
        if viewport is None and self.thumbnail:
            viewport = (THUMBNAIL_SIZE, THUMBNAIL_SIZE)
        image = self._render(instance, index, window, viewport)
        body = encode(image, media_type, quality=quality)
        audit_image_read(self.request, self.context, self.user, instance, "rendered")
        return Response(body, media_type=media_type.value)

    def _render(
        self,
        instance: StoredInstance,
        index: int,
        window: Window | None,
        viewport: tuple[int, int] | None,
    ) -> Image.Image:
        limit = self.context.settings.max_dataset_bytes
        try:
            # the read (the whole file), the decoding and the rendering (float
            # samples) in one transcoding place: what a request holds in memory
            # counts against max_concurrent_transcodes, once
            with self.transcoder.place():
                try:
                    dataset = read_stored_instance(
                        self.store.absolute(instance.file_path), max_dataset_bytes=limit
                    )
                except Exception as exc:  # missing, too large, garbage: pydicom raises many kinds
                    # a held instance whose file cannot be read is the node's fault: 500
                    log.error("stored instance unreadable for rendering: %s", type(exc).__name__)
                    raise RuntimeError("stored instance unreadable") from None
                frame = self.transcoder.decode_frame(dataset, index)
                return render(
                    frame,
                    dataset,
                    photometric=decoded_photometric_interpretation(dataset),
                    frame_index=index,
                    window=window,
                    viewport=viewport,
                )
        except IndexError:
            raise HTTPException(404, f"no frame {index + 1} in this instance") from None
        except TranscoderBusy:
            raise  # not the instance's fault: 503 with Retry-After (api/errors.py)
        except (TranscodeError, RenderError) as exc:
            # not the client's fault, but no image it accepts can be made: 406
            log.warning(
                "DICOMweb rendered: an instance of %s in %s not rendered: %s",
                instance.sop_class_uid,
                instance.transfer_syntax_uid,
                exc,
            )
            raise HTTPException(406, f"this instance cannot be rendered: {exc}") from None


async def rendered_request(
    request: Request,
    context: Context,
    store: Store,
    transcoder: TranscoderDep,
    user: Reader,
    window: WindowParam = None,
    viewport: ViewportParam = None,
    quality: QualityParam = None,
    annotation: AnnotationParam = None,
) -> RenderRequest:
    del annotation  # accepted, ignored (documented)
    return RenderRequest(
        request,
        context,
        store,
        transcoder,
        user,
        _accept(request),
        window,
        viewport,
        quality,
        False,
    )


async def thumbnail_request(
    request: Request,
    context: Context,
    store: Store,
    transcoder: TranscoderDep,
    user: Reader,
    viewport: ViewportParam = None,
    quality: QualityParam = None,
) -> RenderRequest:
    return RenderRequest(
        request, context, store, transcoder, user, _accept(request), None, viewport, quality, True
    )


def _accept(request: Request) -> str | None:
    """Every Accept header of the request, as one."""
    values = request.headers.getlist("accept")
    return ", ".join(values) if values else None


Rendered = Annotated[RenderRequest, Depends(rendered_request)]
Thumbnail = Annotated[RenderRequest, Depends(thumbnail_request)]

_INSTANCE = "/studies/{study}/series/{series}/instances/{instance}"


_Route = TypeVar("_Route", bound=Callable[..., Response])


def _route(path: str, summary: str) -> Callable[[_Route], _Route]:
    decorator: Callable[[_Route], _Route] = router.get(
        path, response_class=Response, responses=RESPONSES, summary=summary
    )
    return decorator


# ------------------------------------------------------------------ rendered


@_route(f"{_INSTANCE}/rendered", "An instance, rendered")
def instance_rendered(
    asked: Rendered, study: StudyUID, series: SeriesUID, instance: InstanceUID
) -> Response:
    """Frame 1 of the instance as an image (PS3.18 10.4.1.1.3)."""
    return asked.answer(asked.instances(study, series, instance)[0])


@_route(f"{_INSTANCE}/frames/{{frames}}/rendered", "A frame, rendered")
def frame_rendered(
    asked: Rendered, study: StudyUID, series: SeriesUID, instance: InstanceUID, frames: FrameList
) -> Response:
    """One frame of the instance as an image; a list of frames is refused (400)."""
    return asked.answer(asked.instances(study, series, instance)[0], frames)


@_route("/studies/{study}/series/{series}/rendered", "A series, rendered")
def series_rendered(asked: Rendered, study: StudyUID, series: SeriesUID) -> Response:
    """The series's middle instance (instance number order), frame 1, as an image."""
    return asked.answer(representative(asked.instances(study, series)))


@_route("/studies/{study}/rendered", "A study, rendered")
def study_rendered(asked: Rendered, study: StudyUID) -> Response:
    """The middle instance of the study's largest series, frame 1, as an image."""
    return asked.answer(representative(asked.instances(study)))


# ------------------------------------------------------------------ thumbnails


@_route(f"{_INSTANCE}/thumbnail", "An instance's thumbnail")
def instance_thumbnail(
    asked: Thumbnail, study: StudyUID, series: SeriesUID, instance: InstanceUID
) -> Response:
    """Frame 1 of the instance, small (longest side 128 unless a viewport is given)."""
    return asked.answer(asked.instances(study, series, instance)[0])


@_route(f"{_INSTANCE}/frames/{{frames}}/thumbnail", "A frame's thumbnail")
def frame_thumbnail(
    asked: Thumbnail, study: StudyUID, series: SeriesUID, instance: InstanceUID, frames: FrameList
) -> Response:
    """One frame, small; a list of frames is refused (400)."""
    return asked.answer(asked.instances(study, series, instance)[0], frames)


@_route("/studies/{study}/series/{series}/thumbnail", "A series's thumbnail")
def series_thumbnail(asked: Thumbnail, study: StudyUID, series: SeriesUID) -> Response:
    """The series's middle instance, small."""
    return asked.answer(representative(asked.instances(study, series)))


@_route("/studies/{study}/thumbnail", "A study's thumbnail")
def study_thumbnail(asked: Thumbnail, study: StudyUID) -> Response:
    """The middle instance of the study's largest series, small."""
    return asked.answer(representative(asked.instances(study)))


def representative(instances: list[StoredInstance]) -> StoredInstance:
    """The middle instance of the largest series (the first of equals), in the
    series and instance number order ``visible_instances`` gives."""
    sizes = Counter(instance.series_instance_uid for instance in instances)
    largest = max(sizes, key=lambda uid: sizes[uid])  # max keeps the first of equals
    members = [instance for instance in instances if instance.series_instance_uid == largest]
    return members[len(members) // 2]


# ------------------------------------------------------------------ parameters


# ASCII digits (str.isdigit also takes "²", which int() refuses), at most 9 of them
_WHOLE = re.compile(r"[0-9]{1,9}")


def negotiate(accept: str | None) -> MediaType:
    """The media type to answer in: the first acceptable range of the Accept
    header (``negotiation.parse_accept``: best q first, then as written; a
    wildcard means JPEG, as does no Accept header); 406 when none is."""
    for media_range in parse_accept(accept):
        if media_range.media_type in ("*/*", "image/*"):
            return MediaType.JPEG
        for media_type in MediaType:
            if media_range.media_type == media_type.value:
                return media_type
    raise HTTPException(
        406, "rendered resources are image/jpeg, image/png or image/gif; none is acceptable"
    )


def parse_window(text: str | None) -> Window | None:
    """``center,width[,function]`` (PS3.18 8.3.5.1.3; the function defaults to linear)."""
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    if len(parts) not in (2, 3):
        raise HTTPException(400, "window must be center,width,function")
    try:
        center, width = float(parts[0]), float(parts[1])
        function = WindowFunction(parts[2].lower()) if len(parts) == 3 else WindowFunction.LINEAR
        return Window(center, width, function)
    except ValueError:
        raise HTTPException(
            400,
            "window must be center,width,function: numbers, the width at least 1 (linear) "
            "or above 0, the function linear, linear-exact or sigmoid",
        ) from None


def parse_viewport(text: str | None, largest: int) -> tuple[int, int] | None:
    """``vw,vh``: both whole numbers from 1 to ``largest``."""
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    if len(parts) == 6:
        raise HTTPException(400, "viewport with a source region (sx,sy,sw,sh) is not supported")
    if len(parts) != 2 or not all(_WHOLE.fullmatch(part) for part in parts):
        raise HTTPException(400, "viewport must be vw,vh: two whole numbers")
    width, height = int(parts[0]), int(parts[1])
    if not (1 <= width <= largest and 1 <= height <= largest):
        raise HTTPException(400, f"viewport sides must be from 1 to {largest}")
    return width, height


def parse_quality(text: str | None) -> int | None:
    if text is None:
        return None
    value = text.strip()
    if not _WHOLE.fullmatch(value) or not 1 <= int(value) <= 100:
        raise HTTPException(400, "quality must be a whole number from 1 to 100")
    return int(value)


def parse_frame(frames: str | None) -> int:
    """The 0-based index of the one frame named (frame 1 when none is)."""
    if frames is None:
        return 0
    parts = frames.split(",")
    if len(parts) != 1 or not _WHOLE.fullmatch(parts[0]) or int(parts[0]) < 1:
        raise HTTPException(400, "render one frame at a time: frames/{n}/rendered, n from 1")
    return int(parts[0]) - 1
