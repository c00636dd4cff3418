"""Page guards: the post-login redirect stays on our origin; screens follow the role table."""

from __future__ import annotations

import pytest

from dicomvault.access.principal import Principal
from dicomvault.web.ui.pages import nav_links
from dicomvault.web.ui.session import safe_next

#: (requested next, where the user actually goes) — open-redirect guard (OWASP).
NEXT_TARGETS = [
    ("/viewer/viewer?StudyInstanceUIDs=1.2.3", "/viewer/viewer?StudyInstanceUIDs=1.2.3"),
    ("/ui/audit", "/ui/audit"),
    ("https://evil.example/", "/ui/"),
    ("//evil.example/x", "/ui/"),
    ("/\\evil.example", "/ui/"),
    ("javascript:alert(1)", "/ui/"),
    ("/ui/\r\nSet-Cookie: x=1", "/ui/"),
    ("", "/ui/"),
    (None, "/ui/"),
]

#: role -> screens in the navigation (the server-side checks use the same predicates).
NAV = [
    ("radiologist", ["home", "viewer", "account"]),
    ("technologist", ["home", "viewer", "account"]),
    ("referring", ["home", "viewer", "break-glass", "account"]),
    ("auditor", ["home", "audit", "account"]),
    ("admin", ["home", "admin", "account"]),
    ("privacy-officer", ["home", "audit", "account"]),
    ("patient", ["home", "viewer", "account"]),
]


@pytest.mark.parametrize(("target", "expected"), NEXT_TARGETS)
def test_safe_next_keeps_redirect_on_our_origin(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


@pytest.mark.parametrize(("role", "screens"), NAV)
def test_navigation_lists_only_screens_of_the_role(role: str, screens: list[str]) -> None:
    principal = Principal(id="u1", kind="user", name="u", roles=frozenset({role}), mfa_verified=True)
    assert [key for key, _href, _label in nav_links(principal)] == screens
