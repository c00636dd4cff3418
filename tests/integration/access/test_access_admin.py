"""Care teams, break-the-glass, DICOM peers and DIMSE principals over a real database."""

from __future__ import annotations

import pytest

from dicomvault.access.assignments import IndexAssignments
from dicomvault.access.identity import DimseUserIdentity
from dicomvault.access.permissions import STUDY_READ, STUDY_SEARCH
from dicomvault.access.policy import Policy, Resource
from dicomvault.audit.events import EventId, EventType
from dicomvault.config import PeerSettings
from dicomvault.errors import (
    ForbiddenError,
    InvalidInputError,
    NotAuthenticatedError,
    NotFoundError,
)

from .conftest import login, make_user

STUDY_A = "1.2.826.0.1.3680043.10.1.1"
STUDY_B = "1.2.826.0.1.3680043.10.1.2"
DEID = "1.2.826.0.1.3680043.10.9.9"
CERT = "ab" * 32


@pytest.fixture
def ref(identity, operator, clock):
    user = make_user(identity, operator, clock, "ref1", {"referring"})
    user["principal"] = identity.principal_from_session(user["session"].cookie)
    return user


@pytest.fixture
def policy(factory, clock):
    referrals = {"tok-smith": frozenset({STUDY_B})}
    assignments = IndexAssignments(factory, is_deidentified=lambda uid: uid == DEID,
                                   referring_studies=lambda token: referrals.get(token, frozenset()))
    return Policy(assignments, clock=clock)


def test_care_team_assignment_grants_access(identity, operator, ref, policy):
    assert not policy.authorize(ref["principal"], STUDY_READ, Resource("study", STUDY_A)).allowed
    identity.assign_care_team(operator, "ref1", STUDY_A)
    decision = policy.authorize(ref["principal"], STUDY_READ, Resource("study", STUDY_A))
    assert decision.allowed and not decision.break_glass
    assert policy.query_scope(ref["principal"], STUDY_SEARCH).study_uids == frozenset({STUDY_A})
    identity.assign_care_team(operator, "ref1", STUDY_A, remove=True)
    denied = policy.authorize(ref["principal"], STUDY_READ, Resource("study", STUDY_A))
    assert not denied.allowed and denied.hide_existence


def test_referring_physician_match_grants_access(identity, operator, clock, policy):
    identity.create_user(operator, "drsmith", {"referring"}, referring_name_token="tok-smith")
    from sqlalchemy import select

    from dicomvault.access.models import User
    from dicomvault.access.principal import Principal

    with identity._factory() as session:
        uid = session.execute(select(User.id).where(User.username == "drsmith")).scalar_one()
    principal = Principal(id=uid, kind="user", name="drsmith", roles=frozenset({"referring"}))
    assert policy.authorize(principal, STUDY_READ, Resource("study", STUDY_B)).allowed
    assert not policy.authorize(principal, STUDY_READ, Resource("study", STUDY_A)).allowed


def test_researcher_sees_only_deidentified(identity, operator, clock, policy):
    res = make_user(identity, operator, clock, "res1", {"researcher"})
    principal = identity.principal_from_session(res["session"].cookie)
    assert policy.authorize(principal, STUDY_READ, Resource("study", DEID)).allowed
    denied = policy.authorize(principal, STUDY_READ, Resource("study", STUDY_A))
    assert not denied.allowed and denied.hide_existence


def test_patient_sees_only_own_record(identity, operator, clock, policy):
    pat = make_user(identity, operator, clock, "pat1", {"patient"})
    identity.set_patient_links(operator, "pat1", {"pk-own"})
    principal = identity.principal_from_session(login(identity, clock, pat, "pat1").cookie)
    assert policy.authorize(principal, STUDY_READ, Resource("study", STUDY_A, "pk-own")).allowed
    assert not policy.authorize(principal, STUDY_READ, Resource("study", STUDY_B, "pk-other")).allowed


def test_break_glass_grants_time_boxed_flagged_access(identity, ref, policy, clock, audit, settings):
    principal = identity.break_glass(ref["principal"], STUDY_A, "patient unconscious in the ER")
    assert [uid for uid, _ in principal.break_glass] == [STUDY_A]
    decision = policy.authorize(principal, STUDY_READ, Resource("study", STUDY_A))
    assert decision.allowed and decision.break_glass
    alert = audit.events[-1]
    assert alert.event_id is EventId.SECURITY_ALERT
    assert alert.event_types == [EventType.EMERGENCY_OVERRIDE_STARTED]
    assert alert.objects[0].object_id == STUDY_A
    # The grant survives into later requests of the session...
    later = identity.principal_from_session(ref["session"].cookie)
    assert policy.authorize(later, STUDY_READ, Resource("study", STUDY_A)).break_glass
    # ...and ends after break_glass_minutes.
    clock.advance(minutes=settings.security.break_glass_minutes, seconds=1)
    assert not policy.authorize(principal, STUDY_READ, Resource("study", STUDY_A)).allowed


@pytest.mark.parametrize("reason", ["", "   ", "because"])
def test_break_glass_needs_stated_reason(identity, ref, reason):
    with pytest.raises(InvalidInputError) as err:
        identity.break_glass(ref["principal"], STUDY_A, reason)
    assert err.value.code == "reason-required"


def test_break_glass_refused_for_role_without_it(identity, operator, clock, audit):
    res = make_user(identity, operator, clock, "res1", {"researcher"})
    principal = identity.principal_from_session(res["session"].cookie)
    with pytest.raises(ForbiddenError):
        identity.break_glass(principal, STUDY_A, "I would like to look at this")
    assert audit.events[-1].outcome_description == "break-the-glass refused"


def test_break_glass_reason_sealed_and_readable_by_auditor(identity, operator, clock, ref, factory):
    identity.break_glass(ref["principal"], STUDY_A, "patient unconscious in the ER")
    from sqlalchemy import select

    from dicomvault.access.models import BreakGlassGrant

    with factory() as session:
        grant = session.execute(select(BreakGlassGrant)).scalar_one()
    assert b"unconscious" not in grant.sealed_reason
    aud = make_user(identity, operator, clock, "aud1", {"auditor"})
    auditor = identity.principal_from_session(aud["session"].cookie)
    assert identity.break_glass_reason(auditor, grant.id) == "patient unconscious in the ER"
    with pytest.raises(ForbiddenError):
        identity.break_glass_reason(ref["principal"], grant.id)


def test_role_change_audited_as_security_alert(identity, operator, clock, audit):
    make_user(identity, operator, clock, "tech1", {"technologist"})
    identity.set_roles(operator, "tech1", {"radiologist"})
    alert = audit.events[-1]
    assert alert.event_types == [EventType.SECURITY_ROLES_CHANGED]
    assert alert.context["new_roles"] == "radiologist"


def test_admin_cannot_change_own_roles(identity, operator, clock):
    adm = make_user(identity, operator, clock, "adm1", {"admin"})
    principal = identity.principal_from_session(adm["session"].cookie)
    with pytest.raises(ForbiddenError):
        identity.set_roles(principal, "adm1", {"radiologist"})
    identity.create_user(principal, "tech9", {"technologist"})  # but may manage others


def test_list_users_has_no_secrets(identity, operator, clock):
    make_user(identity, operator, clock, "tech1", {"technologist"})
    views = identity.list_users(operator)
    assert [v.username for v in views] == ["tech1"]
    assert not hasattr(views[0], "password_hash")


@pytest.mark.parametrize("uid", ["1.2.3/../4", "abc", "1..2", "1." + "2" * 70, ""])
def test_assignment_refuses_invalid_uid(identity, operator, clock, uid):
    make_user(identity, operator, clock, "ref1", {"referring"})
    with pytest.raises(InvalidInputError):
        identity.assign_care_team(operator, "ref1", uid)


def test_unknown_user_not_found(identity, operator):
    with pytest.raises(NotFoundError):
        identity.set_enabled(operator, "ghost", False)


# -- DICOM peers and DIMSE principals ----------------------------------------------

@pytest.fixture
def modality(identity, operator):
    identity.add_peer(operator, PeerSettings(ae_title="CT1", host="10.1.1.1", port=104,
                                             services=("echo", "store"), allowed_hosts=("10.1.1.1",),
                                             client_cert_sha256=CERT, role="service"))


def test_peer_add_list_remove(identity, operator, modality, audit):
    peers = identity.list_peers(operator)
    assert [p.ae_title for p in peers] == ["CT1"]
    assert peers[0].services == ("echo", "store") and peers[0].client_cert_sha256 == CERT
    assert audit.events[-1].event_types == [EventType.NETWORK_CONFIGURATION]
    identity.remove_peer(operator, "CT1")
    assert identity.list_peers(operator) == []
    with pytest.raises(NotFoundError):
        identity.remove_peer(operator, "CT1")


@pytest.mark.parametrize("peer", [
    PeerSettings(ae_title="X" * 17), PeerSettings(ae_title="A\\B"), PeerSettings(ae_title="OK", role="god"),
    PeerSettings(ae_title="OK", services=("print",)), PeerSettings(ae_title="OK", client_cert_sha256="zz"),
])
def test_peer_invalid_refused(identity, operator, peer):
    with pytest.raises(InvalidInputError):
        identity.add_peer(operator, peer)


def test_peer_management_needs_permission(identity, operator, clock):
    tech = make_user(identity, operator, clock, "tech1", {"technologist"})
    principal = identity.principal_from_session(tech["session"].cookie)
    with pytest.raises(ForbiddenError):
        identity.add_peer(principal, PeerSettings(ae_title="EVIL"))


def test_dimse_known_peer_with_pinned_cert(identity, modality):
    principal = identity.principal_from_dimse("CT1", CERT.upper(), None, "10.1.1.1")
    assert principal.id == "ae:CT1" and principal.roles == frozenset({"service"})
    assert principal.door == "dimse"


DIMSE_REFUSALS = [
    ("unknown-ae", "MR9", CERT, "10.1.1.1"),
    ("wrong-cert", "CT1", "cd" * 32, "10.1.1.1"),
    ("no-cert", "CT1", None, "10.1.1.1"),
    ("wrong-host", "CT1", CERT, "10.6.6.6"),
]


@pytest.mark.parametrize(("case", "ae", "cert", "addr"), DIMSE_REFUSALS, ids=[c[0] for c in DIMSE_REFUSALS])
def test_dimse_association_refused(identity, modality, audit, case, ae, cert, addr):
    with pytest.raises(NotAuthenticatedError) as err:
        identity.principal_from_dimse(ae, cert, None, addr)
    assert err.value.code == "peer-refused"
    assert audit.events[-1].event_types == [EventType.NODE_AUTHENTICATION]


def test_dimse_user_identity_password(identity, operator, clock, modality):
    res = make_user(identity, operator, clock, "res1", {"researcher"})
    ident = DimseUserIdentity(2, b"res1", res["password"].encode())
    principal = identity.principal_from_dimse("CT1", CERT, ident, "10.1.1.1")
    assert principal.id == res["user_id"] and principal.roles == frozenset({"researcher"})
    with pytest.raises(NotAuthenticatedError):
        identity.principal_from_dimse("CT1", CERT, DimseUserIdentity(2, b"res1", b"wrong password!"),
                                      "10.1.1.1")


def test_dimse_user_identity_phi_role_needs_pinned_cert(identity, operator, clock, settings):
    rad = make_user(identity, operator, clock, "rad1", {"radiologist"})
    identity.add_peer(operator, PeerSettings(ae_title="WS1", role="service"))
    ident = DimseUserIdentity(2, b"rad1", rad["password"].encode())
    with pytest.raises(NotAuthenticatedError) as err:
        identity.principal_from_dimse("WS1", None, ident, "10.1.1.2")
    assert err.value.code == "mfa-required"


def test_dimse_user_identity_jwt(identity, operator, modality):
    cid, secret = identity.create_oauth_client(operator, "ai", {"service"}, {STUDY_READ})
    token = identity.issue_client_token(cid, secret, None)["access_token"]
    principal = identity.principal_from_dimse("CT1", CERT, DimseUserIdentity(5, token.encode()),
                                              "10.1.1.1")
    assert principal.id == f"client:{cid}" and principal.scopes == frozenset({STUDY_READ})
    with pytest.raises(NotAuthenticatedError):
        identity.principal_from_dimse("CT1", CERT, DimseUserIdentity(5, b"not-a-jwt"), "10.1.1.1")


def test_dimse_peer_from_settings_file(factory, keyring, audit, clock):
    from dicomvault.access.identity import IdentityService
    from dicomvault.config import load_settings

    from .conftest import FAST_HASHER

    settings = load_settings(None, {})
    settings = type(settings)(peers=(PeerSettings(ae_title="PACS2", role="service"),))
    svc = IdentityService(factory, keyring, settings, audit, clock=clock, hasher=FAST_HASHER)
    assert svc.principal_from_dimse("PACS2", None, None, "10.0.0.1").roles == frozenset({"service"})
    assert svc.peer_config("PACS2").ae_title == "PACS2"


def test_audit_failure_rolls_back(factory, keyring, settings, clock, operator):
    """No audit record, no change: a failing sink leaves the user uncreated."""
    from dicomvault.access.identity import IdentityService

    from .conftest import FAST_HASHER

    def broken(_events, _session):
        raise RuntimeError("audit down")

    svc = IdentityService(factory, keyring, settings, broken, clock=clock, hasher=FAST_HASHER)
    with pytest.raises(RuntimeError):
        svc.create_user(operator, "ghost", {"technologist"})
    ok = IdentityService(factory, keyring, settings, lambda e, s: None, clock=clock, hasher=FAST_HASHER)
    assert ok.list_users(operator) == []


def test_expired_grants_not_in_principal(identity, ref, clock):
    identity.break_glass(ref["principal"], STUDY_A, "patient unconscious in the ER")
    clock.advance(minutes=61)
    # keep the session alive across the hour
    fresh = login(identity, clock, ref, "ref1")
    assert identity.principal_from_session(fresh.cookie).break_glass == ()
