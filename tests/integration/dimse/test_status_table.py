"""The DIMSE status tables (dimse/status.py): error class → status, per service (no sockets)."""

from __future__ import annotations

import pytest

from dicomvault import errors
from dicomvault.dimse import status
from dicomvault.dimse.handlers._retrieve import MoveDestinationUnknownError, refusal_for
from dicomvault.dimse.handlers.store import SopClassMismatchError


class _SubclassOfConflict(errors.ConflictError):
    """Resolution walks the class hierarchy."""


# (table, error, expected code)
CASES = [
    (status.STORE_STATUS, errors.InvalidInputError(), 0xC000),
    (status.STORE_STATUS, SopClassMismatchError(), 0xC000),  # the door answers 0xA900 itself
    (status.STORE_STATUS, errors.ForbiddenError(), 0x0124),
    (status.STORE_STATUS, errors.NotAuthenticatedError(), 0x0124),
    (status.STORE_STATUS, errors.ConflictError(), 0xC011),
    (status.STORE_STATUS, _SubclassOfConflict(), 0xC011),
    (status.STORE_STATUS, errors.UnavailableError(), 0xA700),
    (status.FIND_STATUS, errors.InvalidInputError(), 0xA900),
    (status.FIND_STATUS, errors.QueryTooBroadError(), 0xA700),
    (status.FIND_STATUS, errors.ForbiddenError(), 0x0124),
    (status.FIND_STATUS, errors.UnavailableError(), 0xA700),
    (status.RETRIEVE_STATUS, errors.InvalidInputError(), 0xA900),
    (status.RETRIEVE_STATUS, errors.QueryTooBroadError(), 0xA701),
    (status.RETRIEVE_STATUS, errors.ForbiddenError(), 0x0124),
    (status.RETRIEVE_STATUS, errors.UnavailableError(), 0xA701),
]


@pytest.mark.parametrize(("table", "error", "code"), CASES)
def test_error_resolves_to_status(table, error, code):
    assert status.resolve(table, error).code == code


@pytest.mark.parametrize("table", [status.STORE_STATUS, status.FIND_STATUS,
                                   status.RETRIEVE_STATUS])
def test_unexpected_error_is_0110_with_opaque_incident_and_no_values_logged(table, caplog):
    value = "Patient^" + "Secret"  # a runtime value, as a data set would supply
    try:
        raise KeyError(value)
    except KeyError as exc:
        resolved = status.resolve(table, exc)
    assert resolved.code == 0x0110
    assert "incident" in resolved.comment
    assert "Secret" not in resolved.comment
    assert caplog.records and all("Secret" not in r.getMessage() for r in caplog.records)


def test_unknown_move_destination_is_a801():
    assert refusal_for(MoveDestinationUnknownError()).code == 0xA801


def test_status_dataset_truncates_error_comment_to_lo_length():
    ds = status.status_dataset(status.DimseStatus(0xC000, "x" * 100))
    assert ds.Status == 0xC000 and len(ds.ErrorComment) == 64
