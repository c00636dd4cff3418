"""Sessions: timeouts, forged cookies, CSRF, logout (HIPAA 164.312(a)(2)(iii))."""

from __future__ import annotations

import base64

import pytest
from sqlalchemy import select

from dicomvault.access.models import UserSession
from dicomvault.audit.events import EventId, EventType
from dicomvault.errors import ForbiddenError, NotAuthenticatedError

from .conftest import login, make_user


@pytest.fixture
def rad(identity, operator, clock):
    return make_user(identity, operator, clock, "rad1", {"radiologist"})


def _flip(text: str, index: int) -> str:
    ch = text[index]
    return text[:index] + ("A" if ch != "A" else "B") + text[index + 1:]


def test_session_valid_within_idle_window(identity, clock, rad):
    issued = login(identity, clock, rad, "rad1")
    for _ in range(5):
        clock.advance(minutes=14)
        assert identity.principal_from_session(issued.cookie).id == rad["user_id"]


def test_session_idle_timeout_refused_and_audited(identity, clock, rad, audit):
    issued = login(identity, clock, rad, "rad1")
    clock.advance(minutes=15, seconds=1)
    with pytest.raises(NotAuthenticatedError) as err:
        identity.principal_from_session(issued.cookie)
    assert err.value.code == "session-idle"
    assert audit.events[-1].event_types == [EventType.LOGOUT]
    # Revoked for good, even if the clock went back.
    clock.advance(minutes=-15)
    with pytest.raises(NotAuthenticatedError):
        identity.principal_from_session(issued.cookie)


def test_session_absolute_timeout_refused(identity, clock, rad):
    issued = login(identity, clock, rad, "rad1")
    for _ in range(12 * 5):  # active every 12 minutes for 12 hours
        clock.advance(minutes=12)
        try:
            identity.principal_from_session(issued.cookie)
        except NotAuthenticatedError as exc:
            assert exc.code == "session-expired"
            break
    else:
        pytest.fail("the absolute timeout never fired")


@pytest.mark.parametrize("where", ["id", "mac"])
def test_session_altered_cookie_refused(identity, clock, rad, where):
    issued = login(identity, clock, rad, "rad1")
    sid, mac = issued.cookie.split(".")
    altered = f"{_flip(sid, 5)}.{mac}" if where == "id" else f"{sid}.{_flip(mac, 5)}"
    with pytest.raises(NotAuthenticatedError) as err:
        identity.principal_from_session(altered)
    assert err.value.code == "session-invalid"


@pytest.mark.parametrize("cookie", ["", "abc", "a.b.c", "....", "x" * 5000,
                                    base64.urlsafe_b64encode(b"\0" * 32).decode().rstrip("=") + ".AAAA"])
def test_session_forged_cookie_refused(identity, cookie):
    with pytest.raises(NotAuthenticatedError):
        identity.principal_from_session(cookie)


def test_session_cookie_from_other_keyring_refused(identity, clock, rad, factory, settings, audit):
    import secrets

    from dicomvault.access.identity import IdentityService
    from dicomvault.crypto.keyring import Keyring, LocalKek

    other = IdentityService(factory, Keyring(LocalKek.generate(), secrets.token_bytes(32)), settings,
                            audit, clock=clock)
    issued = login(identity, clock, rad, "rad1")
    with pytest.raises(NotAuthenticatedError):
        other.principal_from_session(issued.cookie)


def test_session_id_stored_only_as_hash(identity, clock, rad, factory):
    issued = login(identity, clock, rad, "rad1")
    sid = issued.cookie.split(".")[0]
    with factory() as session:
        hashes = list(session.execute(select(UserSession.id_hash)).scalars())
    assert all(sid not in h for h in hashes)
    assert issued.id_hash in hashes


def test_session_id_is_256_bits(identity, clock, rad):
    issued = login(identity, clock, rad, "rad1")
    sid = issued.cookie.split(".")[0]
    assert len(base64.urlsafe_b64decode(sid + "=" * (-len(sid) % 4))) == 32


def test_logout_ends_session(identity, clock, rad, audit):
    issued = login(identity, clock, rad, "rad1")
    identity.logout(issued.cookie, "10.0.0.1")
    with pytest.raises(NotAuthenticatedError):
        identity.principal_from_session(issued.cookie)
    logouts = [e for e in audit.events if e.event_id is EventId.USER_AUTHENTICATION
               and e.event_types == [EventType.LOGOUT]]
    assert logouts


def test_logout_everywhere_ends_all_sessions(identity, clock, rad):
    a = login(identity, clock, rad, "rad1")
    b = login(identity, clock, rad, "rad1", address="10.0.0.2")
    principal = identity.principal_from_session(a.cookie)
    assert identity.logout_everywhere(principal) >= 2
    for issued in (a, b):
        with pytest.raises(NotAuthenticatedError):
            identity.principal_from_session(issued.cookie)


def test_csrf_token_required(identity, clock, rad):
    issued = login(identity, clock, rad, "rad1")
    identity.csrf_check(issued.cookie, issued.csrf_token)
    for bad in (None, "", "x" * 43, _flip(issued.csrf_token, 3)):
        with pytest.raises(ForbiddenError) as err:
            identity.csrf_check(issued.cookie, bad)
        assert err.value.code == "csrf"


def test_csrf_token_of_other_session_refused(identity, clock, rad):
    a = login(identity, clock, rad, "rad1")
    b = login(identity, clock, rad, "rad1")
    with pytest.raises(ForbiddenError):
        identity.csrf_check(a.cookie, b.csrf_token)


def test_role_change_effective_next_request(identity, operator, clock, rad):
    issued = login(identity, clock, rad, "rad1")
    identity.set_roles(operator, "rad1", {"technologist"})
    assert identity.principal_from_session(issued.cookie).roles == frozenset({"technologist"})


def test_disable_user_revokes_sessions(identity, operator, clock, rad):
    issued = login(identity, clock, rad, "rad1")
    identity.set_enabled(operator, "rad1", False)
    identity.set_enabled(operator, "rad1", True)
    with pytest.raises(NotAuthenticatedError):
        identity.principal_from_session(issued.cookie)


def test_forged_cookie_refused_before_database(keyring, settings, audit, clock):
    """The MAC is checked first: a forged cookie never reaches the (here unreachable) database."""
    from dicomvault.access.identity import IdentityService
    from dicomvault.index.db import make_engine, make_session_factory

    from .conftest import FAST_HASHER

    dead = make_engine("postgresql://nobody@127.0.0.1:1/none", pool_size=1)
    svc = IdentityService(make_session_factory(dead), keyring, settings, audit, clock=clock,
                          hasher=FAST_HASHER)
    forged = base64.urlsafe_b64encode(b"\x07" * 32).decode().rstrip("=") + "." + "A" * 43
    with pytest.raises(NotAuthenticatedError) as err:
        svc.principal_from_session(forged)
    assert err.value.code == "session-invalid"
    dead.dispose()


def test_session_check_needs_no_write_when_fresh(identity, clock, rad, factory):
    """Requests within the touch granularity are served by the read-only path."""
    issued = login(identity, clock, rad, "rad1")
    identity.principal_from_session(issued.cookie)
    with factory() as session:
        before = session.get(UserSession, issued.id_hash).last_seen_at
    clock.advance(seconds=5)
    identity.principal_from_session(issued.cookie)
    with factory() as session:
        assert session.get(UserSession, issued.id_hash).last_seen_at == before
    clock.advance(seconds=10)
    identity.principal_from_session(issued.cookie)
    with factory() as session:
        assert session.get(UserSession, issued.id_hash).last_seen_at == clock.now


def test_revoked_session_refused_on_read_path(identity, clock, rad):
    issued = login(identity, clock, rad, "rad1")
    identity.principal_from_session(issued.cookie)
    identity.logout(issued.cookie)
    with pytest.raises(NotAuthenticatedError):
        identity.principal_from_session(issued.cookie)
