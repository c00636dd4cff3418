"""STOW-RS (PS3.18 10.5): store instances sent as multipart/related; type="application/dicom".

Each part goes through ``ArchiveService.ingest`` (the same validation as
C-STORE), in the worker processes when there are some (``services.offload``).
The response dataset (10.5.3, Table 10.5.3-1) lists stored instances in
ReferencedSOPSequence and refused ones in FailedSOPSequence with a FailureReason
(PS3.4 B.2.3 status codes).  200: all stored; 202: some failed; 409: none
stored; 403: the principal may not store at all.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pydicom
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from dicomvault.access.principal import Principal
from dicomvault.errors import ConflictError, DicomVaultError, ForbiddenError, InvalidInputError, NotFoundError
from dicomvault.services.context import Services
from dicomvault.web.deps import CurrentPrincipal, ServicesDep
from dicomvault.web.multipart import MultipartReader, Part, parse_media_type
from dicomvault.web.problems import UnsupportedMediaTypeError
from dicomvault.web.routers.common import DICOM_JSON, DICOMWEB, StudyUid, base_url, instance_url, study_url

router = APIRouter(prefix=DICOMWEB, tags=["STOW-RS"])

#: PS3.4 B.2.3 / PS3.18 Table 10.5.3-2 failure reasons (FailureReason, 0008,1197).
PROCESSING_FAILURE = 0x0110
NOT_AUTHORIZED = 0x0124
CANNOT_UNDERSTAND = 0xC000
STUDY_MISMATCH = 0xA900
FAILURE_REASONS: dict[type[DicomVaultError], int] = {
    InvalidInputError: CANNOT_UNDERSTAND,
    ConflictError: 0x0111,  # Duplicate SOP Instance (a different object under this UID)
    ForbiddenError: NOT_AUTHORIZED,
    NotFoundError: NOT_AUTHORIZED,
}
COERCED = 0xB000
#: Instances of one request ingested at once (overlaps one's fsync with the next one's parsing).
INGEST_CONCURRENCY = 3


def _reason(exc: DicomVaultError) -> int:
    for cls in type(exc).__mro__:
        if cls in FAILURE_REASONS:
            return FAILURE_REASONS[cls]  # type: ignore[index]
    return PROCESSING_FAILURE


def _peek_uids(data: bytes) -> tuple[str, str, str, str]:
    """(SOP Class, SOP Instance, Study, Series Instance UID) from the header, "" if unreadable."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True,
                             specific_tags=["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID",
                                            "SeriesInstanceUID"])
        return (str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", "")),
                str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesInstanceUID", "")))
    except Exception:  # noqa: BLE001 - ingest reports the real reason
        return "", "", "", ""


def _ui(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def _store_one(services: Services, principal: Principal, data: bytes, study: str | None,
               base: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Ingest one part → (referenced item, failed item).

    The header is read here only where ingest cannot say it: to refuse an instance
    of another study than the URL's before storing it, and to name a refused part.
    """
    if study:
        sop_class, sop_uid, study_uid, _series = _peek_uids(data)
        if study_uid and study_uid != study:
            return None, _failed(sop_class, sop_uid, STUDY_MISMATCH)
    ingest = services.ingest_offload or services.archive.ingest
    try:
        result = ingest(principal, data, door="dicomweb")
    except DicomVaultError as exc:
        sop_class, sop_uid, _study, _series = _peek_uids(data)
        return None, _failed(sop_class, sop_uid, _reason(exc))
    item: dict[str, Any] = {
        "00081150": _ui(result.sop_class_uid), "00081155": _ui(result.sop_instance_uid),
        "00081190": {"vr": "UR", "Value": [instance_url(base, result.study_instance_uid,
                                                        result.series_instance_uid,
                                                        result.sop_instance_uid)]},
    }
    if result.warning:
        item["00081196"] = {"vr": "US", "Value": [COERCED]}
    return item, None


def _failed(sop_class: str, sop_uid: str, reason: int) -> dict[str, Any]:
    """A FailedSOPSequence item (PS3.18 Table 10.5.3-1)."""
    return {"00081150": _ui(sop_class), "00081155": _ui(sop_uid),
            "00081197": {"vr": "US", "Value": [reason]}}


async def store(request: Request, services: Services, principal: Principal,
                study: str | None) -> JSONResponse:
    """Read the multipart body part by part and ingest each (PS3.18 10.5.2)."""
    media_type, params = parse_media_type(request.headers.get("content-type", ""))
    part_type = params.get("type", "application/dicom").lower()
    if media_type != "multipart/related" or part_type != "application/dicom":
        raise UnsupportedMediaTypeError('STOW-RS accepts multipart/related; type="application/dicom"')
    boundary = params.get("boundary")
    if not boundary:
        raise InvalidInputError("multipart boundary missing", code="malformed-multipart")
    # The whole body is parsed before anything is stored, so a malformed or truncated request
    # stores nothing (it is bounded by http.max_body_mb; never spooled to disk: PHI).
    reader = MultipartReader(boundary)
    parts: list[Part] = []
    async for chunk in request.stream():
        parts.extend(reader.feed(chunk))
    reader.close()
    base = base_url(request, services)
    offload = services.ingest_offload
    limiter = asyncio.Semaphore(offload.capacity if offload is not None else INGEST_CONCURRENCY)

    async def one(content_type: str, content: bytes) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        ctype = parse_media_type(content_type)[0] if content_type else "application/dicom"
        if ctype != "application/dicom":
            return None, _failed("", "", CANNOT_UNDERSTAND)
        async with limiter:
            return await run_in_threadpool(_store_one, services, principal, content, study, base)

    outcomes = await asyncio.gather(*(one(p.content_type, p.content) for p in parts))
    del parts
    referenced = [ok for ok, _ in outcomes if ok]
    failed = [bad for _, bad in outcomes if bad]
    forbidden = sum(bad["00081197"]["Value"][0] == NOT_AUTHORIZED for bad in failed)
    if not referenced and not failed:
        raise InvalidInputError("the request contains no instances", code="malformed-multipart")
    if not referenced and forbidden == len(failed):
        raise ForbiddenError("not allowed to store instances")
    body: dict[str, Any] = {}
    if study or referenced:
        stored_study = study or _study_of(referenced)
        if stored_study:
            body["00081190"] = {"vr": "UR", "Value": [study_url(base, stored_study)]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    status = 200 if not failed else 202 if referenced else 409
    return JSONResponse(body, status_code=status, media_type=DICOM_JSON)


def _study_of(referenced: list[dict[str, Any]]) -> str:
    url = str(referenced[0]["00081190"]["Value"][0])
    studies = {str(r["00081190"]["Value"][0]).split("/series/")[0] for r in referenced}
    return url.split("/studies/")[1].split("/")[0] if len(studies) == 1 else ""


@router.post("/studies", summary="Store instances", status_code=200)
async def store_instances(request: Request, services: ServicesDep,
                          principal: CurrentPrincipal) -> JSONResponse:
    """PS3.18 10.5 Store Instances."""
    return await store(request, services, principal, None)


@router.post("/studies/{study}", summary="Store instances into a study", status_code=200)
async def store_study_instances(study: StudyUid, request: Request, services: ServicesDep,
                                principal: CurrentPrincipal) -> JSONResponse:
    """PS3.18 10.5 Store Instances (target study given)."""
    return await store(request, services, principal, study)
