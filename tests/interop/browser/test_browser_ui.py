"""End to end in headless Chromium against a real dicomvault over HTTPS (issue 6).

Order matters: the idle-timeout test comes last (it waits out the one-minute idle timeout,
which also ends the other users' sessions).
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from dicomvault.access.principal import system_principal
from dicomvault.web.ui.csp import OHIF_CSP, OHIF_WORKER_CSP, UI_CSP
from tests.interop.browser import harness as h
from tests.interop.browser.viewer_probe import (
    OVERLAY_INDEX,
    OVERLAY_WL,
    PageWatch,
    changed,
    looks_like_ct,
    viewport_pixels,
    wait_for_change,
    wait_for_image,
    wait_text,
)

pytestmark = pytest.mark.interop

#: (user, path, expected status without following redirects): each screen only for its roles.
SCREEN_ACCESS = [
    ("refdoc", "/ui/admin", 403), ("refdoc", "/ui/audit", 403), ("refdoc", "/ui/break-glass", 200),
    ("refdoc", "/viewer/", 200), ("rad", "/ui/break-glass", 403), ("rad", "/ui/admin", 403),
    ("audrey", "/viewer/", 403), ("audrey", "/ui/audit", 200), ("audrey", "/ui/admin", 403),
    ("admin", "/ui/admin", 200), ("admin", "/viewer/", 403), ("admin", "/ui/audit", 403),
    ("rad", "/ui/account", 200),
]
#: Who sees which studies in OHIF's study list (the server filters; the client is not trusted).
STUDY_LIST = [("rad", {"A", "B", "C"}), ("refdoc", {"A"})]
DESCRIPTIONS = {"A": "CT phantom alpha", "B": "CT phantom bravo", "C": "CT phantom charlie"}


def viewer_url(vault: h.Vault, key: str) -> str:
    return f"{vault.base_url}/viewer/viewer?StudyInstanceUIDs={vault.studies[key].study_uid}"


def user_id(vault: h.Vault, username: str) -> str:
    users = vault.services.identity.list_users(system_principal("test"))
    return next(u.user_id for u in users if u.username == username)


def study_rows(page: Any, expected: int) -> list[str]:
    page.wait_for_selector(f"text=/1-{expected} of {expected}/", timeout=30_000)
    return [t for t in page.locator("tbody tr").all_inner_texts() if "CT phantom" in t]


# -- headers and install ------------------------------------------------------------------

def test_csp_is_strict_on_pages_and_tuned_for_ohif_on_viewer(vault: h.Vault) -> None:
    with httpx.Client(verify=False, base_url=vault.base_url) as client:
        login = client.get("/ui/login")
        config = client.get("/viewer/app-config.js")
        bundle = next(p.name for p in h.OHIF_CACHE.glob("app.bundle.*.js"))
        asset = client.get(f"/viewer/{bundle}")
        worker = client.get(f"/viewer/{bundle}", headers={"Sec-Fetch-Dest": "worker"})
        anonymous = client.get("/viewer/", follow_redirects=False)
    assert login.status_code == 200 and login.headers["content-security-policy"] == UI_CSP
    assert "cross-origin-embedder-policy" not in login.headers
    assert "<script>" not in login.text and "style=" not in login.text
    for r in (config, asset):
        assert r.status_code == 200
        assert r.headers["content-security-policy"] == OHIF_CSP
        assert r.headers["cross-origin-opener-policy"] == "same-origin"
        assert r.headers["cross-origin-embedder-policy"] == "require-corp"
    assert "'wasm-unsafe-eval'" in OHIF_CSP and "'unsafe-eval'" not in OHIF_CSP.replace("wasm-unsafe", "")
    assert worker.headers["content-security-policy"] == OHIF_WORKER_CSP  # embind codecs, workers only
    assert re.findall(r"Root\": \"([^\"]+)\"", config.text) == ["/dicomweb"] * 3
    assert "https://" not in config.text and "http://" not in config.text
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/ui/login?next=")


# -- login and screens ------------------------------------------------------------------

def test_login_with_password_and_totp_shows_only_permitted_screens(signed_in: Any, vault: h.Vault,
                                                                     shots: Any) -> None:
    page = signed_in("rad")
    assert urlparse(page.url).path == "/ui/"
    links = page.locator("header nav a").all_inner_texts()
    assert links == ["Home", "Studies", "Account"]
    assert page.title() == "Start · dicomvault"


def test_login_page_refuses_a_wrong_code(browser: Any, vault: h.Vault, shots: Any) -> None:
    context = h.new_context(browser)
    page = context.new_page()
    page.goto(f"{vault.base_url}/ui/login")
    shots(page, "login")
    account = vault.accounts["audrey"]
    page.fill("#username", account.username)
    page.fill("#password", account.password)
    page.click("#sign-in")
    import pyotp

    totp, now = pyotp.TOTP(account.secret), int(time.time()) // 30
    valid = {totp.generate_otp(step) for step in range(now - 1, now + 3)}
    page.fill("#mfa-code", next(c for c in ("000000", "111111", "222222", "333333", "444444") if c not in valid))
    page.click("#verify-code")
    page.wait_for_selector("#login-error[role=alert]:not([hidden])")
    assert "invalid" in page.inner_text("#login-error").lower()
    assert urlparse(page.url).path == "/ui/login"
    context.close()


@pytest.mark.parametrize(("user", "path", "status"), SCREEN_ACCESS)
def test_screen_is_served_only_to_permitted_roles(signed_in: Any, vault: h.Vault, user: str, path: str,
                                                   status: int) -> None:
    response = signed_in(user).request.get(vault.base_url + path, max_redirects=0)
    assert response.status == status


def test_admin_console_creates_user_who_enrols_mfa_with_qr(signed_in: Any, browser: Any, vault: h.Vault,
                                                            shots: Any) -> None:
    admin = signed_in("admin")
    admin.goto(f"{vault.base_url}/ui/admin")
    admin.wait_for_selector('#users tr[data-user="rad"]')
    admin.fill("#cu-username", "newtech")
    admin.fill("#cu-name", "New Technologist")
    admin.check("#cu-technologist")
    admin.click("#create-user button[type=submit]")
    admin.wait_for_selector("#create-result.success")
    one_time = admin.inner_text("#create-result").rsplit(": ", 1)[1].strip()
    admin.wait_for_selector('#users tr[data-user="newtech"]')
    admin.evaluate("window.scrollTo(0, 0)")
    shots(admin, "admin-console")

    import pyotp

    page = h.new_context(browser).new_page()
    page.goto(f"{vault.base_url}/ui/login")
    page.fill("#username", "newtech")
    page.fill("#password", one_time)
    page.click("#sign-in")
    page.wait_for_selector("#change-form:not([hidden])")
    page.fill("#new-password", "Newtech" + h.PASSWORD_SUFFIX)
    page.fill("#new-password-2", "Newtech" + h.PASSWORD_SUFFIX)
    page.click("#set-password")
    page.wait_for_selector("#enrol-form:not([hidden])")
    assert page.evaluate("document.querySelector('#qr').naturalWidth") > 50
    secret = page.inner_text("#secret").strip()
    page.fill("#enrol-code", pyotp.TOTP(secret).now())
    page.click("#confirm-enrol")
    page.wait_for_selector("#recovery:not([hidden])")
    codes = page.locator("#recovery-codes li").all_inner_texts()
    assert len(codes) == 10 and all(re.fullmatch(r"[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}", c) for c in codes)
    with page.expect_navigation():
        page.click("#recovery-done")
    assert urlparse(page.url).path == "/ui/"
    assert "Studies" in page.locator("header nav a").all_inner_texts()
    page.context.close()


# -- OHIF ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("user", "visible"), STUDY_LIST)
def test_ohif_study_list_shows_exactly_permitted_studies(signed_in: Any, vault: h.Vault, shots: Any,
                                                         user: str, visible: set[str]) -> None:
    page = signed_in(user)
    watch = PageWatch(page)
    page.goto(f"{vault.base_url}/viewer/")
    rows = study_rows(page, len(visible))
    shown = {k for k, text in DESCRIPTIONS.items() if any(text in r for r in rows)}
    assert shown == visible and len(rows) == len(visible)
    if user == "rad":
        shots(page, "ohif-study-list")
    watch.close()
    assert watch.errors == [] and watch.failed == []


def test_ohif_shows_ct_image_scrolls_and_window_levels(signed_in: Any, vault: h.Vault, shots: Any) -> None:
    page = signed_in("rad")
    watch = PageWatch(page)
    page.goto(viewer_url(vault, "A"))
    assert page.evaluate("crossOriginIsolated") is True
    assert page.evaluate("typeof SharedArrayBuffer") == "function"
    first = wait_for_image(page)
    shots(page, "ohif-viewer-ct")
    index_before = page.inner_text(OVERLAY_INDEX)
    box = page.locator("canvas.cornerstone-canvas").first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    page.mouse.move(cx, cy)
    page.mouse.wheel(0, 120)
    scrolled = wait_for_change(page, first)
    assert looks_like_ct(scrolled)
    wait_text(page, OVERLAY_INDEX, lambda t: t != index_before)

    for _ in range(25):  # through the rest of the series, every slice decoded and drawn
        page.mouse.wheel(0, 120)
        page.wait_for_timeout(60)
    wait_text(page, OVERLAY_INDEX, lambda t: t != index_before and ("(20/20)" in t or "(1/20)" in t))
    last = wait_for_image(page)
    assert changed(first, last) > 0.002

    wl_before = page.inner_text(OVERLAY_WL)
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 150, cy + 90, steps=12)
    page.mouse.up()
    leveled = wait_for_change(page, last, minimum=0.05)
    assert page.inner_text(OVERLAY_WL) != wl_before
    assert changed(last, leveled) > 0.05
    page.wait_for_timeout(1000)
    watch.close()
    assert watch.errors == []
    assert watch.failed == []


def test_ohif_decodes_jpeg2000_study_with_its_webassembly_codec(signed_in: Any, vault: h.Vault) -> None:
    """The stored JPEG 2000 frames go to the browser as they are; OHIF's wasm decoder runs
    under our CSP ('wasm-unsafe-eval', no 'unsafe-eval')."""
    page = signed_in("rad")
    watch = PageWatch(page)
    frame_types: list[str] = []

    def on_response(response: Any) -> None:
        if "/frames/" in response.url:
            frame_types.append(response.headers.get("content-type", ""))

    page.on("response", on_response)
    page.goto(viewer_url(vault, "C"))
    wait_for_image(page)
    page.wait_for_timeout(1000)
    page.remove_listener("response", on_response)
    watch.close()
    assert frame_types and all("transfer-syntax=1.2.840.10008.1.2.4.90" in t for t in frame_types)
    assert watch.errors == [] and watch.failed == []


def test_referring_user_cannot_find_or_open_unassigned_study(signed_in: Any, vault: h.Vault) -> None:
    page = signed_in("refdoc")
    other = vault.studies["B"].study_uid
    qido = page.request.get(f"{vault.base_url}/dicomweb/studies?StudyInstanceUID={other}")
    assert qido.status in (200, 204) and (qido.status == 204 or qido.json() == [])
    metadata = page.request.get(f"{vault.base_url}/dicomweb/studies/{other}/metadata")
    assert metadata.status == 404
    page.goto(viewer_url(vault, "B"))
    page.wait_for_timeout(6000)
    canvases = page.locator("canvas.cornerstone-canvas").count()
    assert canvases == 0 or not looks_like_ct(viewport_pixels(page))


def test_break_the_glass_opens_study_and_auditor_sees_security_alert(signed_in: Any, vault: h.Vault,
                                                                      shots: Any) -> None:
    page = signed_in("refdoc")
    page.goto(f"{vault.base_url}/ui/break-glass")
    page.fill("#bg-study", vault.studies["B"].study_uid)
    page.fill("#bg-reason", "Patient in the emergency department, prior imaging needed now")
    page.check("#bg-confirm")
    shots(page, "break-the-glass")
    page.click("#bg-submit")
    page.wait_for_selector("#bg-granted:not([hidden])")
    with page.expect_navigation():
        page.click("#bg-open")
    assert parse_qs(urlparse(page.url).query)["StudyInstanceUIDs"] == [vault.studies["B"].study_uid]
    wait_for_image(page)

    auditor = signed_in("audrey")
    auditor.goto(f"{vault.base_url}/ui/audit")
    auditor.wait_for_selector("#chain-badge")
    assert auditor.inner_text("#chain-badge") == "verified"
    auditor.select_option("#f-event", "security-alert")
    auditor.fill("#f-study", vault.studies["B"].study_uid)
    auditor.click("#audit-search button[type=submit]")
    row = auditor.locator("#records tbody tr", has_text="break-the-glass access granted")
    row.first.wait_for()
    assert row.first.locator(".badge.alert").first.inner_text() == "Security Alert"
    assert user_id(vault, "refdoc") in row.first.inner_text()
    row.first.click()
    auditor.wait_for_selector("#detail-card:not([hidden])")
    auditor.locator("#detail", has_text="110127").wait_for()
    auditor.evaluate("window.scrollTo(0, 0)")
    shots(auditor, "audit-browser")


def test_audit_browser_reports_disclosures_for_a_patient(signed_in: Any, vault: h.Vault) -> None:
    auditor = signed_in("audrey")
    auditor.goto(f"{vault.base_url}/ui/audit")
    auditor.fill("#d-patient", vault.studies["B"].patient_id)
    auditor.click("#disclosures button[type=submit]")
    auditor.wait_for_selector("#disc-table:not([hidden])")
    text = " ".join(auditor.locator("#disc-table tbody tr").all_inner_texts())
    assert user_id(vault, "refdoc") in text and "referring" in text
    assert vault.studies["B"].study_uid in text
    assert vault.studies["B"].patient_id not in auditor.url


# -- automatic logoff (last: waits out the idle timeout) ----------------------------------

def test_session_expires_after_idle_timeout_and_returns_to_login(browser: Any, vault: h.Vault) -> None:
    context = h.new_context(browser)
    page = context.new_page()
    h.login(page, vault, "sleepy", "/viewer/")
    page.goto(viewer_url(vault, "A"))
    wait_for_image(page)
    page.wait_for_selector("#session-warning:not([hidden])", timeout=60_000)
    assert "inactivity" in page.inner_text("#session-warning")
    page.wait_for_url(re.compile(r"/ui/login\?"), timeout=60_000)
    assert parse_qs(urlparse(page.url).query)["reason"] == ["session-idle"]
    assert "inactivity" in page.inner_text("#reason")
    assert page.request.get(f"{vault.base_url}/ui/api/session").status == 401
    page.goto(viewer_url(vault, "A"))
    assert urlparse(page.url).path == "/ui/login"
    context.close()
