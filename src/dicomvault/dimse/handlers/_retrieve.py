"""Shared C-MOVE / C-GET logic (PS3.4 C.4.2, C.4.3): plan before any sub-operation.

``plan_retrieve`` runs when the request arrives, before pynetdicom asks the
handler for a destination, so refusals (not authorized, unknown destination,
bad identifier) are answered with their own status instead of a generic one.
The plan (located instances, destination) is then consumed by the handler.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicomvault.config import PeerSettings, Settings
from dicomvault.dimse import status
from dicomvault.dimse.handlers._common import dicom_string, principal_of, require_service
from dicomvault.dimse.raw_store import StoredInstance
from dicomvault.errors import DicomVaultError, InvalidInputError, NotFoundError
from dicomvault.services.types import InstanceRef

LOG = logging.getLogger(__name__)

RETRIEVE_MODELS = {
    str(PatientRootQueryRetrieveInformationModelMove): ("move", "PATIENT"),
    str(StudyRootQueryRetrieveInformationModelMove): ("move", "STUDY"),
    str(PatientRootQueryRetrieveInformationModelGet): ("get", "PATIENT"),
    str(StudyRootQueryRetrieveInformationModelGet): ("get", "STUDY"),
}
#: Unique keys usable to locate instances (PS3.4 C.6.1.1 / C.6.2.1).
UNIQUE_KEYS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")


class MoveDestinationUnknownError(DicomVaultError):
    """The C-MOVE destination is not a configured, permitted peer."""

    code = "move-destination-unknown"


@dataclass
class RetrievePlan:
    service: str
    refs: list[InstanceRef]
    destination: PeerSettings | None = None
    sent: list[StoredInstance] = field(default_factory=list)
    unreadable: int = 0


def _identifier(msg: Any, context: Any) -> Dataset:
    ts = context.transfer_syntax[0]
    try:
        return decode(msg.Identifier, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
    except Exception:  # noqa: BLE001 - undecodable identifier
        raise InvalidInputError("identifier cannot be decoded") from None


def _destination(settings: Settings, requestor: PeerSettings, move_destination: str) -> PeerSettings:
    """PS3.4 C.4.2.1.4.1: the destination must be known (configured with host/port) and allowed."""
    dest = settings.peer(move_destination.strip())
    if dest is None or not dest.host or not dest.port:
        raise MoveDestinationUnknownError()
    allowed = requestor.move_destinations
    if "*" not in allowed and dest.ae_title not in allowed:
        raise MoveDestinationUnknownError()
    return dest


def plan_retrieve(assoc: Any, services: Any, msg: Any, context: Any) -> RetrievePlan:
    """Authorize, resolve the destination and locate the instances (PS3.4 C.4.2.2, C.4.3.2)."""
    service, model = RETRIEVE_MODELS[str(msg.AffectedSOPClassUID)]
    require_service(assoc, service)
    principal = principal_of(assoc)
    destination = None
    if service == "move":
        destination = _destination(services.settings, assoc.dv_peer, str(msg.MoveDestination))
    identifier = _identifier(msg, context)
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if level not in LEVELS or (model == "STUDY" and level == "PATIENT"):
        raise InvalidInputError("QueryRetrieveLevel missing or not valid for the model")
    keys = {kw: dicom_string(identifier.get(kw)).strip() for kw in UNIQUE_KEYS if kw in identifier}
    keys = {kw: v for kw, v in keys.items() if v}
    if not keys:
        raise InvalidInputError("no unique key in the retrieve identifier")
    purpose = "C-MOVE" if service == "move" else "C-GET"
    try:
        refs = services.archive.locate(principal, level, keys, door="dimse", purpose=purpose)
    except NotFoundError:
        refs = []
    return RetrievePlan(service=service, refs=list(refs), destination=destination)


def refusal_for(exc: BaseException) -> status.DimseStatus:
    """The final status for a retrieve refused before any sub-operation."""
    if isinstance(exc, MoveDestinationUnknownError):
        return status.DimseStatus(status.MOVE_DESTINATION_UNKNOWN, "Move destination unknown")
    return status.resolve(status.RETRIEVE_STATUS, exc)


def instances(plan: RetrievePlan, services: Any, event: Any) -> Iterator[tuple[int, Any]]:
    """Yield (Pending, StoredInstance) per located instance, byte-identical to the stored one."""
    for ref in plan.refs:
        if event.is_cancelled:
            yield 0xFE00, None
            return
        try:
            ts, data = services.archive.read_dataset(ref)
        except Exception:  # noqa: BLE001 - tampered/unavailable: count as failed sub-op
            LOG.error("retrieve: stored instance could not be read (integrity or availability)")
            plan.unreadable += 1
            # pynetdicom counts a non-Dataset pending value as a failed sub-operation
            yield status.PENDING, "unreadable"
            continue
        inst = StoredInstance(ref.sop_class_uid, ref.sop_instance_uid, ts, data)
        if plan.service == "move" and getattr(event.assoc, "dv_peer", None) is not None:
            inst.move_originator = event.assoc.dv_peer.ae_title
        plan.sent.append(inst)
        yield status.PENDING, inst


def record(plan: RetrievePlan, services: Any, event: Any, destination: str) -> None:
    """Audit the transfer once sub-operations are done (PS3.15 A.5.3.2)."""
    ok = [i.SOPInstanceUID for i in plan.sent
          if i.sent_status is not None and (i.sent_status == 0 or 0xB000 <= i.sent_status <= 0xBFFF)]
    failed = len(plan.refs) - len(ok)
    refs = [r for r in plan.refs if r.sop_instance_uid in set(ok)]
    services.archive.record_transfer(principal_of(event.assoc), refs, door="dimse",
                                     destination=destination, failed=failed)
