"""Helpers shared by the DIMSE handlers: the association's principal and services."""

from __future__ import annotations

from typing import Any

from dicomvault.access.principal import Principal
from dicomvault.dimse.identifier import dicom_string
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


__all__ = ["dicom_string", "principal_of", "require_service"]
