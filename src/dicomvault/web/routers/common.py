"""Shared pieces of the DICOMweb routers: UID path parameters and resource URLs (PS3.18 10)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Path, Request

from dicomvault.services.context import Services

DICOMWEB = "/dicomweb"
DICOM_JSON = "application/dicom+json"
#: PS3.5 9.1: digits and dots, components without leading zeros, at most 64 characters.
UID_PATTERN = r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$"

StudyUid = Annotated[str, Path(pattern=UID_PATTERN, max_length=64, description="Study Instance UID")]
SeriesUid = Annotated[str, Path(pattern=UID_PATTERN, max_length=64, description="Series Instance UID")]
InstanceUid = Annotated[str, Path(pattern=UID_PATTERN, max_length=64, description="SOP Instance UID")]


_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})(:\d{1,5})?$")


def base_url(request: Request, services: Services) -> str:
    """Origin for RetrieveURL/BulkDataURI: ``http.public_url`` if set, else this connection's.

    The Host header is used only when well-formed (no header injection into
    URLs); when it lacks the port (dicomweb-client sends ``Host: localhost``)
    the listening port is added back.
    """
    public = services.settings.http.public_url.rstrip("/")
    if public:
        return public
    server = request.scope.get("server") or ("localhost", 443)
    host = request.headers.get("host", "")
    m = _HOST.match(host)
    if not m:
        host, port = str(server[0]), int(server[1] or 443)
        return f"https://{host}" + (f":{port}" if port != 443 else "")
    if m.group(2) is None and server[1] and int(server[1]) != 443:
        host = f"{host}:{int(server[1])}"
    return f"https://{host}"


def study_url(base: str, study: str) -> str:
    return f"{base}{DICOMWEB}/studies/{study}"


def series_url(base: str, study: str, series: str) -> str:
    return f"{study_url(base, study)}/series/{series}"


def instance_url(base: str, study: str, series: str, sop: str) -> str:
    return f"{series_url(base, study, series)}/instances/{sop}"
