"""DIMSE peer → ``Principal`` (DESIGN.md access model; PS3.7 D.3.3.7 User Identity).

A peer is identified by its calling AE title, checked against the allow-list,
optionally its network address and the SHA-256 of its TLS client certificate
(``association.py``).  The principal comes from the identity service
(``dicomvault.access.identity.IdentityService.principal_from_dimse``), which
also verifies a User Identity Negotiation item (type 2 username + passcode,
type 5 JWT / API token) and makes the association act as that user; without
the identity service (minimal wiring) the AE principal is built here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dicomvault.access.principal import Principal
from dicomvault.config import PeerSettings


@dataclass(frozen=True)
class PeerCredentials:
    """What an association requestor presented."""

    ae_title: str
    address: str
    #: Hex SHA-256 of the TLS client certificate ("" if none / plain TCP).
    cert_sha256: str = ""
    #: (type, primary field, secondary field) of a User Identity item, if sent.
    user_identity: tuple[int, bytes, bytes] | None = None


def principal_for(identity_service: Any, peer: PeerSettings, creds: PeerCredentials) -> Principal:
    """The principal a DIMSE association acts as (PS3.7 D.3.3.7, PS3.15 B.9).

    Raises ``NotAuthenticatedError`` when the identity service refuses the peer or
    its user identity (the association is then rejected).
    """
    if identity_service is not None:
        from dicomvault.access.identity import DimseUserIdentity

        user = None
        if creds.user_identity is not None:
            kind, primary, secondary = creds.user_identity
            user = DimseUserIdentity(kind, primary, secondary)
        principal: Principal = identity_service.principal_from_dimse(
            creds.ae_title.strip(), creds.cert_sha256 or None, user, creds.address)
        return principal
    return Principal(
        id=f"ae:{peer.ae_title}",
        kind="ae",
        name=peer.ae_title,
        roles=frozenset({peer.role}),
        address=creds.address,
        door="dimse",
    )
