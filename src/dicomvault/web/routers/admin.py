"""REST admin API (``/api/admin``): users, roles, care-team assignments, tokens, OAuth clients, DICOM peers.

Every call goes through ``services.identity``, which authorises it with the
single policy (``user:manage`` / ``peer:manage``) and audits it in the same
transaction.  Described by the OpenAPI document at ``/api/openapi.json``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from dicomvault.access.permissions import ROLE_PERMISSIONS, USER_MANAGE
from dicomvault.access.policy import Resource
from dicomvault.config import DIMSE_SERVICES, PeerSettings
from dicomvault.errors import ForbiddenError
from dicomvault.web.deps import CurrentPrincipal, ServicesDep
from dicomvault.web.routers.common import UID_PATTERN

router = APIRouter(prefix="/api/admin", tags=["admin"])

UserRef = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9._@-]{1,63}$", max_length=64)]
AeTitle = Annotated[str, Path(pattern=r"^[\x21-\x5b\x5d-\x7e][\x20-\x5b\x5d-\x7e]{0,15}$", max_length=16)]
StudyUidPath = Annotated[str, Path(pattern=UID_PATTERN, max_length=64)]
TokenId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class NewUser(BaseModel):
    username: str = Field(min_length=2, max_length=64)
    roles: list[str] = Field(min_length=1, max_length=16)
    display_name: str = Field(default="", max_length=200)
    invite: bool = False


class RolesBody(BaseModel):
    roles: list[str] = Field(min_length=1, max_length=16)


class UserPatch(BaseModel):
    enabled: bool


class NewClient(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    roles: list[str] = Field(min_length=1, max_length=16)
    scopes: list[str] = Field(default_factory=list, max_length=32)


class PeerBody(BaseModel):
    host: str = Field(default="", max_length=253)
    port: int = Field(default=0, ge=0, le=65535)
    tls: bool = True
    services: list[str] = Field(default_factory=lambda: list(DIMSE_SERVICES), max_length=8)
    move_destinations: list[str] = Field(default_factory=list, max_length=64)
    allowed_hosts: list[str] = Field(default_factory=list, max_length=64)
    client_cert_sha256: str = Field(default="", max_length=100)
    role: str = "service"


def _peer_json(peer: PeerSettings) -> dict[str, Any]:
    return {"ae_title": peer.ae_title, "host": peer.host, "port": peer.port, "tls": peer.tls,
            "services": list(peer.services), "move_destinations": list(peer.move_destinations),
            "allowed_hosts": list(peer.allowed_hosts), "client_cert_sha256": peer.client_cert_sha256,
            "role": peer.role}


@router.get("/users", summary="List users")
def list_users(principal: CurrentPrincipal, services: ServicesDep) -> JSONResponse:
    users = services.identity.list_users(principal)
    return JSONResponse([{"user_id": u.user_id, "username": u.username, "display_name": u.display_name,
                          "roles": sorted(u.roles), "enabled": u.enabled, "mfa_enabled": u.mfa_enabled,
                          "sso": u.sso} for u in users])


@router.post("/users", summary="Create a user", status_code=201)
def create_user(body: NewUser, principal: CurrentPrincipal, services: ServicesDep) -> JSONResponse:
    """A random one-time password (changed at first login) or an invite; never a default password."""
    created = services.identity.create_user(principal, body.username, set(body.roles), body.display_name,
                                            invite=body.invite)
    return JSONResponse({"user_id": created.user_id, "username": created.username,
                         "one_time_password": created.one_time_password,
                         "invite_token": created.invite_token}, status_code=201)


@router.patch("/users/{user}", summary="Enable or disable a user")
def patch_user(user: UserRef, body: UserPatch, principal: CurrentPrincipal,
               services: ServicesDep) -> Response:
    services.identity.set_enabled(principal, user, body.enabled)
    return Response(status_code=204)


@router.put("/users/{user}/roles", summary="Replace a user's roles")
def set_roles(user: UserRef, body: RolesBody, principal: CurrentPrincipal, services: ServicesDep) -> Response:
    services.identity.set_roles(principal, user, set(body.roles))
    return Response(status_code=204)


@router.post("/users/{user}/mfa/reset", summary="Reset a user's second factor")
def reset_mfa(user: UserRef, principal: CurrentPrincipal, services: ServicesDep) -> Response:
    services.identity.reset_mfa(principal, user)
    return Response(status_code=204)


@router.put("/users/{user}/assignments/{study}", summary="Add a user to a study's care team")
def assign(user: UserRef, study: StudyUidPath, principal: CurrentPrincipal,
           services: ServicesDep) -> Response:
    services.identity.assign_care_team(principal, user, study)
    return Response(status_code=204)


@router.delete("/users/{user}/assignments/{study}", summary="Remove a user from a study's care team")
def unassign(user: UserRef, study: StudyUidPath, principal: CurrentPrincipal,
             services: ServicesDep) -> Response:
    services.identity.assign_care_team(principal, user, study, remove=True)
    return Response(status_code=204)


@router.get("/roles", summary="Roles and their permissions")
def roles(principal: CurrentPrincipal, services: ServicesDep) -> JSONResponse:
    """The shipped roles: permission → scope (DESIGN.md access model)."""
    if not services.policy.authorize(principal, USER_MANAGE, Resource("user")).allowed:
        raise ForbiddenError(f"not allowed: {USER_MANAGE}")
    return JSONResponse({role: {p: s.value for p, s in sorted(perms.items())}
                         for role, perms in sorted(ROLE_PERMISSIONS.items()) if role != "system"})


@router.delete("/tokens/{token_id}", summary="Revoke an API token")
def revoke_token(token_id: TokenId, principal: CurrentPrincipal, services: ServicesDep) -> Response:
    services.identity.revoke_api_token(principal, token_id)
    return Response(status_code=204)


@router.post("/oauth-clients", summary="Register an OAuth 2.0 machine client", status_code=201)
def create_client(body: NewClient, principal: CurrentPrincipal, services: ServicesDep) -> JSONResponse:
    """Client-credentials client; the secret is shown once."""
    client_id, secret = services.identity.create_oauth_client(principal, body.name, set(body.roles),
                                                              set(body.scopes))
    return JSONResponse({"client_id": client_id, "client_secret": secret}, status_code=201)


@router.get("/peers", summary="List DICOM peers")
def list_peers(principal: CurrentPrincipal, services: ServicesDep) -> JSONResponse:
    return JSONResponse([_peer_json(p) for p in services.identity.list_peers(principal)])


@router.put("/peers/{ae_title}", summary="Add or replace a DICOM peer")
def put_peer(ae_title: AeTitle, body: PeerBody, principal: CurrentPrincipal,
             services: ServicesDep) -> Response:
    peer = PeerSettings(ae_title=ae_title, host=body.host, port=body.port, tls=body.tls,
                        services=tuple(body.services), move_destinations=tuple(body.move_destinations),
                        allowed_hosts=tuple(body.allowed_hosts), client_cert_sha256=body.client_cert_sha256,
                        role=body.role)
    services.identity.add_peer(principal, peer)
    return Response(status_code=204)


@router.delete("/peers/{ae_title}", summary="Remove a DICOM peer")
def delete_peer(ae_title: AeTitle, principal: CurrentPrincipal, services: ServicesDep) -> Response:
    services.identity.remove_peer(principal, ae_title)
    return Response(status_code=204)
