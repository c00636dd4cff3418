"""Helpers shared by the DIMSE handlers: the association's principal and services."""

from __future__ import annotations

from typing import Any

from dicomvault.access.principal import Principal
from dicomvault.errors import ForbiddenError


def principal_of(assoc: Any) -> Principal:
    """The principal the association authenticated as (set by the association gate)."""
    principal = getattr(assoc, "dv_principal", None)
    if not isinstance(principal, Principal):
        raise ForbiddenError("association has no authenticated principal")
    return principal


def require_service(assoc: Any, service: str) -> None:
    """Per-AE allowed services (echo/store/find/move/get), checked again per request."""
    if service not in getattr(assoc, "dv_services", frozenset()):
        raise ForbiddenError(f"service {service} not allowed for this AE")


def dicom_string(value: Any) -> str:
    """A decoded element value back in DICOM string form (multi-values joined by ``\\``)."""
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(dicom_string(v) for v in value)
    return str(value)
