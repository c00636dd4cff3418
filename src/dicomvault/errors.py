"""One error hierarchy for every door.

Services raise these; each door (``dimse/status.py``, ``web/problems.py``) maps
them to its protocol's status in exactly one table.  ``detail`` is shown to
clients, so it must never contain PHI (names, IDs, dataset values).
"""

from __future__ import annotations


class DicomVaultError(Exception):
    """Base class. ``code`` is a stable machine-readable identifier."""

    code = "error"

    def __init__(self, detail: str = "", *, code: str | None = None) -> None:
        super().__init__(detail or self.__class__.__doc__ or self.code)
        self.detail = detail or (self.__class__.__doc__ or self.code).strip().splitlines()[0]
        if code:
            self.code = code


class InvalidInputError(DicomVaultError):
    """The request or dataset is malformed; fix the input and retry."""

    code = "invalid-input"


class NotAuthenticatedError(DicomVaultError):
    """No valid credential was presented; authenticate and retry."""

    code = "not-authenticated"


class ForbiddenError(DicomVaultError):
    """The principal may not perform this action."""

    code = "forbidden"


class NotFoundError(DicomVaultError):
    """The resource does not exist or is outside the principal's scope."""

    code = "not-found"


class ConflictError(DicomVaultError):
    """The request conflicts with stored state (e.g. a different object under the same UID)."""

    code = "conflict"


class QueryTooBroadError(DicomVaultError):
    """The query would match too much for this principal; narrow it."""

    code = "query-too-broad"


class UnavailableError(DicomVaultError):
    """A dependency (key, database, store) is unavailable; the operation failed closed."""

    code = "unavailable"


class TamperedError(DicomVaultError):
    """Stored data failed an integrity check and will not be served."""

    code = "tampered"


class ConfigurationError(DicomVaultError):
    """The configuration is invalid; the message names the setting."""

    code = "configuration"
