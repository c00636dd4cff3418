"""WADO-RS (PS3.18 10.4): instances, metadata, frames, bulk data, rendered and thumbnails.

Every resource first ``locate``s the instances through the archive service
(policy decision + "Begin Transferring" audit; out of scope → 404), then
streams them and records "DICOM Instances Transferred" (110104) once sent.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from dicomvault.access.principal import Principal
from dicomvault.dicomjson import dataset_to_json, render_stored_metadata, resolve_bulk_path
from dicomvault.errors import InvalidInputError
from dicomvault.services.context import Services
from dicomvault.services.types import InstanceRef
from dicomvault.web import render as rendering
from dicomvault.web import transcode
from dicomvault.web.deps import CurrentPrincipal, ServicesDep, client_address
from dicomvault.web.multipart import multipart_length, new_boundary, write_parts
from dicomvault.web.negotiation import (
    ANY_TS,
    EXPLICIT_LE,
    negotiate_dicom,
    negotiate_image,
    negotiate_octets,
    parse_accept,
)
from dicomvault.web.problems import NotAcceptableError
from dicomvault.web.routers.common import (
    DICOM_JSON,
    DICOMWEB,
    InstanceUid,
    SeriesUid,
    StudyUid,
    base_url,
    instance_url,
)

router = APIRouter(prefix=DICOMWEB, tags=["WADO-RS"])

_FRAME_LIST = re.compile(r"^[1-9][0-9]{0,5}(,[1-9][0-9]{0,5}){0,999}$")
_BULK_PATH = r"^[0-9A-Fa-f]{8}(/[0-9]{1,6}/[0-9A-Fa-f]{8}){0,8}$"
THUMBNAIL_VIEWPORT = (128, 128)
# Retrieve bodies up to this size (a single instance, a small series) are built in
# one piece; larger ones stream.
BUFFERED_BODY_LIMIT = 16 << 20


def _locate(services: Services, principal: Principal, request: Request, level: str,
            study: str, series: str = "", sop: str = "") -> list[InstanceRef]:
    keys = {"StudyInstanceUID": study}
    if level in ("SERIES", "IMAGE"):
        keys["SeriesInstanceUID"] = series
    if level == "IMAGE":
        keys["SOPInstanceUID"] = sop
    return services.archive.locate(principal, level, keys, door="dicomweb",
                                   purpose=client_address(request) or "dicomweb")


class _Transfer:
    """A multipart retrieve's progress and its closing "Instances Transferred" record (110104).

    The record is written once: after the response has gone out, or at once if
    sending fails; it is queued rather than committed on
    its own (``AuditTrail.append_soon``).  The access itself was recorded before any
    data left ("Begin Transferring", written by ``locate``).
    """

    def __init__(self, services: Services, principal: Principal, refs: list[InstanceRef],
                 destination: str) -> None:
        self._services = services
        self._principal = principal
        self._refs = refs
        self._destination = destination
        self._lock = threading.Lock()
        self._recorded = False
        self.sent = 0

    def record(self) -> None:
        with self._lock:
            if self._recorded:
                return
            self._recorded = True
        refs = self._refs
        # Not waiting for its own commit: it joins the next audit transaction (often
        # the next request's "Begin Transferring"), so a client retrieving instance by
        # instance pays one audit commit per request, not two.
        self._services.archive.record_transfer(self._principal, refs[:self.sent], door="dicomweb",
                                               destination=self._destination,
                                               failed=len(refs) - self.sent, wait=False)


def _instances_body(services: Services, refs: list[InstanceRef], target: str, boundary: str,
                    transfer: _Transfer) -> Iterator[bytes]:
    """multipart/related body of PS3.10 objects, counting what was sent in ``transfer``."""

    def parts() -> Iterator[tuple[str, Iterable[bytes], dict[str, str] | None]]:
        for ref in refs:
            if target == ANY_TS or target == ref.transfer_syntax_uid:
                content: Iterable[bytes] = services.archive.stream_part10(ref)
                ts = ref.transfer_syntax_uid
            else:
                content = [transcode.to_explicit_le(services.archive.read_part10(ref))]
                ts = EXPLICIT_LE
            yield _part_type(ts), content, None
            transfer.sent += 1

    try:
        yield from write_parts(boundary, parts())
    except BaseException:
        transfer.record()  # cut short: no background task will run
        raise


class _Recorded:
    """Records the transfer (``_Transfer.record``) once the response is sent or has failed.

    On the event loop rather than as a background task: ``record`` only queues
    the record (``AuditTrail.append_soon``), so the thread-pool round trip a
    synchronous background task costs would be pure overhead.
    """

    transfer: _Transfer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)  # type: ignore[misc]
        finally:
            self.transfer.record()


class _StreamedInstances(_Recorded, StreamingResponse):
    def __init__(self, body: Iterator[bytes], transfer: _Transfer, media_type: str,
                 headers: dict[str, str]) -> None:
        super().__init__(body, media_type=media_type, headers=headers)
        self.transfer = transfer


class _BufferedInstances(_Recorded, Response):
    def __init__(self, body: bytes, transfer: _Transfer, media_type: str) -> None:
        super().__init__(body, media_type=media_type)
        self.transfer = transfer


def _retrieve(request: Request, services: Services, principal: Principal, level: str,
              study: str, series: str = "", sop: str = "") -> Response:
    refs = _locate(services, principal, request, level, study, series, sop)
    target = negotiate_dicom(request.headers.get("accept"), {r.transfer_syntax_uid for r in refs})
    boundary = new_boundary()
    transfer = _Transfer(services, principal, refs, client_address(request) or "dicomweb")
    body = _instances_body(services, refs, target, boundary, transfer)
    media = f'multipart/related; type="application/dicom"; boundary={boundary}'
    if target != ANY_TS:
        media += f"; transfer-syntax={target}"
    if not all(target in (ANY_TS, ref.transfer_syntax_uid) for ref in refs):
        return _StreamedInstances(body, transfer, media, {})
    # Sent as stored: the length is known, so the client has the whole body
    # without waiting for the closing chunk.
    length = multipart_length(boundary, [(_part_type(ref.transfer_syntax_uid), ref.size, None)
                                         for ref in refs])
    if length <= BUFFERED_BODY_LIMIT:
        # Decrypted here, in the endpoint's worker thread: streaming it would cost a
        # thread-pool round trip per chunk and one more to find the end.
        return _BufferedInstances(b"".join(body), transfer, media)
    return _StreamedInstances(body, transfer, media, {"Content-Length": str(length)})


def _part_type(transfer_syntax: str) -> str:
    return f"application/dicom; transfer-syntax={transfer_syntax}"


@router.get("/studies/{study}", summary="Retrieve a study")
def retrieve_study(study: StudyUid, request: Request, services: ServicesDep,
                   principal: CurrentPrincipal) -> Response:
    """PS3.18 10.4 Retrieve Study (multipart/related; type="application/dicom")."""
    return _retrieve(request, services, principal, "STUDY", study)


@router.get("/studies/{study}/series/{series}", summary="Retrieve a series")
def retrieve_series(study: StudyUid, series: SeriesUid, request: Request, services: ServicesDep,
                    principal: CurrentPrincipal) -> Response:
    """PS3.18 10.4 Retrieve Series."""
    return _retrieve(request, services, principal, "SERIES", study, series)


@router.get("/studies/{study}/series/{series}/instances/{sop}", summary="Retrieve an instance")
def retrieve_instance(study: StudyUid, series: SeriesUid, sop: InstanceUid, request: Request,
                      services: ServicesDep, principal: CurrentPrincipal) -> Response:
    """PS3.18 10.4 Retrieve Instance."""
    return _retrieve(request, services, principal, "IMAGE", study, series, sop)


def _bulk_uri(instance: str) -> Callable[[str], str]:
    def uri(path: str) -> str:
        return f"{instance}/bulkdata/{path}"

    return uri


# -- metadata -------------------------------------------------------------------
def _metadata(request: Request, services: Services, principal: Principal, level: str,
              study: str, series: str = "", sop: str = "") -> Response:
    """The instances' DICOM JSON, as stored at ingest or else read from the blob."""
    for rng in parse_accept(request.headers.get("accept")):
        if rng.media_type in (DICOM_JSON, "application/json", "*/*", "application/*"):
            break
    else:
        raise NotAcceptableError("metadata is available as application/dicom+json")
    refs = _locate(services, principal, request, level, study, series, sop)
    base = base_url(request, services)
    out: list[str] = []
    try:
        stored = services.archive.stored_metadata(refs)
        for ref in refs:
            url = instance_url(base, ref.study_instance_uid, ref.series_instance_uid, ref.sop_instance_uid)
            kept = stored.get(ref.sop_instance_uid)
            if kept is not None:
                out.append(render_stored_metadata(kept, url))
                continue
            ds = transcode.read(services.archive.read_part10(ref), defer=1024)
            out.append(json.dumps(dataset_to_json(ds, _bulk_uri(url)), ensure_ascii=False,
                                  allow_nan=False, separators=(",", ":")))
    finally:
        services.archive.record_transfer(principal, refs[:len(out)], door="dicomweb",
                                         destination=client_address(request) or "dicomweb",
                                         failed=len(refs) - len(out))
    return Response("[" + ",".join(out) + "]", media_type=DICOM_JSON)


@router.get("/studies/{study}/metadata", summary="Study metadata")
def study_metadata(study: StudyUid, request: Request, services: ServicesDep,
                   principal: CurrentPrincipal) -> Response:
    """PS3.18 10.4 Retrieve Study Metadata (DICOM JSON with BulkDataURIs)."""
    return _metadata(request, services, principal, "STUDY", study)


@router.get("/studies/{study}/series/{series}/metadata", summary="Series metadata")
def series_metadata(study: StudyUid, series: SeriesUid, request: Request, services: ServicesDep,
                    principal: CurrentPrincipal) -> Response:
    """PS3.18 10.4 Retrieve Series Metadata."""
    return _metadata(request, services, principal, "SERIES", study, series)


@router.get("/studies/{study}/series/{series}/instances/{sop}/metadata", summary="Instance metadata")
def instance_metadata(study: StudyUid, series: SeriesUid, sop: InstanceUid, request: Request,
                      services: ServicesDep, principal: CurrentPrincipal) -> Response:
    """PS3.18 10.4 Retrieve Instance Metadata."""
    return _metadata(request, services, principal, "IMAGE", study, series, sop)


# -- frames and bulk data --------------------------------------------------------
def _octets_response(parts: list[bytes], ts: str, services: Services, principal: Principal,
                     refs: list[InstanceRef], request: Request) -> StreamingResponse:
    boundary = new_boundary()
    part_type = f"application/octet-stream; transfer-syntax={ts}"
    services.archive.record_transfer(principal, refs, door="dicomweb",
                                     destination=client_address(request) or "dicomweb")
    body = write_parts(boundary, ((part_type, [p], None) for p in parts))
    return StreamingResponse(body, media_type=(
        f'multipart/related; type="application/octet-stream"; boundary={boundary}; transfer-syntax={ts}'))


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}", summary="Retrieve frames")
def retrieve_frames(study: StudyUid, series: SeriesUid, sop: InstanceUid, frames: str, request: Request,
                    services: ServicesDep, principal: CurrentPrincipal) -> StreamingResponse:
    """PS3.18 10.4 Retrieve Frames (multipart application/octet-stream, ``transfer-syntax=*`` = as stored)."""
    if not _FRAME_LIST.match(frames):
        raise InvalidInputError("frame list must be comma-separated frame numbers (1-based)",
                                code="invalid-frame-list")
    numbers = [int(n) for n in frames.split(",")]
    refs = _locate(services, principal, request, "IMAGE", study, series, sop)
    ref = refs[0]
    ts = negotiate_octets(request.headers.get("accept"), ref.transfer_syntax_uid)
    ds = transcode.read(services.archive.read_part10(ref))
    return _octets_response(transcode.frame_bytes(ds, numbers, ts), ts, services, principal, refs, request)


@router.get("/studies/{study}/series/{series}/instances/{sop}/bulkdata/{path:path}",
            summary="Retrieve bulk data")
def retrieve_bulkdata(study: StudyUid, series: SeriesUid, sop: InstanceUid, path: str, request: Request,
                      services: ServicesDep, principal: CurrentPrincipal) -> StreamingResponse:
    """PS3.18 10.4 Retrieve Bulkdata for a BulkDataURI from the metadata (value as stored)."""
    if not re.match(_BULK_PATH, path):
        raise InvalidInputError("invalid bulk data path", code="invalid-bulkdata-path")
    refs = _locate(services, principal, request, "IMAGE", study, series, sop)
    ref = refs[0]
    negotiate_octets(request.headers.get("accept"), ref.transfer_syntax_uid)
    ds = transcode.read(services.archive.read_part10(ref))
    value = resolve_bulk_path(ds, path)
    return _octets_response([value], ref.transfer_syntax_uid, services, principal, refs, request)


# -- rendered and thumbnail ----------------------------------------------------------
def _rendered(request: Request, services: Services, principal: Principal, refs: list[InstanceRef],
              frame: int, *, thumbnail: bool) -> Response:
    media_type = negotiate_image(request.headers.get("accept"))
    params = request.query_params
    window = rendering.parse_window(params.get("window"))
    viewport = rendering.parse_viewport(params.get("viewport")) or (THUMBNAIL_VIEWPORT if thumbnail else None)
    quality = rendering.parse_quality(params.get("quality"))
    ref = refs[len(refs) // 2] if thumbnail else refs[0]
    ds = transcode.read(services.archive.read_part10(ref))
    image = rendering.render(ds, frame, media_type, window=window, viewport=viewport, quality=quality)
    services.archive.record_transfer(principal, [ref], door="dicomweb",
                                     destination=client_address(request) or "dicomweb")
    return Response(image, media_type=media_type)


@router.get("/studies/{study}/series/{series}/instances/{sop}/rendered", summary="Rendered instance")
def rendered_instance(study: StudyUid, series: SeriesUid, sop: InstanceUid, request: Request,
                      services: ServicesDep, principal: CurrentPrincipal) -> Response:
    """PS3.18 10.4 Retrieve Rendered Instance (first frame; image/jpeg or image/png; window)."""
    refs = _locate(services, principal, request, "IMAGE", study, series, sop)
    return _rendered(request, services, principal, refs, 1, thumbnail=False)


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frame}/rendered",
            summary="Rendered frame")
def rendered_frame(study: StudyUid, series: SeriesUid, sop: InstanceUid, frame: int, request: Request,
                   services: ServicesDep, principal: CurrentPrincipal) -> Response:
    """PS3.18 10.4 Retrieve Rendered Frame."""
    if not 1 <= frame <= 999_999:
        raise InvalidInputError("frame numbers start at 1", code="invalid-frame-list")
    refs = _locate(services, principal, request, "IMAGE", study, series, sop)
    return _rendered(request, services, principal, refs, frame, thumbnail=False)


@router.get("/studies/{study}/thumbnail", summary="Study thumbnail")
def study_thumbnail(study: StudyUid, request: Request, services: ServicesDep,
                    principal: CurrentPrincipal) -> Response:
    """PS3.18 10.4 Retrieve Study Thumbnail (a representative instance, 128×128 by default)."""
    refs = _locate(services, principal, request, "STUDY", study)
    return _rendered(request, services, principal, refs, 1, thumbnail=True)


@router.get("/studies/{study}/series/{series}/thumbnail", summary="Series thumbnail")
def series_thumbnail(study: StudyUid, series: SeriesUid, request: Request, services: ServicesDep,
                     principal: CurrentPrincipal) -> Response:
    """PS3.18 10.4 Retrieve Series Thumbnail."""
    refs = _locate(services, principal, request, "SERIES", study, series)
    return _rendered(request, services, principal, refs, 1, thumbnail=True)


@router.get("/studies/{study}/series/{series}/instances/{sop}/thumbnail", summary="Instance thumbnail")
def instance_thumbnail(study: StudyUid, series: SeriesUid, sop: InstanceUid, request: Request,
                       services: ServicesDep, principal: CurrentPrincipal) -> Response:
    """PS3.18 10.4 Retrieve Instance Thumbnail."""
    refs = _locate(services, principal, request, "IMAGE", study, series, sop)
    return _rendered(request, services, principal, refs, 1, thumbnail=True)


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frame}/thumbnail",
            summary="Frame thumbnail")
def frame_thumbnail(study: StudyUid, series: SeriesUid, sop: InstanceUid, frame: int, request: Request,
                    services: ServicesDep, principal: CurrentPrincipal) -> Response:
    """PS3.18 10.4 Retrieve Frame Thumbnail."""
    if not 1 <= frame <= 999_999:
        raise InvalidInputError("frame numbers start at 1", code="invalid-frame-list")
    refs = _locate(services, principal, request, "IMAGE", study, series, sop)
    return _rendered(request, services, principal, refs, frame, thumbnail=True)
