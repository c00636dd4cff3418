"""Association acceptance policy (PS3.8 7.1.1.9, PS3.15 B.9; STANDARDS.md item 16).

Decides, at A-ASSOCIATE-RQ time, whether a requestor may associate: the
called AE title must be ours, the calling AE title must be a configured peer
(unless ``dimse.reject_unknown_peers`` is off), and the peer's address and
client-certificate fingerprint must match its configuration.  Rejections use
the A-ASSOCIATE-RJ result/source/reason of PS3.8 Table 9-21 and are audited as
Security Alert / Node Authentication events; so are acceptances.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass

from dicomvault.audit.events import (
    Action,
    ActiveParticipant,
    AuditEvent,
    EventId,
    EventType,
    ObjectIdType,
    Outcome,
    ParticipantObject,
    RoleId,
)
from dicomvault.config import DIMSE_SERVICES, PeerSettings, Settings
from dicomvault.dimse.identity import PeerCredentials

#: PS3.8 Table 9-21: (result, source, reason).
RESULT_REJECTED_PERMANENT = 0x01
SOURCE_SERVICE_USER = 0x01
REASON_NO_REASON = 0x01
REASON_CALLING_AE_NOT_RECOGNIZED = 0x03
REASON_CALLED_AE_NOT_RECOGNIZED = 0x07

#: Services an unknown peer gets when ``dimse.reject_unknown_peers`` is off (weakened mode).
UNKNOWN_PEER_SERVICES = ("echo", "store")


@dataclass(frozen=True)
class Rejection:
    """An A-ASSOCIATE-RJ to send, plus the (non-PHI) reason for the audit trail."""

    result: int
    source: int
    reason: int
    why: str


@dataclass(frozen=True)
class Acceptance:
    peer: PeerSettings
    #: Services this association may use (subset of echo/store/find/move/get).
    services: frozenset[str]


def _safe_ae(ae_title: str) -> str:
    """The calling AE title as audit-safe text (printable ASCII, 16 chars)."""
    return re.sub(r"[^\x20-\x7e]", "?", ae_title.strip())[:16]


def decide(settings: Settings, called_ae: str, creds: PeerCredentials) -> Acceptance | Rejection:
    """Accept or reject an association request (PS3.8 7.1.1.9 A-ASSOCIATE-RJ reasons)."""
    if called_ae.strip() != settings.dimse.ae_title:
        return Rejection(RESULT_REJECTED_PERMANENT, SOURCE_SERVICE_USER,
                         REASON_CALLED_AE_NOT_RECOGNIZED, "called AE title not recognized")
    peer = settings.peer(creds.ae_title.strip())
    if peer is None:
        if settings.dimse.reject_unknown_peers:
            return Rejection(RESULT_REJECTED_PERMANENT, SOURCE_SERVICE_USER,
                             REASON_CALLING_AE_NOT_RECOGNIZED, "calling AE title not recognized")
        peer = PeerSettings(ae_title=creds.ae_title.strip(), services=UNKNOWN_PEER_SERVICES)
        return Acceptance(peer, frozenset(UNKNOWN_PEER_SERVICES))
    # Address and certificate mismatches get the same reject reason as an unknown
    # AE (no oracle for which check failed); the audit record says which.
    if peer.allowed_hosts and creds.address not in peer.allowed_hosts:
        return Rejection(RESULT_REJECTED_PERMANENT, SOURCE_SERVICE_USER,
                         REASON_CALLING_AE_NOT_RECOGNIZED, "address not allowed for this AE")
    if peer.client_cert_sha256:
        expected = peer.client_cert_sha256.lower().replace(":", "")
        if not creds.cert_sha256 or not hmac.compare_digest(expected, creds.cert_sha256):
            return Rejection(RESULT_REJECTED_PERMANENT, SOURCE_SERVICE_USER,
                             REASON_CALLING_AE_NOT_RECOGNIZED,
                             "client certificate does not match the AE's pinned certificate")
    return Acceptance(peer, frozenset(s for s in peer.services if s in DIMSE_SERVICES))


def node_authentication_event(
    settings: Settings, creds: PeerCredentials, outcome: Outcome, why: str
) -> AuditEvent:
    """Security Alert / Node Authentication (PS3.15 A.5.3.11, CID 401 110126)."""
    requestor = ActiveParticipant(
        user_id=_safe_ae(creds.ae_title) or "(unknown)", is_requestor=True, role=RoleId.SOURCE,
        network_access_point=creds.address,
    )
    archive = ActiveParticipant(
        user_id=settings.dimse.ae_title, is_requestor=False, role=RoleId.DESTINATION,
        alternative_user_id="dicomvault",
    )
    node = ParticipantObject(
        type_code=2, type_role=13, id_type=ObjectIdType.NODE_ID,
        object_id=creds.address,
        details=(("CertificateSHA256", creds.cert_sha256),) if creds.cert_sha256 else (),
    )
    return AuditEvent(
        event_id=EventId.SECURITY_ALERT,
        action=Action.EXECUTE,
        outcome=outcome,
        participants=[requestor, archive],
        objects=[node],
        event_types=[EventType.NODE_AUTHENTICATION],
        outcome_description=why,
        door="dimse",
    )
