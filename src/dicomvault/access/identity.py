"""Identity façade: authentication for every door, and account administration.

The doors (web, DIMSE, CLI) call this module only:

* ``authenticate_password`` → ``LoginChallenge``.  A role in ``PHI_ROLES`` (or
  any account with MFA enrolled) gets **no session** from a password alone
  (HIPAA 164.312(d)); ``complete_mfa`` verifies the TOTP/recovery code and
  returns the session.
* ``principal_from_session`` / ``principal_from_bearer`` /
  ``principal_from_dimse`` (PS3.7 D.3.3.7 User Identity Negotiation) build the
  ``Principal`` that ``Policy.authorize`` judges.  Roles are read from the
  database on every request, so a role change or a disabled account takes
  effect on the next request (the documented bound is zero).
* User, token, client, care-team, peer administration and break-the-glass,
  each authorised through ``Policy`` and audited (PS3.15 A.5.3.11 User
  Authentication, A.5.3.10 Security Alert) through the injected ``audit_sink``
  inside the same transaction: if the audit hook fails, nothing is committed.
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

from argon2 import PasswordHasher
from sqlalchemy import Engine, and_, bindparam, delete, select
from sqlalchemy.orm import Session, sessionmaker

from dicomvault.access.lockout import LoginThrottledError, LoginThrottler
from dicomvault.access.mfa import Enrolment, MfaService
from dicomvault.access.models import (
    ApiToken,
    BreakGlassGrant,
    CareTeamAssignment,
    DicomPeer,
    PasswordHistory,
    User,
    join_set,
    split_set,
)
from dicomvault.access.oidc import OidcIdentity
from dicomvault.access.passwords import Passwords
from dicomvault.access.permissions import (
    BREAK_GLASS,
    PEER_MANAGE,
    PHI_ROLES,
    ROLE_PERMISSIONS,
    USER_MANAGE,
    Scope,
    scope_for,
)
from dicomvault.access.policy import Policy, Resource
from dicomvault.access.principal import Principal
from dicomvault.access.sessions import IssuedSession, SessionManager
from dicomvault.access.tokens import TOUCH_INTERVAL, IssuedToken, TokenIdentity, TokenService
from dicomvault.audit.events import (
    AuditEvent,
    EventType,
    Outcome,
    node_object,
    security_alert_event,
    study_object,
    user_authentication_event,
    user_object,
)
from dicomvault.config import DIMSE_SERVICES, PeerSettings, Settings
from dicomvault.crypto.keyring import Keyring, WrappedKey
from dicomvault.errors import (
    ConflictError,
    DicomVaultError,
    ForbiddenError,
    InvalidInputError,
    NotAuthenticatedError,
    NotFoundError,
)
from dicomvault.index.db import unit_of_work

#: Receives the events and the open session, so records commit with the change (no audit, no data).
AuditSink = Callable[[list[AuditEvent], Session], None]
ChallengeStage = Literal["mfa", "enrol", "password"]
CHALLENGE_SECONDS = 300
INVITE_HOURS = 72
MIN_REASON_LENGTH = 10
USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._@-]{1,63}$")
AE_TITLE_RE = re.compile(r"^[\x21-\x5b\x5d-\x7e](?:[\x20-\x5b\x5d-\x7e]{0,14}[\x21-\x5b\x5d-\x7e])?$")
ASSIGNABLE_ROLES = frozenset(ROLE_PERMISSIONS) - {"system"}
_BREAK_GLASS_AAD = "dicomvault/break-glass/"
_INVALID_LOGIN = "invalid username or password"
# Prebuilt statements of the per-request bearer path.
# A personal token, its user and the user's active break-glass grants in one statement
# (one row per grant, or one row without a grant).
_BEARER_PERSONAL = (
    select(ApiToken.id, ApiToken.user_id, ApiToken.scopes, ApiToken.expires_at, ApiToken.revoked_at,
           ApiToken.last_used_at, User.username, User.roles, User.enabled,
           BreakGlassGrant.study_uid.label("grant_study_uid"),
           BreakGlassGrant.expires_at.label("grant_expires_at"))
    .select_from(ApiToken)
    .join(User, User.id == ApiToken.user_id)
    .outerjoin(BreakGlassGrant, and_(BreakGlassGrant.user_id == ApiToken.user_id,
                                     BreakGlassGrant.expires_at > bindparam("b_now")))
    .where(ApiToken.token_hash == bindparam("b_hash"))
)
_ACTIVE_GRANTS = select(BreakGlassGrant.study_uid, BreakGlassGrant.expires_at).where(
    BreakGlassGrant.user_id == bindparam("b_user"), BreakGlassGrant.expires_at > bindparam("b_now"))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class LoginChallenge:
    """Outcome of a first-factor login.

    ``status`` ``ok`` carries a ``session``; every other status carries an
    opaque, short-lived ``challenge`` for the next step and no session.
    """

    status: Literal["ok", "mfa_required", "mfa_enrolment_required", "password_change_required"]
    user_id: str
    challenge: str | None = None
    session: IssuedSession | None = None


@dataclass(frozen=True)
class CreatedUser:
    user_id: str
    username: str
    #: Shown once; the user must change it at first login.
    one_time_password: str | None = None
    #: Shown once (sent as a link); expires after ``INVITE_HOURS``.
    invite_token: str | None = None


@dataclass(frozen=True)
class UserView:
    """A user as the admin API and CLI list it (no secrets)."""

    user_id: str
    username: str
    display_name: str
    roles: frozenset[str]
    enabled: bool
    mfa_enabled: bool
    sso: bool


@dataclass(frozen=True)
class DimseUserIdentity:
    """PS3.7 D.3.3.7.1 User Identity sub-item as received in the A-ASSOCIATE-RQ.

    ``identity_type``: 1 username, 2 username + passcode, 3 Kerberos, 4 SAML, 5 JWT.
    """

    identity_type: int
    primary_field: bytes
    secondary_field: bytes = b""


@dataclass
class _Tx:
    session: Session
    events: list[AuditEvent] = field(default_factory=list)
    error: DicomVaultError | None = None

    def fail(self, error: DicomVaultError) -> Any:
        """Commit what was recorded (failure counters, audit) and raise ``error`` after."""
        self.error = error
        return None

    def deferred(self) -> Any:
        """Return from the body; the recorded error is raised once the transaction commits."""
        assert self.error is not None
        return None


class IdentityService:
    """Authentication and account administration for all doors."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        keyring: Keyring,
        settings: Settings,
        audit_sink: AuditSink,
        *,
        policy: Policy | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        hasher: PasswordHasher | None = None,
        issuer: str | None = None,
        read_factory: sessionmaker[Session] | None = None,
    ) -> None:
        self._factory = factory
        #: Read-only sessions for the per-request fast path (no write lock on SQLite).
        self._read_factory = read_factory
        self.keyring = keyring
        self.settings = settings
        self._audit_sink = audit_sink
        self._clock = clock
        self.policy = policy or Policy(clock=clock)
        security = settings.security
        self.passwords = Passwords(security, hasher)
        self.throttle = LoginThrottler(security, clock)
        self.mfa = MfaService(keyring, security.mfa_issuer, clock)
        self.sessions = SessionManager(keyring, security, clock)
        base = settings.http.public_url.rstrip("/") or f"https://{settings.http.host}:{settings.http.port}"
        self.issuer = issuer or base
        self.tokens = TokenService(keyring, self.issuer, self.issuer + "/dicomweb", clock)

    # ------------------------------------------------------------------ plumbing
    @contextmanager
    def _tx(self) -> Iterator[_Tx]:
        with unit_of_work(self._factory) as session:
            tx = _Tx(session)
            yield tx
            if tx.events:
                self._audit_sink(list(tx.events), session)  # in the transaction: no audit, no commit
        if tx.error is not None:
            raise tx.error

    def _user_by_name(self, session: Session, username: str) -> User | None:
        return session.execute(
            select(User).where(User.username == username.strip().lower())
        ).scalar_one_or_none()

    def _user_by_ref(self, session: Session, ref: str) -> User:
        """A user by id or username; ``NotFoundError`` otherwise."""
        user = session.get(User, ref) if len(ref) == 32 else None
        user = user or self._user_by_name(session, ref)
        if user is None:
            raise NotFoundError("no such user", code="user-not-found")
        return user

    def _active_grants(self, session: Session, user_id: str) -> tuple[tuple[str, datetime], ...]:
        rows = session.connection().execute(
            _ACTIVE_GRANTS, {"b_user": user_id, "b_now": self._clock()}).all()
        return tuple((uid, until) for uid, until in rows)

    def _principal(
        self, session: Session, user: User, *, door: str, address: str | None,
        kind: Literal["user", "token"] = "user", scopes: frozenset[str] | None = None,
        session_id: str | None = None, mfa_verified: bool = False,
    ) -> Principal:
        return Principal(
            id=user.id, kind=kind, name=user.username, roles=split_set(user.roles),
            address=address, scopes=scopes, door=door,
            break_glass=self._active_grants(session, user.id), session_id=session_id,
            mfa_verified=mfa_verified,
        )

    def _login_event(
        self, user_id: str, outcome: Outcome, address: str | None, door: str, description: str,
        *, logout: bool = False, role: str | None = None,
    ) -> AuditEvent:
        return user_authentication_event(
            user_id, event_type=EventType.LOGOUT if logout else EventType.LOGIN, outcome=outcome,
            address=address, role=role, door=door, description=description,
        )

    def _alert(
        self, actor: Principal, event_type: EventType, description: str, *,
        objects: list[Any] | None = None, outcome: Outcome = Outcome.SUCCESS,
        context: dict[str, object] | None = None,
    ) -> AuditEvent:
        return security_alert_event(
            actor.id, event_type=event_type, outcome=outcome, address=actor.address,
            actor_role=actor.primary_role, objects=objects, door=actor.door,
            description=description, context=context,
        )

    def _require(self, tx: _Tx, actor: Principal, permission: str, kind: str) -> bool:
        """Policy decision for an administrative action; a denial is audited and raised."""
        decision = self.policy.authorize(actor, permission, Resource(kind))
        if decision.allowed:
            return True
        tx.events.append(self._alert(
            actor, EventType.USE_OF_RESTRICTED_FUNCTION, f"denied {permission}",
            outcome=Outcome.MINOR_FAILURE,
        ))
        tx.fail(ForbiddenError(f"not allowed: {permission}"))
        return False

    # -- challenges (opaque, MAC'd, short-lived; bound to user and stage) ----------
    def _challenge(self, user_id: str, stage: ChallengeStage) -> str:
        exp = int(self._clock().timestamp()) + CHALLENGE_SECONDS
        body = f"{user_id}.{stage}.{exp}.{secrets.token_hex(8)}"
        mac = _b64(self.keyring.hmac(self.keyring.session_key, b"challenge|" + body.encode()))
        return f"{body}.{mac}"

    def _open_challenge(self, challenge: str, stage: ChallengeStage) -> str:
        try:
            user_id, got_stage, exp, nonce, mac = challenge.split(".")
        except (ValueError, AttributeError):
            raise NotAuthenticatedError("invalid login challenge", code="challenge-invalid") from None
        body = f"{user_id}.{got_stage}.{exp}.{nonce}"
        expected = _b64(self.keyring.hmac(self.keyring.session_key, b"challenge|" + body.encode()))
        if not hmac.compare_digest(mac, expected) or got_stage != stage:
            raise NotAuthenticatedError("invalid login challenge", code="challenge-invalid")
        if int(exp) < self._clock().timestamp():
            raise NotAuthenticatedError("login challenge expired", code="challenge-expired")
        return user_id

    @staticmethod
    def needs_mfa(user: User) -> bool:
        return user.mfa_enabled or bool(split_set(user.roles) & PHI_ROLES)

    def _next_step(
        self, tx: _Tx, user: User, address: str | None, door: str, *, mfa_done: bool = False
    ) -> LoginChallenge:
        """After the first factor: change password, then MFA, then a session."""
        if user.must_change_password:
            return LoginChallenge("password_change_required", user.id,
                                  self._challenge(user.id, "password"))
        if not mfa_done and self.needs_mfa(user):
            if user.mfa_enabled:
                return LoginChallenge("mfa_required", user.id, self._challenge(user.id, "mfa"))
            return LoginChallenge("mfa_enrolment_required", user.id, self._challenge(user.id, "enrol"))
        return LoginChallenge("ok", user.id, session=self._start_session(
            tx, user, address, door, mfa_verified=mfa_done))

    def _start_session(
        self, tx: _Tx, user: User, address: str | None, door: str, *, mfa_verified: bool
    ) -> IssuedSession:
        self.throttle.record_success(tx.session, user.username)
        issued = self.sessions.create(tx.session, user.id, mfa_verified=mfa_verified,
                                      address=address, door=door)
        tx.events.append(self._login_event(
            user.id, Outcome.SUCCESS, address, door,
            "login" + (" with second factor" if mfa_verified else ""),
            role=sorted(split_set(user.roles))[0] if user.roles else None,
        ))
        return issued

    def _failed_login(
        self, tx: _Tx, username: str, user: User | None, address: str | None, door: str,
        description: str,
    ) -> None:
        outcome = self.throttle.record_failure(tx.session, username, address)
        tx.events.append(self._login_event(
            user.id if user else f"unknown:{username[:64]}", Outcome.MINOR_FAILURE, address, door,
            description,
        ))
        if outcome.account_locked or outcome.address_locked:
            what = "account" if outcome.account_locked else "address"
            tx.events.append(security_alert_event(
                user.id if user else f"unknown:{username[:64]}",
                event_type=EventType.USER_SECURITY_ATTRIBUTES_CHANGED,
                outcome=Outcome.MINOR_FAILURE, address=address, door=door,
                objects=[user_object(user.username if user else username[:64])],
                description=f"{what} locked after {outcome.failures} failed logins",
                context={"lockout": what, "failures": outcome.failures},
            ))
        tx.fail(NotAuthenticatedError(_INVALID_LOGIN, code="invalid-credentials"))

    def _throttled(self, tx: _Tx, username: str, address: str | None, door: str) -> bool:
        try:
            self.throttle.check(tx.session, username, address)
        except LoginThrottledError as exc:
            tx.events.append(self._login_event(
                f"unknown:{username[:64]}", Outcome.MINOR_FAILURE, address, door, "login throttled"))
            tx.fail(exc)
            return True
        return False

    # ------------------------------------------------------------------ login
    def authenticate_password(
        self, username: str, password: str, address: str | None, door: str = "ui"
    ) -> LoginChallenge:
        """First factor (password).  Never a session for a PHI role without MFA."""
        with self._tx() as tx:
            name = username.strip().lower()[:64]
            if self._throttled(tx, name, address, door):
                return tx.deferred()
            user = self._user_by_name(tx.session, name)
            usable = user is not None and user.enabled
            if not self.passwords.verify(user.password_hash if usable and user else None, password):
                self._failed_login(tx, name, user, address, door, "wrong password or unknown user")
                return tx.deferred()
            assert user is not None
            if self.passwords.needs_rehash(user.password_hash or ""):
                user.password_hash = self.passwords.hash(password)
            return self._next_step(tx, user, address, door)

    def complete_mfa(
        self, challenge: str, code: str, address: str | None, door: str = "ui"
    ) -> IssuedSession:
        """Second factor (RFC 6238 TOTP or a recovery code) → the session."""
        user_id = self._open_challenge(challenge, "mfa")
        with self._tx() as tx:
            user = tx.session.get(User, user_id)
            if user is None or not user.enabled:
                return tx.fail(NotAuthenticatedError(_INVALID_LOGIN, code="invalid-credentials"))
            if self._throttled(tx, user.username, address, door):
                return tx.deferred()
            if not self.mfa.verify(tx.session, user, code):
                self._failed_login(tx, user.username, user, address, door, "wrong or replayed MFA code")
                return tx.deferred()
            step = self._next_step(tx, user, address, door, mfa_done=True)
            if step.session is None:  # a password change is still pending
                return tx.fail(NotAuthenticatedError("password change required",
                                                     code="password-change-required"))
            return step.session

    def begin_mfa_enrolment(self, challenge: str) -> Enrolment:
        """Enrolment during first login (status ``mfa_enrolment_required``)."""
        user_id = self._open_challenge(challenge, "enrol")
        with self._tx() as tx:
            user = tx.session.get(User, user_id)
            if user is None or not user.enabled:
                return tx.fail(NotAuthenticatedError(_INVALID_LOGIN, code="invalid-credentials"))
            return self.mfa.begin_enrolment(tx.session, user)

    def confirm_mfa_enrolment(
        self, challenge: str, code: str, address: str | None, door: str = "ui"
    ) -> tuple[IssuedSession, list[str]]:
        """Confirm the first TOTP code: MFA on, recovery codes (shown once) and a session."""
        user_id = self._open_challenge(challenge, "enrol")
        with self._tx() as tx:
            user = tx.session.get(User, user_id)
            if user is None or not user.enabled:
                return tx.fail(NotAuthenticatedError(_INVALID_LOGIN, code="invalid-credentials"))
            try:
                codes = self.mfa.confirm_enrolment(tx.session, user, code)
            except InvalidInputError:
                self._failed_login(tx, user.username, user, address, door, "wrong MFA enrolment code")
                return tx.deferred()
            tx.events.append(security_alert_event(
                user.id, event_type=EventType.USER_SECURITY_ATTRIBUTES_CHANGED, address=address,
                door=door, objects=[user_object(user.username)], description="MFA enrolled",
            ))
            issued = self._start_session(tx, user, address, door, mfa_verified=True)
            return issued, codes

    def change_password_with_challenge(
        self, challenge: str, new_password: str, address: str | None, door: str = "ui"
    ) -> LoginChallenge:
        """First login with a one-time password: set a policy-conforming password."""
        user_id = self._open_challenge(challenge, "password")
        with self._tx() as tx:
            user = tx.session.get(User, user_id)
            if user is None or not user.enabled:
                return tx.fail(NotAuthenticatedError(_INVALID_LOGIN, code="invalid-credentials"))
            self._set_password(tx.session, user, new_password)
            tx.events.append(security_alert_event(
                user.id, event_type=EventType.USER_SECURITY_ATTRIBUTES_CHANGED, address=address,
                door=door, objects=[user_object(user.username)], description="password changed",
            ))
            return self._next_step(tx, user, address, door)

    def change_password(self, principal: Principal, current: str, new_password: str) -> None:
        """A signed-in user changes their password (other sessions are logged out)."""
        with self._tx() as tx:
            user = tx.session.get(User, principal.id)
            if user is None or not self.passwords.verify(user.password_hash, current):
                self._failed_login(tx, principal.name, user, principal.address, principal.door,
                                   "wrong current password")
                return
            self._set_password(tx.session, user, new_password)
            self.sessions.revoke_all(tx.session, user.id)
            tx.events.append(self._alert(principal, EventType.USER_SECURITY_ATTRIBUTES_CHANGED,
                                         "password changed", objects=[user_object(user.username)]))

    def accept_invite(
        self, invite_token: str, new_password: str, address: str | None, door: str = "ui"
    ) -> LoginChallenge:
        """Redeem an invite: set the password, then continue with MFA enrolment."""
        digest = self.keyring.hmac(self.keyring.token_key, f"invite|{invite_token}".encode()).hex()
        with self._tx() as tx:
            user = tx.session.execute(select(User).where(User.invite_hash == digest)).scalar_one_or_none()
            if user is None or user.invite_expires_at is None or user.invite_expires_at < self._clock():
                return tx.fail(NotAuthenticatedError("invalid or expired invite", code="invite-invalid"))
            self._set_password(tx.session, user, new_password)
            user.invite_hash, user.invite_expires_at, user.must_change_password = None, None, False
            tx.events.append(security_alert_event(
                user.id, event_type=EventType.USER_SECURITY_ATTRIBUTES_CHANGED, address=address,
                door=door, objects=[user_object(user.username)], description="invite accepted",
            ))
            return self._next_step(tx, user, address, door)

    def _set_password(self, session: Session, user: User, password: str) -> None:
        history = list(session.execute(
            select(PasswordHistory.password_hash).where(PasswordHistory.user_id == user.id)
            .order_by(PasswordHistory.id.desc()).limit(self.settings.security.password_history)
        ).scalars())
        self.passwords.check_policy(password, user.username, history)
        user.password_hash = self.passwords.hash(password)
        user.must_change_password = False
        user.updated_at = self._clock()
        session.add(PasswordHistory(user_id=user.id, password_hash=user.password_hash,
                                    created_at=self._clock()))

    def logout(self, cookie: str, address: str | None = None, door: str = "ui") -> None:
        """End this session (User Authentication / Logout)."""
        with self._tx() as tx:
            user_id = self.sessions.revoke(tx.session, cookie)
            if user_id:
                tx.events.append(self._login_event(user_id, Outcome.SUCCESS, address, door, "logout",
                                                   logout=True))

    def logout_everywhere(self, principal: Principal) -> int:
        """Revoke every session of the principal's account."""
        with self._tx() as tx:
            count = self.sessions.revoke_all(tx.session, principal.id)
            tx.events.append(self._login_event(principal.id, Outcome.SUCCESS, principal.address,
                                               principal.door, "logout everywhere", logout=True))
            return count

    # ------------------------------------------------------------------ principals
    def principal_from_session(
        self, cookie: str, address: str | None = None, door: str = "ui"
    ) -> Principal:
        """Session cookie → principal (MAC, revocation, idle and absolute timeouts)."""
        if self._read_factory is not None:
            with self._read_factory() as session:
                info = self.sessions.peek(session, cookie)
                user = session.get(User, info.user_id) if info else None
                if info and user and user.enabled and (info.mfa_verified or not self.needs_mfa(user)):
                    return self._principal(session, user, door=door, address=address,
                                           session_id=info.id_hash, mfa_verified=info.mfa_verified)
        with self._tx() as tx:
            try:
                info = self.sessions.validate(tx.session, cookie)
            except NotAuthenticatedError as exc:
                if exc.code in ("session-idle", "session-expired"):
                    tx.events.append(self._login_event(
                        "session", Outcome.SUCCESS, address, door, f"automatic logoff ({exc.code})",
                        logout=True))
                return tx.fail(exc)
            user = tx.session.get(User, info.user_id)
            if user is None or not user.enabled:
                return tx.fail(NotAuthenticatedError("session ended", code="session-invalid"))
            if self.needs_mfa(user) and not info.mfa_verified:
                return tx.fail(NotAuthenticatedError("second factor required", code="mfa-required"))
            return self._principal(tx.session, user, door=door, address=address,
                                   session_id=info.id_hash, mfa_verified=info.mfa_verified)

    def csrf_check(self, cookie: str, token: str | None) -> None:
        """Synchroniser-token CSRF check for state-changing requests (OWASP)."""
        self.sessions.check_csrf(cookie, token)

    def principal_from_bearer(
        self, token: str, address: str | None = None, door: str = "dicomweb"
    ) -> Principal:
        """``Authorization: Bearer`` → principal: a ``dv_`` personal token or a server JWT."""
        if self._read_factory is not None:
            principal = self._bearer_read_only(token, address, door)
            if principal is not None:
                return principal
        with self._tx() as tx:
            try:
                if token.startswith("dv_"):
                    ident = self.tokens.verify_personal(tx.session, token)
                else:
                    ident = self.tokens.verify_jwt(tx.session, token)
            except NotAuthenticatedError as exc:
                tx.events.append(self._login_event("bearer", Outcome.MINOR_FAILURE, address, door,
                                                   f"bearer token refused ({exc.code})"))
                return tx.fail(exc)
            return self._bearer_principal(tx, ident, address, door)

    def _bearer_read_only(self, token: str, address: str | None, door: str) -> Principal | None:
        """The no-write fast path; ``None`` sends the caller to the audited write path."""
        assert self._read_factory is not None
        if token.startswith("dv_"):
            return self._personal_read_only(token, address, door)
        with self._read_factory() as session:
            try:
                ident = self.tokens.verify_jwt(session, token)
            except NotAuthenticatedError:
                return None  # refused on the write path, where the refusal is audited
        return Principal(id=f"client:{ident.subject}", kind="token", name=ident.subject,
                         roles=ident.roles, address=address, scopes=ident.scopes, door=door)

    def _personal_read_only(self, token: str, address: str | None, door: str) -> Principal | None:
        """A ``dv_`` token in one read on a plain connection (every API request runs this)."""
        assert self._read_factory is not None
        now = self._clock()
        try:
            digest = self.tokens.personal_digest(token)
            with cast(Engine, self._read_factory.kw["bind"]).connect() as conn:
                rows = conn.execute(_BEARER_PERSONAL, {"b_hash": digest, "b_now": now}).all()
            ident = self.tokens.personal_identity(rows[0] if rows else None, now)
        except NotAuthenticatedError:
            return None  # refused on the write path, where the refusal is audited
        last = ident.last_used_at
        user = rows[0]
        if last is None or now - last > TOUCH_INTERVAL or not user.enabled:
            return None  # the write path records the use, or refuses the disabled account
        grants = tuple((row.grant_study_uid, row.grant_expires_at) for row in rows
                       if row.grant_study_uid is not None)
        return Principal(id=ident.subject, kind="token", name=user.username, roles=split_set(user.roles),
                         address=address, scopes=ident.scopes, door=door, break_glass=grants)

    def _bearer_principal(
        self, tx: _Tx, ident: TokenIdentity, address: str | None, door: str
    ) -> Principal:
        if ident.kind == "personal":
            user = tx.session.get(User, ident.subject)
            if user is None or not user.enabled:
                return tx.fail(NotAuthenticatedError("invalid token", code="token-invalid"))
            return self._principal(tx.session, user, door=door, address=address, kind="token",
                                   scopes=ident.scopes)
        return Principal(id=f"client:{ident.subject}", kind="token", name=ident.subject,
                         roles=ident.roles, address=address, scopes=ident.scopes, door=door)

    def peer_config(self, ae_title: str) -> PeerSettings | None:
        """The peer's configuration: the admin-managed table first, then ``settings.peers``."""
        # A read: every association asks, and a write transaction would queue it
        # behind the ingest writers' lock (SQLite).
        with (self._read_factory or self._factory)() as session:
            row = session.get(DicomPeer, ae_title)
            if row is not None:
                return _peer_settings(row) if row.enabled else None
        return self.settings.peer(ae_title)

    def principal_from_dimse(
        self,
        ae_title: str,
        cert_sha256: str | None,
        user_identity: DimseUserIdentity | None = None,
        address: str | None = None,
    ) -> Principal:
        """Association → principal (PS3.7 D.3.3.7 User Identity Negotiation).

        The calling AE must be a configured peer (unless
        ``dimse.reject_unknown_peers`` is off), connect from an allowed host and
        present the pinned certificate when one is configured.  With a user
        identity of type 2 (username + passcode) or 5 (JWT / API token) the
        principal is that user (its own scope); a PHI-role user over DIMSE needs
        the peer's pinned client certificate as the second factor.
        """
        ae = ae_title.strip()
        peer = self.peer_config(ae)
        ae_principal = Principal(
            id=f"ae:{ae}", kind="ae", name=ae,
            roles=frozenset({peer.role}) if peer else frozenset(), address=address, door="dimse",
        )
        ae_only = user_identity is None or user_identity.identity_type == 1
        if ae_only and not self._peer_refusal(peer, cert_sha256, address):
            # The common case writes nothing: no write transaction (the association's
            # own audit record follows from the door).
            return ae_principal
        with self._tx() as tx:
            refused = self._check_peer(tx, ae, peer, cert_sha256, address)
            if refused:
                return tx.fail(refused)
            if user_identity is None or user_identity.identity_type == 1:
                return ae_principal
            if user_identity.identity_type == 5:
                token = user_identity.primary_field.decode("utf-8", "replace").strip()
                try:
                    ident = (self.tokens.verify_personal(tx.session, token) if token.startswith("dv_")
                             else self.tokens.verify_jwt(tx.session, token))
                except NotAuthenticatedError as exc:
                    tx.events.append(self._login_event(f"ae:{ae}", Outcome.MINOR_FAILURE, address,
                                                       "dimse", f"user identity JWT refused ({exc.code})"))
                    return tx.fail(exc)
                return self._bearer_principal(tx, ident, address, "dimse")
            if user_identity.identity_type != 2:
                tx.events.append(self._login_event(f"ae:{ae}", Outcome.MINOR_FAILURE, address, "dimse",
                                                   "unsupported user identity type"))
                return tx.fail(NotAuthenticatedError("unsupported user identity type",
                                                     code="identity-unsupported"))
            name = user_identity.primary_field.decode("utf-8", "replace").strip().lower()[:64]
            password = user_identity.secondary_field.decode("utf-8", "replace")
            if self._throttled(tx, name, address, "dimse"):
                return tx.deferred()
            user = self._user_by_name(tx.session, name)
            usable = user is not None and user.enabled
            if not self.passwords.verify(user.password_hash if usable and user else None, password):
                self._failed_login(tx, name, user, address, "dimse", "user identity refused")
                return tx.deferred()
            assert user is not None
            pinned = bool(peer and peer.client_cert_sha256)
            if self.needs_mfa(user) and not pinned:
                tx.events.append(self._login_event(user.id, Outcome.MINOR_FAILURE, address, "dimse",
                                                   "PHI role needs a pinned client certificate"))
                return tx.fail(NotAuthenticatedError("second factor required", code="mfa-required"))
            self.throttle.record_success(tx.session, user.username)
            tx.events.append(self._login_event(user.id, Outcome.SUCCESS, address, "dimse",
                                               f"user identity via AE {ae}"))
            return self._principal(tx.session, user, door="dimse", address=address,
                                   mfa_verified=pinned)

    def _peer_refusal(self, peer: PeerSettings | None, cert_sha256: str | None,
                      address: str | None) -> str:
        """Why the association's peer is refused ("" when it is not)."""
        if peer is None:
            return "unknown calling AE title" if self.settings.dimse.reject_unknown_peers else ""
        if peer.allowed_hosts and address not in peer.allowed_hosts:
            return "calling AE from a host not allowed"
        if peer.client_cert_sha256 and not (
            cert_sha256 and hmac.compare_digest(peer.client_cert_sha256.lower(), cert_sha256.lower())
        ):
            return "client certificate does not match the pinned fingerprint"
        return ""

    def _check_peer(
        self, tx: _Tx, ae: str, peer: PeerSettings | None, cert_sha256: str | None,
        address: str | None,
    ) -> DicomVaultError | None:
        reason = self._peer_refusal(peer, cert_sha256, address)
        if not reason:
            return None
        tx.events.append(user_authentication_event(
            f"ae:{ae[:16]}", event_type=EventType.NODE_AUTHENTICATION, outcome=Outcome.MINOR_FAILURE,
            address=address, door="dimse", description=reason,
        ))
        return NotAuthenticatedError("association refused", code="peer-refused")

    # ------------------------------------------------------------------ SSO
    def complete_oidc_login(
        self, identity: OidcIdentity, address: str | None, door: str = "ui"
    ) -> LoginChallenge:
        """Map a validated OIDC identity to a local account (provisioned on first login).

        Roles come from the IdP groups on every login.  A PHI role needs the
        IdP's MFA (``amr``, when ``oidc.trust_idp_mfa``) or the local TOTP.
        """
        with self._tx() as tx:
            user = tx.session.execute(select(User).where(
                User.oidc_issuer == identity.issuer, User.oidc_subject == identity.subject
            )).scalar_one_or_none()
            if user is None:
                name = identity.username.strip().lower()
                if not USERNAME_RE.match(name) or self._user_by_name(tx.session, name) is not None:
                    name = f"sso-{secrets.token_hex(6)}"
                user = User(username=name, display_name=identity.name[:200], roles="",
                            oidc_issuer=identity.issuer, oidc_subject=identity.subject)
                tx.session.add(user)
                tx.session.flush()
            if not user.enabled or not identity.roles:
                tx.events.append(self._login_event(user.id, Outcome.MINOR_FAILURE, address, door,
                                                   "SSO login refused (disabled or no mapped role)"))
                return tx.fail(NotAuthenticatedError("no access for this account", code="sso-no-role"))
            if split_set(user.roles) != identity.roles:
                old = user.roles
                user.roles = join_set(identity.roles)
                tx.events.append(security_alert_event(
                    user.id, event_type=EventType.SECURITY_ROLES_CHANGED, address=address, door=door,
                    objects=[user_object(user.username)], description="roles synchronised from IdP",
                    context={"old_roles": old, "new_roles": user.roles},
                ))
            idp_mfa = identity.mfa and self.settings.oidc.trust_idp_mfa
            return self._next_step(tx, user, address, door, mfa_done=idp_mfa)

    # ------------------------------------------------------------------ user administration
    @staticmethod
    def _check_roles(roles: frozenset[str]) -> frozenset[str]:
        bad = roles - ASSIGNABLE_ROLES
        if bad or not roles:
            raise InvalidInputError(f"roles must be among {sorted(ASSIGNABLE_ROLES)}", code="invalid-role")
        return roles

    def create_user(
        self, actor: Principal, username: str, roles: frozenset[str] | set[str],
        display_name: str = "", *, invite: bool = False, referring_name_token: str | None = None,
    ) -> CreatedUser:
        """Create an account with a one-time password (default) or an invite token.

        No default passwords: the one-time password is random and must be
        changed at first login; an invite expires after ``INVITE_HOURS``.
        """
        name = username.strip().lower()
        if not USERNAME_RE.match(name):
            raise InvalidInputError("usernames: 2-64 of a-z 0-9 . _ @ -", code="invalid-username")
        wanted = self._check_roles(frozenset(roles))
        with self._tx() as tx:
            if not self._require(tx, actor, USER_MANAGE, "user"):
                return tx.deferred()
            if self._user_by_name(tx.session, name) is not None:
                return tx.fail(ConflictError("the username is taken", code="user-exists"))
            user = User(username=name, display_name=display_name[:200], roles=join_set(wanted),
                        referring_name_token=referring_name_token, created_at=self._clock(),
                        updated_at=self._clock())
            one_time = invite_token = None
            if invite:
                invite_token = _b64(secrets.token_bytes(32))
                user.invite_hash = self.keyring.hmac(
                    self.keyring.token_key, f"invite|{invite_token}".encode()).hex()
                user.invite_expires_at = self._clock() + timedelta(hours=INVITE_HOURS)
            else:
                one_time = _b64(secrets.token_bytes(15))
                user.password_hash = self.passwords.hash(one_time)
                user.must_change_password = True
            tx.session.add(user)
            tx.session.flush()
            tx.events.append(self._alert(actor, EventType.USER_SECURITY_ATTRIBUTES_CHANGED,
                                         "user created", objects=[user_object(name)],
                                         context={"roles": user.roles}))
            return CreatedUser(user.id, name, one_time, invite_token)

    def list_users(self, actor: Principal) -> list[UserView]:
        """Every account, without secrets."""
        with self._tx() as tx:
            if not self._require(tx, actor, USER_MANAGE, "user"):
                return []
            rows = tx.session.execute(select(User).order_by(User.username)).scalars()
            return [UserView(u.id, u.username, u.display_name, split_set(u.roles), u.enabled,
                             u.mfa_enabled, u.oidc_subject is not None) for u in rows]

    def set_enabled(self, actor: Principal, user_ref: str, enabled: bool) -> None:
        """Disable (all sessions revoked at once) or re-enable an account."""
        with self._tx() as tx:
            if not self._require(tx, actor, USER_MANAGE, "user"):
                return
            user = self._user_by_ref(tx.session, user_ref)
            if user.id == actor.id and not enabled:
                tx.fail(ForbiddenError("you cannot disable your own account"))
                return
            user.enabled = enabled
            user.updated_at = self._clock()
            if not enabled:
                self.sessions.revoke_all(tx.session, user.id)
            tx.events.append(self._alert(actor, EventType.USER_SECURITY_ATTRIBUTES_CHANGED,
                                         "user enabled" if enabled else "user disabled",
                                         objects=[user_object(user.username)]))

    def reset_mfa(self, actor: Principal, user_ref: str) -> None:
        """Remove a user's second factor; they enrol again at the next login."""
        with self._tx() as tx:
            if not self._require(tx, actor, USER_MANAGE, "user"):
                return
            user = self._user_by_ref(tx.session, user_ref)
            self.mfa.reset(tx.session, user)
            self.sessions.revoke_all(tx.session, user.id)
            tx.events.append(self._alert(actor, EventType.USER_SECURITY_ATTRIBUTES_CHANGED,
                                         "MFA reset", objects=[user_object(user.username)]))

    def set_roles(self, actor: Principal, user_ref: str, roles: frozenset[str] | set[str]) -> None:
        """Replace a user's roles (effective on their next request)."""
        wanted = self._check_roles(frozenset(roles))
        with self._tx() as tx:
            if not self._require(tx, actor, USER_MANAGE, "user"):
                return
            user = self._user_by_ref(tx.session, user_ref)
            if user.id == actor.id:
                tx.fail(ForbiddenError("you cannot change your own roles"))
                return
            old = user.roles
            user.roles = join_set(wanted)
            user.updated_at = self._clock()
            tx.events.append(self._alert(actor, EventType.SECURITY_ROLES_CHANGED, "roles changed",
                                         objects=[user_object(user.username)],
                                         context={"old_roles": old, "new_roles": user.roles}))

    def set_patient_links(self, actor: Principal, user_ref: str, patient_key_ids: set[str]) -> None:
        """Link a ``patient`` account to its own patient records (scope OWN)."""
        with self._tx() as tx:
            if not self._require(tx, actor, USER_MANAGE, "user"):
                return
            user = self._user_by_ref(tx.session, user_ref)
            user.patient_key_ids = join_set(patient_key_ids)
            tx.events.append(self._alert(actor, EventType.USER_SECURITY_ATTRIBUTES_CHANGED,
                                         "patient records linked", objects=[user_object(user.username)]))

    def assign_care_team(
        self, actor: Principal, user_ref: str, study_uid: str, *, remove: bool = False
    ) -> None:
        """Add (or remove) a user to a study's care team."""
        _check_uid(study_uid)
        with self._tx() as tx:
            if not self._require(tx, actor, USER_MANAGE, "user"):
                return
            user = self._user_by_ref(tx.session, user_ref)
            existing = tx.session.execute(select(CareTeamAssignment).where(
                CareTeamAssignment.user_id == user.id, CareTeamAssignment.study_uid == study_uid
            )).scalar_one_or_none()
            if remove and existing is not None:
                tx.session.delete(existing)
            elif not remove and existing is None:
                tx.session.add(CareTeamAssignment(user_id=user.id, study_uid=study_uid,
                                                  assigned_by=actor.id, created_at=self._clock()))
            tx.events.append(self._alert(
                actor, EventType.OBJECT_SECURITY_ATTRIBUTES_CHANGED,
                "care team member removed" if remove else "care team member added",
                objects=[user_object(user.username), study_object(study_uid)]))

    def break_glass(self, principal: Principal, study_uid: str, reason: str) -> Principal:
        """Open a study outside the principal's scope (HIPAA 164.312(a)(2)(ii)).

        A stated reason is required; the grant lasts ``security.break_glass_minutes``,
        is audited as a Security Alert (Emergency Override Started) and the
        returned principal carries it in ``break_glass``.
        """
        _check_uid(study_uid)
        text = " ".join(reason.split())
        if len(text) < MIN_REASON_LENGTH:
            raise InvalidInputError(f"state a reason (at least {MIN_REASON_LENGTH} characters)",
                                    code="reason-required")
        with self._tx() as tx:
            if principal.kind != "user" or scope_for(principal.roles, BREAK_GLASS) is Scope.NONE:
                tx.events.append(self._alert(principal, EventType.EMERGENCY_OVERRIDE_STARTED,
                                             "break-the-glass refused", outcome=Outcome.MINOR_FAILURE,
                                             objects=[study_object(study_uid)]))
                return tx.fail(ForbiddenError("break-the-glass is not available for this account"))
            now = self._clock()
            until = now + timedelta(minutes=self.settings.security.break_glass_minutes)
            dek, wrapped = self.keyring.new_data_key()
            tx.session.add(BreakGlassGrant(
                user_id=principal.id, study_uid=study_uid, wrapped_key=wrapped.to_str(),
                sealed_reason=dek.seal(text.encode(), (_BREAK_GLASS_AAD + principal.id).encode()),
                created_at=now, expires_at=until,
            ))
            tx.events.append(self._alert(
                principal, EventType.EMERGENCY_OVERRIDE_STARTED, "break-the-glass access granted",
                objects=[study_object(study_uid)],
                context={"break_glass": True, "expires_at": until.isoformat()},
            ))
            return dataclasses.replace(principal, break_glass=(*principal.break_glass, (study_uid, until)))

    def break_glass_reason(self, actor: Principal, grant_id: int) -> str:
        """Read a grant's stated reason (for the break-the-glass report; auditors)."""
        with self._tx() as tx:
            decision = self.policy.authorize(actor, "audit:read", Resource("audit"))
            if not decision.allowed:
                return tx.fail(ForbiddenError("not allowed: audit:read"))
            grant = tx.session.get(BreakGlassGrant, grant_id)
            if grant is None:
                return tx.fail(NotFoundError("no such grant"))
            dek = self.keyring.unwrap(WrappedKey.from_str(grant.wrapped_key))
            return dek.open(grant.sealed_reason, (_BREAK_GLASS_AAD + grant.user_id).encode()).decode()

    # ------------------------------------------------------------------ tokens and clients
    def create_api_token(
        self, actor: Principal, user_ref: str, name: str, scopes: set[str] | frozenset[str],
        days: int = 90,
    ) -> IssuedToken:
        """A personal API token for ``user_ref``: only for oneself (or by the system operator)."""
        with self._tx() as tx:
            user = self._user_by_ref(tx.session, user_ref)
            if actor.kind != "system" and not (actor.kind == "user" and actor.id == user.id):
                tx.events.append(self._alert(actor, EventType.USE_OF_RESTRICTED_FUNCTION,
                                             "token for another user refused",
                                             outcome=Outcome.MINOR_FAILURE))
                return tx.fail(ForbiddenError("tokens can only be created for yourself"))
            issued = self.tokens.create_personal(tx.session, user.id, split_set(user.roles), name,
                                                 scopes, days)
            tx.events.append(self._alert(actor, EventType.USER_SECURITY_ATTRIBUTES_CHANGED,
                                         "API token created", objects=[user_object(user.username)],
                                         context={"token_id": issued.token_id,
                                                  "scopes": join_set(issued.scopes)}))
            return issued

    def revoke_api_token(self, actor: Principal, token_id: str) -> None:
        """Revoke a token: the owner, a user manager or the system operator."""
        with self._tx() as tx:
            manager = self.policy.authorize(actor, USER_MANAGE, Resource("user")).allowed
            ok = self.tokens.revoke_personal(tx.session, token_id, None if manager else actor.id)
            if not ok:
                return tx.fail(NotFoundError("no such token", code="token-not-found"))
            tx.events.append(self._alert(actor, EventType.USER_SECURITY_ATTRIBUTES_CHANGED,
                                         "API token revoked", context={"token_id": token_id}))

    def create_oauth_client(
        self, actor: Principal, name: str, roles: set[str] | frozenset[str],
        scopes: set[str] | frozenset[str] = frozenset(),
    ) -> tuple[str, str]:
        """Register a machine client (client-credentials grant); the secret is shown once."""
        wanted = self._check_roles(frozenset(roles))
        with self._tx() as tx:
            if not self._require(tx, actor, USER_MANAGE, "user"):
                return tx.deferred()
            client_id, secret = self.tokens.create_client(tx.session, name, wanted, scopes)
            tx.events.append(self._alert(actor, EventType.USER_SECURITY_ATTRIBUTES_CHANGED,
                                         "OAuth client created", context={"client_id": client_id}))
            return client_id, secret

    def issue_client_token(self, client_id: str, client_secret: str, scope: str | None,
                           address: str | None = None) -> dict[str, Any]:
        """OAuth 2.0 token endpoint, client-credentials grant (RFC 6749 4.4)."""
        with self._tx() as tx:
            try:
                response = self.tokens.issue_client_token(tx.session, client_id, client_secret, scope)
            except (NotAuthenticatedError, InvalidInputError) as exc:
                tx.events.append(self._login_event(f"client:{client_id[:64]}", Outcome.MINOR_FAILURE,
                                                   address, "rest", f"token request refused ({exc.code})"))
                return tx.fail(exc)
            tx.events.append(self._login_event(f"client:{client_id}", Outcome.SUCCESS, address, "rest",
                                               "client credentials token issued"))
            return response

    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662 introspection document."""
        with self._tx() as tx:
            return self.tokens.introspection_response(tx.session, token)

    # ------------------------------------------------------------------ DICOM peers
    def add_peer(self, actor: Principal, peer: PeerSettings) -> None:
        """Add or replace an AE in the managed peer table."""
        if not AE_TITLE_RE.match(peer.ae_title):
            raise InvalidInputError("invalid AE title", code="invalid-ae-title")
        if set(peer.services) - set(DIMSE_SERVICES) or peer.role not in ASSIGNABLE_ROLES:
            raise InvalidInputError("unknown DIMSE service or role", code="invalid-peer")
        if peer.port and not 0 < peer.port < 65536:
            raise InvalidInputError("invalid port", code="invalid-peer")
        fingerprint = peer.client_cert_sha256.lower().replace(":", "")
        if fingerprint and not re.fullmatch(r"[0-9a-f]{64}", fingerprint):
            raise InvalidInputError("cert fingerprint must be SHA-256 hex", code="invalid-peer")
        with self._tx() as tx:
            if not self._require(tx, actor, PEER_MANAGE, "peer"):
                return
            row = tx.session.get(DicomPeer, peer.ae_title) or DicomPeer(ae_title=peer.ae_title)
            row.host, row.port, row.tls = peer.host, peer.port, peer.tls
            row.services = join_set(peer.services)
            row.move_destinations = join_set(peer.move_destinations)
            row.allowed_hosts = join_set(peer.allowed_hosts)
            row.cert_sha256, row.role, row.enabled = fingerprint, peer.role, True
            tx.session.add(row)
            tx.events.append(self._alert(actor, EventType.NETWORK_CONFIGURATION, "DICOM peer saved",
                                         objects=[node_object(peer.ae_title)]))

    def list_peers(self, actor: Principal) -> list[PeerSettings]:
        """Managed peers, then those from the configuration file not overridden."""
        with self._tx() as tx:
            if not self._require(tx, actor, PEER_MANAGE, "peer"):
                return []
            rows = list(tx.session.execute(select(DicomPeer).order_by(DicomPeer.ae_title)).scalars())
        managed = [_peer_settings(r) for r in rows]
        names = {p.ae_title for p in managed}
        return managed + [p for p in self.settings.peers if p.ae_title not in names]

    def remove_peer(self, actor: Principal, ae_title: str) -> None:
        with self._tx() as tx:
            if not self._require(tx, actor, PEER_MANAGE, "peer"):
                return
            result = tx.session.execute(delete(DicomPeer).where(DicomPeer.ae_title == ae_title))
            if not result.rowcount:  # type: ignore[attr-defined]
                tx.fail(NotFoundError("no such peer", code="peer-not-found"))
                return
            tx.events.append(self._alert(actor, EventType.NETWORK_CONFIGURATION, "DICOM peer removed",
                                         objects=[node_object(ae_title)]))


def _peer_settings(row: DicomPeer) -> PeerSettings:
    return PeerSettings(
        ae_title=row.ae_title, host=row.host, port=row.port, tls=row.tls,
        services=tuple(sorted(split_set(row.services))),
        move_destinations=tuple(sorted(split_set(row.move_destinations))),
        allowed_hosts=tuple(sorted(split_set(row.allowed_hosts))),
        client_cert_sha256=row.cert_sha256, role=row.role,
    )


_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def _check_uid(uid: str) -> None:
    """PS3.5 9.1 UID syntax (digits and dots, at most 64 characters)."""
    if not uid or len(uid) > 64 or not _UID_RE.match(uid):
        raise InvalidInputError("invalid UID", code="invalid-uid")
