"""Password + TOTP login, lockout, replay and password-policy attacks (HIPAA 164.312(d))."""

from __future__ import annotations

import pytest

from dicomvault.access.lockout import LoginThrottledError
from dicomvault.audit.events import EventId, EventType, Outcome
from dicomvault.errors import ForbiddenError, InvalidInputError, NotAuthenticatedError

from .conftest import GOOD_PASSWORD, login, make_user, totp_now


def test_login_refused_wrong_password(identity, operator, clock, audit):
    make_user(identity, operator, clock, "rad1", {"radiologist"})
    with pytest.raises(NotAuthenticatedError) as err:
        identity.authenticate_password("rad1", "not the password at all", "10.0.0.9")
    assert err.value.code == "invalid-credentials"
    last = audit.events[-1]
    assert last.event_id is EventId.USER_AUTHENTICATION
    assert last.event_types == [EventType.LOGIN]
    assert last.outcome is Outcome.MINOR_FAILURE
    assert last.participants[0].network_access_point == "10.0.0.9"


def test_login_unknown_user_same_error_as_wrong_password(identity):
    with pytest.raises(NotAuthenticatedError) as err:
        identity.authenticate_password("nobody", "whatever password here", "10.0.0.9")
    assert err.value.code == "invalid-credentials"
    assert "nobody" not in err.value.detail


def test_login_phi_role_password_only_gets_no_session(identity, operator, clock):
    user = make_user(identity, operator, clock, "rad1", {"radiologist"})
    step = identity.authenticate_password("rad1", user["password"], "10.0.0.1")
    assert step.status == "mfa_required"
    assert step.session is None
    # The challenge is not a session cookie.
    with pytest.raises(NotAuthenticatedError):
        identity.principal_from_session(step.challenge)


def test_login_with_totp_gives_session_and_principal(identity, operator, clock, audit):
    user = make_user(identity, operator, clock, "rad1", {"radiologist"})
    issued = login(identity, clock, user, "rad1")
    principal = identity.principal_from_session(issued.cookie, "10.0.0.1")
    assert principal.id == user["user_id"]
    assert principal.roles == frozenset({"radiologist"})
    assert principal.mfa_verified is True
    ok = [e for e in audit.events if e.event_id is EventId.USER_AUTHENTICATION
          and e.outcome is Outcome.SUCCESS and e.participants[0].user_id == user["user_id"]]
    assert ok, "successful login must be audited"


def test_login_refused_wrong_totp(identity, operator, clock):
    user = make_user(identity, operator, clock, "rad1", {"radiologist"})
    step = identity.authenticate_password("rad1", user["password"], "10.0.0.1")
    wrong = f"{(int(totp_now(user['secret'], clock)) + 1) % 1_000_000:06d}"
    with pytest.raises(NotAuthenticatedError):
        identity.complete_mfa(step.challenge, wrong, "10.0.0.1")


def test_login_refused_replayed_totp(identity, operator, clock, audit):
    user = make_user(identity, operator, clock, "rad1", {"radiologist"})
    code = totp_now(user["secret"], clock)
    step = identity.authenticate_password("rad1", user["password"], "10.0.0.1")
    identity.complete_mfa(step.challenge, code, "10.0.0.1")
    clock.advance(seconds=3)  # the same 30-s window, an attacker replays the code
    step = identity.authenticate_password("rad1", user["password"], "10.0.0.2")
    with pytest.raises(NotAuthenticatedError):
        identity.complete_mfa(step.challenge, code, "10.0.0.2")
    assert "wrong or replayed MFA code" in audit.descriptions()


def test_login_refused_older_totp_after_newer_used(identity, operator, clock):
    user = make_user(identity, operator, clock, "rad1", {"radiologist"})
    older = totp_now(user["secret"], clock, -1)
    step = identity.authenticate_password("rad1", user["password"], "10.0.0.1")
    identity.complete_mfa(step.challenge, totp_now(user["secret"], clock), "10.0.0.1")
    step = identity.authenticate_password("rad1", user["password"], "10.0.0.1")
    with pytest.raises(NotAuthenticatedError):
        identity.complete_mfa(step.challenge, older, "10.0.0.1")


def test_login_accepts_adjacent_step_window(identity, operator, clock):
    user = make_user(identity, operator, clock, "rad1", {"radiologist"})
    step = identity.authenticate_password("rad1", user["password"], "10.0.0.1")
    issued = identity.complete_mfa(step.challenge, totp_now(user["secret"], clock, +1), "10.0.0.1")
    assert issued.cookie


def test_login_refused_totp_two_steps_off(identity, operator, clock):
    user = make_user(identity, operator, clock, "rad1", {"radiologist"})
    step = identity.authenticate_password("rad1", user["password"], "10.0.0.1")
    with pytest.raises(NotAuthenticatedError):
        identity.complete_mfa(step.challenge, totp_now(user["secret"], clock, +3), "10.0.0.1")


def test_recovery_code_works_once(identity, operator, clock):
    user = make_user(identity, operator, clock, "rad1", {"radiologist"})
    code = user["recovery"][0]
    step = identity.authenticate_password("rad1", user["password"], "10.0.0.1")
    assert identity.complete_mfa(step.challenge, code, "10.0.0.1").cookie
    clock.advance(seconds=5)
    step = identity.authenticate_password("rad1", user["password"], "10.0.0.1")
    with pytest.raises(NotAuthenticatedError):
        identity.complete_mfa(step.challenge, code, "10.0.0.1")


def test_challenge_forged_refused(identity, operator, clock):
    user = make_user(identity, operator, clock, "rad1", {"radiologist"})
    step = identity.authenticate_password("rad1", user["password"], "10.0.0.1")
    other = make_user(identity, operator, clock, "rad2", {"radiologist"})
    forged = step.challenge.replace(user["user_id"], other["user_id"])
    with pytest.raises(NotAuthenticatedError) as err:
        identity.complete_mfa(forged, totp_now(other["secret"], clock), "10.0.0.1")
    assert err.value.code == "challenge-invalid"


def test_challenge_expired_refused(identity, operator, clock):
    user = make_user(identity, operator, clock, "rad1", {"radiologist"})
    step = identity.authenticate_password("rad1", user["password"], "10.0.0.1")
    clock.advance(minutes=6)
    with pytest.raises(NotAuthenticatedError) as err:
        identity.complete_mfa(step.challenge, totp_now(user["secret"], clock), "10.0.0.1")
    assert err.value.code == "challenge-expired"


def test_non_phi_role_password_login_gets_session(identity, operator, clock):
    user = make_user(identity, operator, clock, "res1", {"researcher"})
    step = identity.authenticate_password("res1", user["password"], "10.0.0.1")
    assert step.status == "ok" and step.session is not None
    principal = identity.principal_from_session(step.session.cookie)
    assert principal.mfa_verified is False


def test_role_gained_after_login_requires_mfa_session(identity, operator, clock):
    user = make_user(identity, operator, clock, "res1", {"researcher"})
    step = identity.authenticate_password("res1", user["password"], "10.0.0.1")
    identity.set_roles(operator, "res1", {"radiologist"})
    with pytest.raises(NotAuthenticatedError) as err:
        identity.principal_from_session(step.session.cookie)
    assert err.value.code == "mfa-required"


def test_lockout_after_threshold_failures(identity, operator, clock, audit, settings):
    user = make_user(identity, operator, clock, "rad1", {"radiologist"})
    threshold = settings.security.login_lockout_threshold
    for i in range(threshold):
        clock.advance(seconds=31)  # wait out the progressive delay each time
        with pytest.raises(NotAuthenticatedError) as err:
            identity.authenticate_password("rad1", f"wrong password number {i}", "10.0.0.7")
        assert err.value.code == "invalid-credentials"
    clock.advance(seconds=31)
    # Even the right password is refused while locked.
    with pytest.raises(LoginThrottledError) as err:
        identity.authenticate_password("rad1", user["password"], "10.0.0.7")
    assert err.value.retry_after > 60
    alerts = [e for e in audit.events if e.event_id is EventId.SECURITY_ALERT
              and "locked" in e.outcome_description]
    assert alerts, "a lockout must raise a Security Alert"
    clock.advance(minutes=settings.security.login_lockout_minutes + 1)
    assert identity.authenticate_password("rad1", user["password"], "10.0.0.7").status == "mfa_required"


def test_progressive_delay_between_failures(identity, operator, clock):
    make_user(identity, operator, clock, "rad1", {"radiologist"})
    for _ in range(2):
        with pytest.raises(NotAuthenticatedError):
            identity.authenticate_password("rad1", "wrong password 1234", "10.0.0.7")
        clock.advance(seconds=0.5)
    with pytest.raises(LoginThrottledError) as err:
        identity.authenticate_password("rad1", "wrong password 1234", "10.0.0.7")
    assert 1 <= err.value.retry_after <= 30


def test_lockout_per_address_across_accounts(identity, clock, settings):
    threshold = settings.security.login_lockout_threshold * 4
    for i in range(threshold):
        clock.advance(seconds=31)
        with pytest.raises(NotAuthenticatedError):
            identity.authenticate_password(f"spray{i}", "Summer2026!!x", "10.9.9.9")
    clock.advance(seconds=31)
    with pytest.raises(LoginThrottledError):
        identity.authenticate_password("someone-else", "Summer2026!!x", "10.9.9.9")


def test_mfa_failures_count_towards_lockout(identity, operator, clock, settings):
    user = make_user(identity, operator, clock, "rad1", {"radiologist"})
    for _ in range(settings.security.login_lockout_threshold):
        clock.advance(seconds=31)
        step = identity.authenticate_password("rad1", user["password"], "10.0.0.1")
        with pytest.raises(NotAuthenticatedError):
            identity.complete_mfa(step.challenge, "000000" if totp_now(user["secret"], clock) != "000000"
                                  else "111111", "10.0.0.1")
    clock.advance(seconds=31)
    with pytest.raises(LoginThrottledError):
        identity.authenticate_password("rad1", user["password"], "10.0.0.1")


POLICY_REFUSALS = [
    ("short", "Tr0ub4dor&3", "password-too-short"),
    ("common", "1qaz2wsx3edc", "password-common"),
    ("common-case", "QWERTYUIOP123", "password-common"),
    ("username", "rad1rad1rad1!", "password-is-username"),
]


@pytest.mark.parametrize(("case", "password", "code"), POLICY_REFUSALS, ids=[c[0] for c in POLICY_REFUSALS])
def test_password_policy_refuses_new_password(identity, operator, clock, case, password, code):
    created = identity.create_user(operator, "rad1", {"radiologist"})
    step = identity.authenticate_password("rad1", created.one_time_password, "10.0.0.1")
    with pytest.raises(InvalidInputError) as err:
        identity.change_password_with_challenge(step.challenge, password, "10.0.0.1")
    assert err.value.code == code
    assert password not in err.value.detail


def test_password_reuse_of_last_five_refused(identity, operator, clock):
    user = make_user(identity, operator, clock, "res1", {"researcher"})
    principal = identity.principal_from_session(user["session"].cookie)
    current = user["password"]
    history = [current]
    for i in range(5):
        new = f"another long passphrase {i} zz"
        identity.change_password(principal, current, new)
        history.append(new)
        current = new
        principal = identity.principal_from_session(
            identity.authenticate_password("res1", current, "10.0.0.1").session.cookie)
    # The last five (including the current one) are refused; the sixth-oldest is allowed again.
    for old in history[-5:]:
        with pytest.raises(InvalidInputError) as err:
            identity.change_password(principal, current, old)
        assert err.value.code in ("password-reused",)
    identity.change_password(principal, current, history[0])


def test_one_time_password_must_be_changed(identity, operator):
    created = identity.create_user(operator, "tech1", {"technologist"})
    assert created.one_time_password and len(created.one_time_password) >= 16
    step = identity.authenticate_password("tech1", created.one_time_password, "10.0.0.1")
    assert step.status == "password_change_required" and step.session is None
    step = identity.change_password_with_challenge(step.challenge, GOOD_PASSWORD, "10.0.0.1")
    assert step.status == "mfa_enrolment_required"
    with pytest.raises(NotAuthenticatedError):
        identity.authenticate_password("tech1", created.one_time_password, "10.0.0.1")


def test_invite_accept_then_enrol(identity, operator, clock):
    created = identity.create_user(operator, "ref1", {"referring"}, invite=True)
    assert created.invite_token and created.one_time_password is None
    step = identity.accept_invite(created.invite_token, GOOD_PASSWORD, "10.0.0.1")
    assert step.status == "mfa_enrolment_required"
    enrolment = identity.begin_mfa_enrolment(step.challenge)
    assert enrolment.provisioning_uri.startswith("otpauth://totp/")
    assert enrolment.qr_svg.lstrip().startswith(b"<?xml") or b"<svg" in enrolment.qr_svg
    assert enrolment.qr_png.startswith(b"\x89PNG")
    issued, codes = identity.confirm_mfa_enrolment(step.challenge, totp_now(enrolment.secret, clock),
                                                   "10.0.0.1")
    assert len(codes) == 10 and len(set(codes)) == 10
    assert identity.principal_from_session(issued.cookie).roles == frozenset({"referring"})
    with pytest.raises(NotAuthenticatedError):
        identity.accept_invite(created.invite_token, GOOD_PASSWORD + "x", "10.0.0.1")


def test_invite_expired_refused(identity, operator, clock):
    created = identity.create_user(operator, "ref1", {"referring"}, invite=True)
    clock.advance(hours=73)
    with pytest.raises(NotAuthenticatedError):
        identity.accept_invite(created.invite_token, GOOD_PASSWORD, "10.0.0.1")


def test_disabled_user_cannot_login(identity, operator, clock):
    user = make_user(identity, operator, clock, "res1", {"researcher"})
    identity.set_enabled(operator, "res1", False)
    with pytest.raises(NotAuthenticatedError):
        identity.authenticate_password("res1", user["password"], "10.0.0.1")
    with pytest.raises(NotAuthenticatedError):
        identity.principal_from_session(user["session"].cookie)


def test_mfa_reset_requires_reenrolment(identity, operator, clock):
    user = make_user(identity, operator, clock, "rad1", {"radiologist"})
    identity.reset_mfa(operator, "rad1")
    step = identity.authenticate_password("rad1", user["password"], "10.0.0.1")
    assert step.status == "mfa_enrolment_required"
    with pytest.raises(NotAuthenticatedError):
        identity.complete_mfa(step.challenge, totp_now(user["secret"], clock), "10.0.0.1")


def test_mfa_secret_not_stored_in_clear(identity, operator, clock, factory):
    from sqlalchemy import select

    from dicomvault.access.models import MfaSecret

    user = make_user(identity, operator, clock, "rad1", {"radiologist"})
    with factory() as session:
        row = session.execute(select(MfaSecret)).scalar_one()
    assert user["secret"].encode() not in row.sealed_secret


def test_admin_actions_need_user_manage(identity, operator, clock, audit):
    from dicomvault.access.principal import Principal

    rad = Principal(id="x" * 32, kind="user", name="rad", roles=frozenset({"radiologist"}), door="ui")
    with pytest.raises(ForbiddenError):
        identity.create_user(rad, "evil", {"admin"})
    assert audit.events[-1].event_id is EventId.SECURITY_ALERT
    assert audit.events[-1].outcome is Outcome.MINOR_FAILURE


def test_concurrent_use_of_one_totp_code_accepted_once(identity, operator, clock):
    """Two logins racing with the same code: the compare-and-set lets only one through."""
    import threading

    user = make_user(identity, operator, clock, "rad1", {"radiologist"})
    code = totp_now(user["secret"], clock)
    challenges = [identity.authenticate_password("rad1", user["password"], f"10.0.0.{i}").challenge
                  for i in (1, 2, 3, 4)]
    results: list[str] = []
    barrier = threading.Barrier(len(challenges))

    def attempt(challenge: str) -> None:
        barrier.wait()
        try:
            identity.complete_mfa(challenge, code, "10.0.0.1")
            results.append("ok")
        except NotAuthenticatedError:
            results.append("refused")

    threads = [threading.Thread(target=attempt, args=(c,)) for c in challenges]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["ok", "refused", "refused", "refused"]
