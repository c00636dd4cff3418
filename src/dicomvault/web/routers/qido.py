"""QIDO-RS (PS3.18 10.6): search studies, series and instances, nested or not.

Matching is the archive's (``services.query``, shared with C-FIND); this
module only translates query parameters (8.3.4) into a ``FindQuery`` and rows
into DICOM JSON (Annex F).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydicom.datadict import keyword_dict, keyword_for_tag

from dicomvault.dicomjson import row_to_json
from dicomvault.errors import InvalidInputError
from dicomvault.services.query import supported_keywords
from dicomvault.services.types import FindQuery, QueryLevel
from dicomvault.web.deps import CurrentPrincipal, ServicesDep
from dicomvault.web.negotiation import parse_accept
from dicomvault.web.problems import NotAcceptableError
from dicomvault.web.routers.common import (
    DICOM_JSON,
    DICOMWEB,
    SeriesUid,
    StudyUid,
    base_url,
    instance_url,
    series_url,
    study_url,
)

router = APIRouter(prefix=DICOMWEB, tags=["QIDO-RS"])

_HEX_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
MAX_OFFSET = 1_000_000
CAPPED_WARNING = ('299 dicomvault: "The number of results exceeded the maximum supported by the server. '
                  'Additional results can be requested."')

#: PS3.18 Table 10.6.3-3..5: attributes returned by default at each level.
DEFAULTS: dict[str, frozenset[str]] = {
    "STUDY": frozenset({
        "StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability", "ModalitiesInStudy",
        "ReferringPhysicianName", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
        "StudyID", "StudyInstanceUID", "StudyDescription", "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances"}),
    "SERIES": frozenset({
        "Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber", "SeriesDate",
        "SeriesTime", "BodyPartExamined", "NumberOfSeriesRelatedInstances", "StudyInstanceUID",
        "InstanceAvailability"}),
    "IMAGE": frozenset({
        "SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "NumberOfFrames",
        "AvailableTransferSyntaxUID", "StudyInstanceUID", "SeriesInstanceUID", "InstanceAvailability"}),
}
_UID_KEYWORDS = frozenset({"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
                           "SOPClassesInStudy"})


def _keyword(name: str) -> str:
    if _HEX_TAG.match(name):
        keyword = keyword_for_tag(int(name, 16))
        if not keyword:
            raise InvalidInputError("unknown attribute tag in query", code="unknown-attribute")
        return str(keyword)
    if name not in keyword_dict:
        raise InvalidInputError("unknown attribute or parameter in query", code="unknown-attribute")
    return name


def _int_param(name: str, value: str, lo: int, hi: int | None) -> int:
    if not value.isdigit() or len(value) > 12:
        raise InvalidInputError(f"{name} must be a non-negative integer", code=f"invalid-{name}")
    number = int(value)
    if number < lo or (hi is not None and number > hi):
        raise InvalidInputError(f"{name} must be between {lo} and {hi}", code=f"invalid-{name}")
    return number


class _Parsed:
    def __init__(self) -> None:
        self.filters: dict[str, str] = {}
        self.include: set[str] = set()
        self.include_all = False
        self.limit: int | None = None
        self.offset = 0
        self.fuzzy = False
        self.capped_limit = False
        self.unsupported: list[str] = []


def parse_query(request: Request, level: str, max_results: int) -> _Parsed:
    """PS3.18 8.3.4 query parameters → filters and options (400 on anything malformed)."""
    out = _Parsed()
    seen: set[str] = set()
    supported = supported_keywords(level)
    for name, value in request.query_params.multi_items():
        if len(name) > 64 or len(value) > 1024 or _CONTROL.search(value):
            raise InvalidInputError("query parameter too long or contains control characters")
        lname = name.lower()
        if lname in seen and lname != "includefield":
            raise InvalidInputError("a query parameter is repeated", code="repeated-parameter")
        seen.add(lname)
        if lname == "limit":
            limit = _int_param("limit", value, 1, None)
            out.capped_limit = limit > max_results
            out.limit = min(limit, max_results)
        elif lname == "offset":
            out.offset = _int_param("offset", value, 0, MAX_OFFSET)
        elif lname == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise InvalidInputError("fuzzymatching must be true or false")
            out.fuzzy = value.lower() == "true"
        elif lname == "includefield":
            for item in (v.strip() for v in value.split(",")):
                if item.lower() == "all":
                    out.include_all = True
                elif item:
                    out.include.add(_keyword(item))
        elif "." in name:
            out.unsupported.append(name[:64])  # sequence matching (8.3.4.1) is not supported
        else:
            keyword = _keyword(name)
            if keyword not in supported:
                out.unsupported.append(keyword)
                continue
            if keyword in _UID_KEYWORDS:
                value = value.replace(",", "\\")
            out.filters[keyword] = value
    return out


def _accepts_json(request: Request) -> None:
    for rng in parse_accept(request.headers.get("accept")):
        if rng.media_type in (DICOM_JSON, "application/json", "*/*", "application/*"):
            return
    raise NotAcceptableError("QIDO-RS responses are application/dicom+json")


def search(request: Request, services: Any, principal: Any, level: QueryLevel,
           path_filters: dict[str, str]) -> JSONResponse:
    """Run one QIDO-RS search and render it (PS3.18 10.6.3)."""
    _accepts_json(request)
    parsed = parse_query(request, level, services.settings.archive.max_query_results)
    filters = {**parsed.filters, **path_filters}
    return_keys: tuple[str, ...] = ("*",) if parsed.include_all else tuple(sorted(parsed.include))
    result = services.archive.find(principal, FindQuery(
        level=level, filters=filters, return_keys=return_keys, limit=parsed.limit,
        offset=parsed.offset, fuzzy=parsed.fuzzy), door="dicomweb")
    keywords: set[str] | None = None
    if not parsed.include_all:
        keywords = set(DEFAULTS[level]) | parsed.include | set(filters)
        if level != "STUDY" and "StudyInstanceUID" not in path_filters:
            keywords |= DEFAULTS["STUDY"]
    base = base_url(request, services)
    body = []
    for row in result.rows:
        row.setdefault("InstanceAvailability", "ONLINE")
        study = str(row.get("StudyInstanceUID", ""))
        if level == "STUDY":
            url = study_url(base, study)
        elif level == "SERIES":
            url = series_url(base, study, str(row.get("SeriesInstanceUID", "")))
        else:
            url = instance_url(base, study, str(row.get("SeriesInstanceUID", "")),
                               str(row.get("SOPInstanceUID", "")))
        body.append(row_to_json(row, keywords, {"00081190": {"vr": "UR", "Value": [url]}}))
    headers: dict[str, str] = {}
    warnings = []
    if result.capped or parsed.capped_limit:
        warnings.append(CAPPED_WARNING)
    if parsed.unsupported:
        warnings.append('299 dicomvault: "These query keys are not supported for matching and were '
                        'ignored: ' + ", ".join(sorted(set(parsed.unsupported)))[:500] + '"')
    if parsed.fuzzy:
        warnings.append('299 dicomvault: "The fuzzymatching parameter is not supported. '
                        'Only literal matching has been performed."')
    if warnings:
        headers["Warning"] = ", ".join(warnings)
    return JSONResponse(body, media_type=DICOM_JSON, headers=headers)


@router.get("/studies", summary="Search for studies")
def search_studies(request: Request, services: ServicesDep, principal: CurrentPrincipal) -> JSONResponse:
    """PS3.18 10.6.1 Search for Studies."""
    return search(request, services, principal, "STUDY", {})


@router.get("/series", summary="Search for series")
def search_all_series(request: Request, services: ServicesDep, principal: CurrentPrincipal) -> JSONResponse:
    """PS3.18 10.6.1 Search for Series (all studies)."""
    return search(request, services, principal, "SERIES", {})


@router.get("/instances", summary="Search for instances")
def search_all_instances(request: Request, services: ServicesDep,
                         principal: CurrentPrincipal) -> JSONResponse:
    """PS3.18 10.6.1 Search for Instances (all studies)."""
    return search(request, services, principal, "IMAGE", {})


@router.get("/studies/{study}/series", summary="Search for series of a study")
def search_series(study: StudyUid, request: Request, services: ServicesDep,
                  principal: CurrentPrincipal) -> JSONResponse:
    """PS3.18 10.6.1 Search for Series in a study."""
    return search(request, services, principal, "SERIES", {"StudyInstanceUID": study})


@router.get("/studies/{study}/instances", summary="Search for instances of a study")
def search_study_instances(study: StudyUid, request: Request, services: ServicesDep,
                           principal: CurrentPrincipal) -> JSONResponse:
    """PS3.18 10.6.1 Search for Instances in a study."""
    return search(request, services, principal, "IMAGE", {"StudyInstanceUID": study})


@router.get("/studies/{study}/series/{series}/instances", summary="Search for instances of a series")
def search_series_instances(study: StudyUid, series: SeriesUid, request: Request, services: ServicesDep,
                            principal: CurrentPrincipal) -> JSONResponse:
    """PS3.18 10.6.1 Search for Instances in a series."""
    return search(request, services, principal, "IMAGE",
                  {"StudyInstanceUID": study, "SeriesInstanceUID": series})

