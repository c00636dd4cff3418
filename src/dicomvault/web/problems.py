"""Errors → HTTP: the one table (RFC 9457 ``application/problem+json``).

Services raise ``dicomvault.errors``; this module maps them once, resolving
through the class hierarchy (STYLE.md "Errors").  ``detail`` is already safe
for clients (never PHI).  Anything unexpected becomes a 500 with an opaque
incident id that is logged (type name only, never the message) and nothing
else.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from dicomvault.errors import (
    ConfigurationError,
    ConflictError,
    DicomVaultError,
    ForbiddenError,
    InvalidInputError,
    NotAuthenticatedError,
    NotFoundError,
    QueryTooBroadError,
    TamperedError,
    UnavailableError,
)

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("dicomvault.web")


class PayloadTooLargeError(InvalidInputError):
    """The request body is larger than ``http.max_body_mb``."""

    code = "payload-too-large"


class UnsupportedMediaTypeError(InvalidInputError):
    """The request's Content-Type is not one this resource accepts."""

    code = "unsupported-media-type"


class NotAcceptableError(InvalidInputError):
    """None of the media types / transfer syntaxes in Accept can be produced."""

    code = "not-acceptable"


#: exception class → HTTP status, most specific first (resolved through the MRO).
STATUS_TABLE: dict[type[DicomVaultError], int] = {
    PayloadTooLargeError: 413,
    UnsupportedMediaTypeError: 415,
    NotAcceptableError: 406,
    InvalidInputError: 400,
    NotAuthenticatedError: 401,
    ForbiddenError: 403,
    NotFoundError: 404,
    ConflictError: 409,
    QueryTooBroadError: 413,
    UnavailableError: 503,
    TamperedError: 500,
    ConfigurationError: 500,
    DicomVaultError: 500,
}

_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 406: "Not Acceptable", 409: "Conflict",
           413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
           500: "Internal Server Error", 503: "Service Unavailable"}


def status_for(exc: DicomVaultError) -> int:
    """HTTP status of a service error (first match along the class hierarchy)."""
    for cls in type(exc).__mro__:
        if cls in STATUS_TABLE:
            return STATUS_TABLE[cls]  # type: ignore[index]
    return 500


def problem(status: int, detail: str, code: str, *, headers: dict[str, str] | None = None,
            **extra: Any) -> Response:
    """An RFC 9457 problem document."""
    body: dict[str, Any] = {"type": f"urn:dicomvault:problem:{code}", "title": _TITLES.get(status, "Error"),
                            "status": status, "detail": detail, "code": code}
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def incident_response(exc: BaseException, kind: str = "internal-error") -> Response:
    """A 500 with an opaque incident id; logs the exception type only (no PHI)."""
    incident = secrets.token_hex(8)
    log.error("incident %s: %s", incident, type(exc).__name__)
    return problem(500, f"internal error (incident {incident})", kind, incident=incident)


def error_response(exc: DicomVaultError) -> Response:
    """The problem response for a service error."""
    status = status_for(exc)
    if isinstance(exc, TamperedError):
        return incident_response(exc, exc.code)
    if status == 500:
        return incident_response(exc)
    headers = {"WWW-Authenticate": 'Bearer realm="dicomvault"'} if status == 401 else None
    return problem(status, exc.detail, exc.code, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers once on ``app``."""

    async def on_service_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DicomVaultError)
        return error_response(exc)

    async def on_validation(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        # Field locations only: never echo the submitted values.
        fields = sorted({".".join(str(p) for p in e.get("loc", ())) for e in exc.errors()})
        return problem(400, "invalid request parameters: " + ", ".join(fields)[:300], "invalid-input")

    async def on_http(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        detail = exc.detail if isinstance(exc.detail, str) and exc.status_code != 404 else "not found"
        return problem(exc.status_code, detail, code, headers=getattr(exc, "headers", None))

    app.add_exception_handler(DicomVaultError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
