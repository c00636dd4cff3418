"""Personal API tokens and OAuth 2.0 client JWTs (IHE IUA ITI-72/102/103, RFC 6749/7662/8414)."""

from __future__ import annotations

import time

import jwt
import pytest
from sqlalchemy import select

from dicomvault.access.models import ApiToken
from dicomvault.access.permissions import STUDY_READ, STUDY_SEARCH, STUDY_WRITE
from dicomvault.access.policy import Policy, Resource
from dicomvault.access.principal import Principal
from dicomvault.access.tokens import authorization_server_metadata
from dicomvault.errors import ForbiddenError, InvalidInputError, NotAuthenticatedError

from .conftest import make_user


@pytest.fixture
def tech(identity, operator, clock):
    return make_user(identity, operator, clock, "tech1", {"technologist"})


@pytest.fixture
def client(identity, operator):
    return identity.create_oauth_client(operator, "ai-node", {"service"}, {STUDY_READ, STUDY_SEARCH})


def test_personal_token_authenticates_with_scopes(identity, operator, tech):
    issued = identity.create_api_token(operator, "tech1", "viewer", {STUDY_READ, STUDY_SEARCH}, days=30)
    assert issued.token.startswith("dv_")
    principal = identity.principal_from_bearer(issued.token, "10.0.0.5")
    assert principal.id == tech["user_id"] and principal.kind == "token"
    assert principal.scopes == frozenset({STUDY_READ, STUDY_SEARCH})


def test_personal_token_hashed_at_rest(identity, operator, tech, factory):
    issued = identity.create_api_token(operator, "tech1", "viewer", {STUDY_READ})
    with factory() as session:
        stored = list(session.execute(select(ApiToken.token_hash)).scalars())
    assert issued.token not in stored and issued.token[3:] not in "".join(stored)


def test_personal_token_revoked_refused(identity, operator, tech, audit):
    issued = identity.create_api_token(operator, "tech1", "viewer", {STUDY_READ})
    identity.revoke_api_token(operator, issued.token_id)
    with pytest.raises(NotAuthenticatedError) as err:
        identity.principal_from_bearer(issued.token)
    assert err.value.code == "token-revoked"
    assert "bearer token refused (token-revoked)" in audit.descriptions()


def test_personal_token_expired_refused(identity, operator, tech, clock):
    issued = identity.create_api_token(operator, "tech1", "viewer", {STUDY_READ}, days=1)
    clock.advance(days=1, seconds=1)
    with pytest.raises(NotAuthenticatedError) as err:
        identity.principal_from_bearer(issued.token)
    assert err.value.code == "token-expired"


@pytest.mark.parametrize("token", ["dv_", "dv_" + "A" * 43, "Bearer x", "", "dv_" + "x" * 500])
def test_unknown_token_refused(identity, token):
    with pytest.raises(NotAuthenticatedError):
        identity.principal_from_bearer(token)


def test_token_beyond_scope_denied_by_policy(identity, operator, tech):
    issued = identity.create_api_token(operator, "tech1", "reader", {STUDY_READ})
    principal = identity.principal_from_bearer(issued.token)
    policy = Policy()
    assert policy.authorize(principal, STUDY_READ, Resource("study", "1.2.3")).allowed
    write = policy.authorize(principal, STUDY_WRITE, Resource("study", "1.2.3"))
    assert not write.allowed


def test_token_scope_beyond_roles_refused(identity, operator, tech):
    with pytest.raises(InvalidInputError):
        identity.create_api_token(operator, "tech1", "x", {"user:manage"})
    with pytest.raises(InvalidInputError):
        identity.create_api_token(operator, "tech1", "x", {"no:such-scope"})


def test_token_for_other_user_refused(identity, operator, tech, clock):
    other = make_user(identity, operator, clock, "tech2", {"technologist"})
    principal = identity.principal_from_session(other["session"].cookie)
    with pytest.raises(ForbiddenError):
        identity.create_api_token(principal, "tech1", "steal", {STUDY_READ})


def test_token_owner_can_revoke_only_own(identity, operator, tech, clock):
    other = make_user(identity, operator, clock, "tech2", {"technologist"})
    issued = identity.create_api_token(operator, "tech1", "viewer", {STUDY_READ})
    principal = identity.principal_from_session(other["session"].cookie)
    from dicomvault.errors import NotFoundError

    with pytest.raises(NotFoundError):
        identity.revoke_api_token(principal, issued.token_id)
    assert identity.principal_from_bearer(issued.token)


def test_disabled_user_token_refused(identity, operator, tech):
    issued = identity.create_api_token(operator, "tech1", "viewer", {STUDY_READ})
    identity.set_enabled(operator, "tech1", False)
    with pytest.raises(NotAuthenticatedError):
        identity.principal_from_bearer(issued.token)



def test_disabled_user_token_refused_after_use(identity, operator, tech):
    """The per-request read path (a token used within the last minute) refuses too."""
    issued = identity.create_api_token(operator, "tech1", "viewer", {STUDY_READ})
    assert identity.principal_from_bearer(issued.token)  # records the use: later calls take the read path
    assert identity.principal_from_bearer(issued.token)
    identity.set_enabled(operator, "tech1", False)
    with pytest.raises(NotAuthenticatedError):
        identity.principal_from_bearer(issued.token)


def test_token_principal_carries_active_break_glass_grants(identity, operator, clock):
    referring = make_user(identity, operator, clock, "ref1", {"referring"})
    as_user = Principal(id=referring["user_id"], kind="user", name="ref1", roles=frozenset({"referring"}))
    identity.break_glass(as_user, "1.2.3.4", "patient in the emergency room")
    clock.advance(seconds=30)
    identity.break_glass(as_user, "1.2.3.5", "second study of the same emergency")
    issued = identity.create_api_token(operator, "ref1", "viewer", {STUDY_READ})
    first = identity.principal_from_bearer(issued.token)  # write path (records the use)
    again = identity.principal_from_bearer(issued.token)  # read path
    for principal in (first, again):
        assert sorted(uid for uid, _until in principal.break_glass) == ["1.2.3.4", "1.2.3.5"]
    assert again.name == "ref1" and again.roles == frozenset({"referring"})
    # The first grant ends before the second; a token use then carries only the live one.
    clock.advance(minutes=identity.settings.security.break_glass_minutes, seconds=-10)
    for _path in ("write", "read"):
        assert [uid for uid, _ in identity.principal_from_bearer(issued.token).break_glass] == ["1.2.3.5"]


# -- OAuth 2.0 client credentials -------------------------------------------------

def test_client_credentials_token_authenticates(identity, client):
    client_id, secret = client
    response = identity.issue_client_token(client_id, secret, "study:read")
    assert response["token_type"] == "Bearer" and response["scope"] == "study:read"
    principal = identity.principal_from_bearer(response["access_token"])
    assert principal.id == f"client:{client_id}"
    assert principal.roles == frozenset({"service"})
    assert principal.scopes == frozenset({STUDY_READ})


def test_client_wrong_secret_refused(identity, client):
    with pytest.raises(NotAuthenticatedError):
        identity.issue_client_token(client[0], "wrong-secret", None)


def test_client_scope_beyond_registration_refused(identity, client):
    with pytest.raises(InvalidInputError):
        identity.issue_client_token(client[0], client[1], "study:write")


def _claims(identity, client_id, clock, **over):
    now = int(clock().timestamp())
    claims = {"iss": identity.tokens.issuer, "aud": identity.tokens.audience,
              "sub": f"client:{client_id}", "client_id": client_id, "scope": "study:read",
              "iat": now, "nbf": now, "exp": now + 600, "jti": "t1"}
    claims.update(over)
    return claims


BAD_JWTS = [
    ("expired", {"exp_delta": -120}, "token-expired"),
    ("not-yet-valid", {"nbf_delta": 600}, "token-not-yet-valid"),
    ("wrong-audience", {"aud": "https://other.example/dicomweb"}, "token-audience"),
    ("wrong-issuer", {"iss": "https://evil.example"}, "token-invalid"),
    ("bad-signature", {"key": b"k" * 32}, "token-invalid"),
    ("alg-none", {"alg": "none"}, "token-invalid"),
    ("no-exp", {"drop": "exp"}, "token-invalid"),
]


@pytest.mark.parametrize(("case", "change", "code"), BAD_JWTS, ids=[c[0] for c in BAD_JWTS])
def test_bad_jwt_refused(identity, client, clock, case, change, code):
    client_id = client[0]
    now = int(clock().timestamp())
    over = {}
    if "exp_delta" in change:
        over["exp"] = now + change["exp_delta"]
    if "nbf_delta" in change:
        over["nbf"] = now + change["nbf_delta"]
    for key in ("aud", "iss"):
        if key in change:
            over[key] = change[key]
    claims = _claims(identity, client_id, clock, **over)
    if "drop" in change:
        del claims[change["drop"]]
    if change.get("alg") == "none":
        token = jwt.encode(claims, None, algorithm="none")
    elif "key" in change:
        token = jwt.encode(claims, change["key"], algorithm="HS256")
    else:
        token = identity.tokens.sign_claims(claims)
    with pytest.raises(NotAuthenticatedError) as err:
        identity.principal_from_bearer(token)
    assert err.value.code == code


def test_good_jwt_accepted_by_same_builder(identity, client, clock):
    """Control for the table above: the unaltered claims are accepted."""
    token = identity.tokens.sign_claims(_claims(identity, client[0], clock))
    assert identity.principal_from_bearer(token).id == f"client:{client[0]}"


def test_disabled_client_jwt_refused(identity, client):
    response = identity.issue_client_token(client[0], client[1], None)
    with identity._factory() as session, session.begin():
        identity.tokens.disable_client(session, client[0])
    with pytest.raises(NotAuthenticatedError):
        identity.principal_from_bearer(response["access_token"])


def test_introspection_active_and_inactive(identity, client, clock, operator, tech):
    response = identity.issue_client_token(client[0], client[1], None)
    doc = identity.introspect(response["access_token"])
    assert doc["active"] is True and doc["client_id"] == client[0]
    assert set(doc["scope"].split()) == {STUDY_READ, STUDY_SEARCH}
    assert doc["exp"] > clock().timestamp()
    personal = identity.create_api_token(operator, "tech1", "viewer", {STUDY_READ})
    assert identity.introspect(personal.token)["active"] is True
    clock.advance(hours=1)
    assert identity.introspect(response["access_token"]) == {"active": False}
    assert identity.introspect("garbage") == {"active": False}


def test_authorization_server_metadata_fields():
    doc = authorization_server_metadata("https://pacs.test:8443", "https://pacs.test:8443/")
    assert doc["issuer"] == "https://pacs.test:8443"
    assert doc["token_endpoint"] == "https://pacs.test:8443/oauth2/token"
    assert doc["introspection_endpoint"].endswith("/oauth2/introspect")
    assert "client_credentials" in doc["grant_types_supported"]
    assert STUDY_READ in doc["scopes_supported"]


def test_real_clock_jwt_roundtrip(factory, keyring, settings, audit, client):
    """Without an injected clock the default wall clock validates fresh tokens."""
    from dicomvault.access.identity import IdentityService

    from .conftest import FAST_HASHER

    live = IdentityService(factory, keyring, settings, audit, hasher=FAST_HASHER)
    cid, secret = live.create_oauth_client(__import__("dicomvault.access.principal", fromlist=["x"])
                                           .system_principal("cli"), "n", {"service"})
    token = live.issue_client_token(cid, secret, None)["access_token"]
    assert jwt.decode(token, options={"verify_signature": False})["exp"] > time.time()
    assert live.principal_from_bearer(token).id == f"client:{cid}"


def test_revoked_token_refused_right_after_use(identity, operator, tech, clock):
    """The read-only fast path must not serve a token revoked a moment ago."""
    issued = identity.create_api_token(operator, "tech1", "viewer", {STUDY_READ})
    identity.principal_from_bearer(issued.token)
    clock.advance(seconds=5)
    identity.principal_from_bearer(issued.token)
    identity.revoke_api_token(operator, issued.token_id)
    with pytest.raises(NotAuthenticatedError):
        identity.principal_from_bearer(issued.token)


def test_token_last_used_recorded_once_a_minute(identity, operator, tech, clock, factory):
    issued = identity.create_api_token(operator, "tech1", "viewer", {STUDY_READ})
    identity.principal_from_bearer(issued.token)
    with factory() as session:
        first = session.get(ApiToken, issued.token_id).last_used_at
    assert first == clock.now
    clock.advance(seconds=30)
    identity.principal_from_bearer(issued.token)
    with factory() as session:
        assert session.get(ApiToken, issued.token_id).last_used_at == first
    clock.advance(seconds=31)
    identity.principal_from_bearer(issued.token)
    with factory() as session:
        assert session.get(ApiToken, issued.token_id).last_used_at == clock.now
