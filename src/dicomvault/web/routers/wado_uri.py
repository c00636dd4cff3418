"""WADO-URI (PS3.18 9): ``GET /dicomweb/wado?requestType=WADO&studyUID=…&seriesUID=…&objectUID=…``.

``contentType``: ``application/dicom`` (the PS3.10 object, optionally in
``transferSyntax``), ``image/jpeg`` (default for images) or ``image/png``,
with ``windowCenter``/``windowWidth``, ``rows``/``columns`` and ``frameNumber``.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from dicomvault.errors import InvalidInputError
from dicomvault.web import render as rendering
from dicomvault.web import transcode
from dicomvault.web.deps import CurrentPrincipal, ServicesDep, client_address
from dicomvault.web.negotiation import EXPLICIT_LE, can_serve
from dicomvault.web.problems import NotAcceptableError
from dicomvault.web.routers.common import DICOMWEB, UID_PATTERN

router = APIRouter(prefix=DICOMWEB, tags=["WADO-URI"])
_UID = re.compile(UID_PATTERN)
_ALLOWED = frozenset({"requestType", "studyUID", "seriesUID", "objectUID", "contentType", "transferSyntax",
                      "windowCenter", "windowWidth", "rows", "columns", "frameNumber", "imageQuality",
                      "charset", "anonymize", "annotation", "region", "presentationUID",
                      "presentationSeriesUID"})


def _uid(request: Request, name: str) -> str:
    value = request.query_params.get(name, "")
    if not value or len(value) > 64 or not _UID.match(value):
        raise InvalidInputError(f"{name} must be a valid UID", code="invalid-uid")
    return value


def _number(request: Request, name: str, lo: int, hi: int) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    if not value.isdigit() or not lo <= int(value) <= hi:
        raise InvalidInputError(f"{name} must be an integer {lo}-{hi}")
    return int(value)


@router.get("/wado", summary="WADO-URI retrieve")
def wado(request: Request, services: ServicesDep, principal: CurrentPrincipal) -> Response:
    """PS3.18 9.1 Retrieve DICOM Object / rendered image by URI."""
    params = request.query_params
    if set(params.keys()) - _ALLOWED:
        raise InvalidInputError("unknown WADO-URI parameter", code="invalid-parameter")
    if params.get("requestType") != "WADO":
        raise InvalidInputError("requestType must be WADO", code="invalid-parameter")
    keys = {"StudyInstanceUID": _uid(request, "studyUID"), "SeriesInstanceUID": _uid(request, "seriesUID"),
            "SOPInstanceUID": _uid(request, "objectUID")}
    content_type = (params.get("contentType") or "image/jpeg").split(",")[0].strip().lower()
    if content_type not in ("application/dicom", "image/jpeg", "image/png", "*/*", "image/*"):
        raise NotAcceptableError("contentType must be application/dicom, image/jpeg or image/png")
    destination = client_address(request) or "wado-uri"
    refs = services.archive.locate(principal, "IMAGE", keys, door="dicomweb", purpose=destination)
    ref = refs[0]
    if content_type == "application/dicom":
        target = params.get("transferSyntax") or ref.transfer_syntax_uid
        if not can_serve(ref.transfer_syntax_uid, target):
            raise NotAcceptableError("the object cannot be sent in that transfer syntax")
        if target == ref.transfer_syntax_uid:
            body = services.archive.read_part10(ref)
        else:
            body = transcode.to_explicit_le(services.archive.read_part10(ref))
            target = EXPLICIT_LE
        services.archive.record_transfer(principal, refs, door="dicomweb", destination=destination)
        return StreamingResponse(iter([body]), media_type="application/dicom")
    center, width = params.get("windowCenter"), params.get("windowWidth")
    window = rendering.parse_window(f"{center},{width}") if center is not None or width is not None else None
    rows, cols = _number(request, "rows", 1, 4096), _number(request, "columns", 1, 4096)
    viewport = (cols or rows or 4096, rows or cols or 4096) if rows or cols else None
    frame = _number(request, "frameNumber", 1, 999_999) or 1
    quality = _number(request, "imageQuality", 1, 100) or 90
    media = "image/png" if content_type == "image/png" else "image/jpeg"
    ds = transcode.read(services.archive.read_part10(ref))
    image = rendering.render(ds, frame, media, window=window, viewport=viewport, quality=quality)
    services.archive.record_transfer(principal, refs, door="dicomweb", destination=destination)
    return Response(image, media_type=media)
