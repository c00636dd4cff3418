"""Authentication over HTTPS: the JSON login flow, sessions, tokens, OAuth 2.0 and OIDC.

* ``/api/auth/...`` JSON endpoints for the UI: password → (password change) →
  (MFA enrolment | TOTP) → session cookie (``HttpOnly; Secure; SameSite=Strict``,
  ``__Host-`` prefix) plus the CSRF token for ``X-CSRF-Token``.
* ``/oauth2/token`` (RFC 6749 4.4 client credentials), ``/oauth2/introspect``
  (RFC 7662), ``/.well-known/oauth-authorization-server`` (RFC 8414; IHE IUA
  ITI-103).
* ``/auth/oidc/login`` and ``/auth/oidc/callback``: OpenID Connect
  authorization code + PKCE against the configured IdP.
"""

from __future__ import annotations

import base64
import time
from binascii import Error as BinasciiError
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from dicomvault.access.identity import LoginChallenge
from dicomvault.access.oidc import OidcRelyingParty, PendingLogin
from dicomvault.access.sessions import IssuedSession
from dicomvault.access.tokens import authorization_server_metadata
from dicomvault.errors import InvalidInputError, NotAuthenticatedError, NotFoundError
from dicomvault.web.deps import (
    CSRF_HEADER,
    SESSION_COOKIE,
    CurrentPrincipal,
    ServicesDep,
    client_address,
    current_principal,
)

router = APIRouter(tags=["auth"])
OIDC_COOKIE = "__Host-dicomvault_oidc"


class LoginBody(BaseModel):
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


class ChallengeBody(BaseModel):
    challenge: str = Field(min_length=1, max_length=512)


class CodeBody(ChallengeBody):
    code: str = Field(min_length=1, max_length=64)


class NewPasswordBody(ChallengeBody):
    new_password: str = Field(min_length=1, max_length=1024)


class ChangePasswordBody(BaseModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class InviteBody(BaseModel):
    invite_token: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=1, max_length=1024)


class TokenBody(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    scopes: list[str] = Field(min_length=1, max_length=32)
    days: int = Field(default=90, ge=1, le=3650)


class BreakGlassBody(BaseModel):
    study_uid: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=2000)


def _session_response(issued: IssuedSession, extra: dict[str, Any] | None = None) -> JSONResponse:
    body = {"status": "ok", "user_id": issued.user_id, "csrf_token": issued.csrf_token,
            "csrf_header": CSRF_HEADER, "expires_at": issued.expires_at.isoformat()}
    body.update(extra or {})
    response = JSONResponse(body)
    response.set_cookie(SESSION_COOKIE, issued.cookie, httponly=True, secure=True, samesite="strict",
                        path="/")
    return response


def _step_response(step: LoginChallenge) -> JSONResponse:
    if step.session is not None:
        return _session_response(step.session)
    return JSONResponse({"status": step.status, "challenge": step.challenge})


@router.post("/api/auth/login", summary="First factor (password)")
def login(body: LoginBody, request: Request, services: ServicesDep) -> JSONResponse:
    """Password login; PHI roles continue with ``/api/auth/mfa`` (HIPAA 164.312(d))."""
    step = services.identity.authenticate_password(body.username, body.password,
                                                   client_address(request), "ui")
    return _step_response(step)


@router.post("/api/auth/mfa", summary="Second factor (TOTP or recovery code)")
def mfa(body: CodeBody, request: Request, services: ServicesDep) -> JSONResponse:
    """RFC 6238 TOTP (or a one-time recovery code) → session."""
    return _session_response(services.identity.complete_mfa(body.challenge, body.code,
                                                            client_address(request), "ui"))


@router.post("/api/auth/mfa/enrol", summary="Start TOTP enrolment")
def mfa_enrol(body: ChallengeBody, services: ServicesDep) -> JSONResponse:
    """otpauth:// URI (Key Uri Format) and its QR code as SVG."""
    enrolment = services.identity.begin_mfa_enrolment(body.challenge)
    return JSONResponse({"otpauth_uri": enrolment.provisioning_uri, "secret": enrolment.secret,
                         "qr_svg": enrolment.qr_svg.decode(),
                         "qr_png_base64": base64.b64encode(enrolment.qr_png).decode()})


@router.post("/api/auth/mfa/enrol/confirm", summary="Confirm TOTP enrolment")
def mfa_enrol_confirm(body: CodeBody, request: Request, services: ServicesDep) -> JSONResponse:
    """The first code turns MFA on; the recovery codes are shown once."""
    issued, codes = services.identity.confirm_mfa_enrolment(body.challenge, body.code,
                                                            client_address(request), "ui")
    return _session_response(issued, {"recovery_codes": codes})


@router.post("/api/auth/password/initial", summary="Set the password at first login")
def initial_password(body: NewPasswordBody, request: Request, services: ServicesDep) -> JSONResponse:
    """Replace a one-time password (policy: length, common passwords, history)."""
    return _step_response(services.identity.change_password_with_challenge(
        body.challenge, body.new_password, client_address(request), "ui"))


@router.post("/api/auth/invite", summary="Accept an invite")
def accept_invite(body: InviteBody, request: Request, services: ServicesDep) -> JSONResponse:
    return _step_response(services.identity.accept_invite(body.invite_token, body.new_password,
                                                          client_address(request), "ui"))


@router.get("/api/auth/session", summary="The current session")
def session_info(request: Request, principal: CurrentPrincipal, services: ServicesDep) -> JSONResponse:
    """Who is signed in, and the CSRF token for this session (after a page reload)."""
    body: dict[str, Any] = {"user_id": principal.id, "username": principal.name,
                            "roles": sorted(principal.roles), "kind": principal.kind,
                            "break_glass": [{"study_uid": uid, "expires_at": until.isoformat()}
                                            for uid, until in principal.break_glass]}
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and principal.kind == "user":
        body["csrf_token"] = services.identity.sessions.csrf_token_for(cookie)
        body["csrf_header"] = CSRF_HEADER
    return JSONResponse(body)


@router.post("/api/auth/password", summary="Change my password")
def change_password(body: ChangePasswordBody, principal: CurrentPrincipal, services: ServicesDep) -> Response:
    """Other sessions are logged out."""
    services.identity.change_password(principal, body.current_password, body.new_password)
    return Response(status_code=204)


@router.post("/api/auth/logout", summary="Log out")
def logout(request: Request, principal: CurrentPrincipal, services: ServicesDep) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        services.identity.logout(cookie, client_address(request), "ui")
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


@router.post("/api/auth/logout-everywhere", summary="Log out every session of my account")
def logout_everywhere(principal: CurrentPrincipal, services: ServicesDep) -> JSONResponse:
    count = services.identity.logout_everywhere(principal)
    response = JSONResponse({"sessions_ended": count})
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


@router.post("/api/auth/tokens", summary="Create a personal API token", status_code=201)
def create_token(body: TokenBody, principal: CurrentPrincipal, services: ServicesDep) -> JSONResponse:
    """Scoped, expiring, hashed at rest; the token is shown once."""
    if principal.kind != "user":
        raise NotAuthenticatedError("sign in interactively to create tokens", code="session-required")
    issued = services.identity.create_api_token(principal, principal.id, body.name, set(body.scopes),
                                                body.days)
    return JSONResponse({"token": issued.token, "token_id": issued.token_id,
                         "expires_at": issued.expires_at.isoformat(), "scopes": sorted(issued.scopes)},
                        status_code=201)


@router.delete("/api/auth/tokens/{token_id}", summary="Revoke a personal API token")
def revoke_token(token_id: str, principal: CurrentPrincipal, services: ServicesDep) -> Response:
    if len(token_id) > 64 or not token_id.replace("-", "").isalnum():
        raise NotFoundError("no such token", code="token-not-found")
    services.identity.revoke_api_token(principal, token_id)
    return Response(status_code=204)


@router.post("/api/auth/break-glass", summary="Break the glass for a study")
def break_glass(body: BreakGlassBody, principal: CurrentPrincipal, services: ServicesDep) -> JSONResponse:
    """Time-boxed access outside scope with a stated reason; a Security Alert (HIPAA 164.312(a)(2)(ii))."""
    updated = services.identity.break_glass(principal, body.study_uid, body.reason)
    until = [t for uid, t in updated.break_glass if uid == body.study_uid]
    return JSONResponse({"study_uid": body.study_uid,
                         "expires_at": max(until).isoformat() if until else None})


# -- OAuth 2.0 (machine clients) ------------------------------------------------------
async def _form(request: Request) -> dict[str, str]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise InvalidInputError("use application/x-www-form-urlencoded", code="invalid_request")
    form = await request.form(max_files=0, max_fields=20)
    return {k: str(v) for k, v in form.items() if isinstance(v, str)}


def _oauth_error(error: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error}, status_code=status, headers={"Cache-Control": "no-store"})


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, secret = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (BinasciiError, UnicodeDecodeError):
        return None
    return unquote(user.replace("+", " ")), unquote(secret.replace("+", " "))


@router.post("/oauth2/token", summary="OAuth 2.0 token endpoint (client credentials)")
async def token(request: Request, services: ServicesDep) -> JSONResponse:
    """RFC 6749 4.4; client_secret_basic or client_secret_post; errors per 5.2."""
    form = await _form(request)
    if form.get("grant_type") != "client_credentials":
        return _oauth_error("unsupported_grant_type")
    creds = _basic_credentials(request) or (form.get("client_id", ""), form.get("client_secret", ""))
    if not creds[0] or not creds[1]:
        return _oauth_error("invalid_client", 401)
    try:
        body = await run_in_threadpool(services.identity.issue_client_token, creds[0], creds[1],
                                       form.get("scope"), client_address(request))
    except NotAuthenticatedError:
        return _oauth_error("invalid_client", 401)
    except InvalidInputError:
        return _oauth_error("invalid_scope")
    return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


@router.post("/oauth2/introspect", summary="Token introspection (RFC 7662)")
async def introspect(request: Request, services: ServicesDep) -> JSONResponse:
    """The caller authenticates with its own bearer token (IHE IUA ITI-102)."""
    await run_in_threadpool(current_principal, request, services)
    form = await _form(request)
    value = form.get("token", "")
    if not value or len(value) > 8192:
        return JSONResponse({"active": False})
    return JSONResponse(await run_in_threadpool(services.identity.introspect, value))


@router.get("/.well-known/oauth-authorization-server", summary="Authorization server metadata")
def oauth_metadata(request: Request, services: ServicesDep) -> JSONResponse:
    """RFC 8414 metadata (IHE IUA ITI-103)."""
    base = services.settings.http.public_url.rstrip("/") or str(request.base_url).rstrip("/")
    doc = authorization_server_metadata(services.identity.issuer, base)
    doc.pop("revocation_endpoint", None)  # personal tokens are revoked via /api/auth/tokens/{id}
    return JSONResponse(doc)


# -- OpenID Connect -----------------------------------------------------------------------
def _relying_party(request: Request) -> Any:
    rp = getattr(request.app.state, "oidc", None)
    if rp is None:
        raise NotFoundError("single sign-on is not configured", code="sso-disabled")
    return rp


@router.get("/auth/oidc/login", summary="Start single sign-on", include_in_schema=True)
def oidc_login(request: Request) -> RedirectResponse:
    """OIDC Core 3.1.2.1 authorization request (code flow, S256 PKCE, state and nonce)."""
    rp = _relying_party(request)
    url, pending = rp.begin()
    response = RedirectResponse(url, status_code=302)
    response.set_cookie(OIDC_COOKIE, pending.to_cookie(request.app.state.services.keyring), httponly=True,
                        secure=True, samesite="lax", path="/", max_age=600)
    return response


@router.get("/auth/oidc/callback", summary="Single sign-on callback")
def oidc_callback(request: Request, services: ServicesDep) -> Response:
    """Redeem the code, validate the ID token, map IdP groups to roles, start the session."""
    rp = _relying_party(request)
    code, state = request.query_params.get("code", ""), request.query_params.get("state", "")
    cookie = request.cookies.get(OIDC_COOKIE, "")
    if not code or not state or not cookie or len(code) > 2048 or len(state) > 512:
        raise NotAuthenticatedError("single sign-on failed; start again", code="oidc-state")
    pending = PendingLogin.from_cookie(services.keyring, cookie, time.time())
    identity = rp.finish(pending, code, state)
    step = services.identity.complete_oidc_login(identity, client_address(request), "ui")
    if step.session is not None:
        response: Response = RedirectResponse("/", status_code=303)
        response.set_cookie(SESSION_COOKIE, step.session.cookie, httponly=True, secure=True,
                            samesite="strict", path="/")
    else:
        response = _step_response(step)
    response.delete_cookie(OIDC_COOKIE, path="/", secure=True, httponly=True, samesite="lax")
    return response


def make_relying_party(services: Any, client_secret: str) -> Any:
    """The configured IdP client, or None when SSO is off."""
    if not services.settings.oidc.enabled:
        return None
    return OidcRelyingParty(services.settings.oidc, client_secret)
