"""A real dicomvault on loopback (HTTPS, test CA from ``init``) with users, studies and OHIF,
plus headless Chromium (Debian ``chromium``) driven by Playwright — shared by the browser
tests, ``bench/screenshots.py`` and ``bench/bench_viewer.py``.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp
from pydicom.uid import JPEG2000Lossless

from dicomvault.access.principal import system_principal
from dicomvault.config import load_settings
from dicomvault.services.context import Services, build_services
from dicomvault.services.setup import initialise
from dicomvault.web import ohif
from dicomvault.web.server import WebServer
from tests.interop.browser.ctdata import SeriesSpec, new_spec, series

CHROMIUM = os.environ.get("DICOMVAULT_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--use-gl=swiftshader", "--enable-unsafe-swiftshader"]
#: Shared OHIF install for test runs (downloaded and verified once per machine).
OHIF_CACHE = Path(os.environ.get("DICOMVAULT_TEST_OHIF_DIR",
                                 Path.home() / ".cache" / "dicomvault" / f"ohif-{ohif.OHIF_VERSION}"))
PASSWORD_SUFFIX = "-Reading-Room-2024!"


@dataclass
class Account:
    username: str
    password: str
    secret: str
    roles: frozenset[str]
    last_step: int = 0

    def code(self) -> str:
        """A TOTP code not used before (RFC 6238 steps are single-use; +-1 step accepted)."""
        totp = pyotp.TOTP(self.secret)
        while True:
            t = time.time()
            now = int(t) // 30
            earliest = now - 1 if t % 30 < 20 else now  # the previous step only while it stays valid
            step = max(self.last_step + 1, earliest)
            if step <= now + 1:
                self.last_step = step
                return totp.generate_otp(step)
            time.sleep(30 - t % 30 + 0.2)


@dataclass
class Vault:
    base_url: str
    services: Services
    server: WebServer
    data_dir: Path
    accounts: dict[str, Account] = field(default_factory=dict)
    studies: dict[str, SeriesSpec] = field(default_factory=dict)

    def stop(self) -> None:
        self.server.stop()
        self.services.close()


def install_ohif(path: Path = OHIF_CACHE) -> Path:
    """Download (once), verify against the pinned integrity hash and unpack OHIF."""
    settings = load_settings(None, {"DICOMVAULT_OHIF_DIR": str(path)})
    return ohif.install(settings).path


def enrol(services: Services, username: str, one_time_password: str, roles: frozenset[str]) -> Account:
    """First login without a browser: set a password, enrol TOTP, confirm with a real code."""
    identity = services.identity
    password = username.capitalize() + PASSWORD_SUFFIX
    step = identity.authenticate_password(username, one_time_password, "127.0.0.1")
    assert step.status == "password_change_required", step.status
    assert step.challenge is not None
    step = identity.change_password_with_challenge(step.challenge, password, "127.0.0.1")
    assert step.status == "mfa_enrolment_required", step.status
    assert step.challenge is not None
    enrolment = identity.begin_mfa_enrolment(step.challenge)
    account = Account(username, password, enrolment.secret, roles)
    identity.confirm_mfa_enrolment(step.challenge, account.code(), "127.0.0.1")
    return account


def start_vault(root: Path, *, idle_minutes: int = 15, ohif_dir: Path = OHIF_CACHE,
                extra_env: dict[str, str] | None = None) -> Vault:
    """Initialise a data folder (keys, CA, schema, admin) and serve it over HTTPS on loopback."""
    env = {
        "DICOMVAULT_DATA_DIR": str(root / "data"),
        "DICOMVAULT_OHIF_DIR": str(ohif_dir),
        "DICOMVAULT_HTTP__HOST": "127.0.0.1",
        "DICOMVAULT_HTTP__PORT": "0",
        "DICOMVAULT_SECURITY__SESSION_IDLE_MINUTES": str(idle_minutes),
        **(extra_env or {}),
    }
    settings = load_settings(None, env)
    result = initialise(settings, env)
    services = build_services(settings, environ=env)
    server = WebServer(services, port=0)
    server.start()
    vault = Vault(f"https://127.0.0.1:{server.port}", services, server, settings.data_dir)
    assert result.admin_password is not None
    vault.accounts["admin"] = enrol(services, "admin", result.admin_password, frozenset({"admin"}))
    return vault


def add_user(vault: Vault, username: str, roles: set[str]) -> Account:
    created = vault.services.identity.create_user(system_principal("test"), username, roles, username.title())
    assert created.one_time_password is not None
    account = enrol(vault.services, username, created.one_time_password, frozenset(roles))
    vault.accounts[username] = account
    return account


def add_study(vault: Vault, key: str, spec: SeriesSpec) -> SeriesSpec:
    operator = system_principal("test-ingest")
    for blob in series(spec):
        vault.services.archive.ingest(operator, blob, door="test")
    vault.studies[key] = spec
    return spec


def standard_vault(root: Path, *, idle_minutes: int = 1, slices: int = 20) -> Vault:
    """Three CT studies (C stored as JPEG 2000); a radiologist, a referring physician on study A's care team only,
    an auditor, an admin, and a spare radiologist for the idle-timeout test."""
    vault = start_vault(root, idle_minutes=idle_minutes)
    add_study(vault, "A", new_spec("DV0001", "Phantom^Alpha", "CT phantom alpha", slices=slices))
    add_study(vault, "B", new_spec("DV0002", "Phantom^Bravo", "CT phantom bravo", slices=slices))
    add_study(vault, "C", new_spec("DV0003", "Phantom^Charlie", "CT phantom charlie (JPEG 2000)",
                                   slices=slices, transfer_syntax=JPEG2000Lossless))
    add_user(vault, "rad", {"radiologist"})
    add_user(vault, "refdoc", {"referring"})
    add_user(vault, "audrey", {"auditor"})
    add_user(vault, "sleepy", {"radiologist"})
    vault.services.identity.assign_care_team(system_principal("test"), "refdoc", vault.studies["A"].study_uid)
    return vault


def launch_browser(playwright: Any) -> Any:
    """Debian's Chromium, headless; never a downloaded browser."""
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        raise RuntimeError("Debian chromium is required (apt-get install chromium)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def new_context(browser: Any, **kw: Any) -> Any:
    return browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 900},
                               device_scale_factor=1, **kw)


def login(page: Any, vault: Vault, username: str, next_path: str = "/ui/") -> None:
    """Password, then TOTP, through our login page."""
    account = vault.accounts[username]
    page.goto(f"{vault.base_url}/ui/login?next={next_path}")
    page.fill("#username", account.username)
    page.fill("#password", account.password)
    page.click("#sign-in")
    page.wait_for_selector("#mfa-code", state="visible")
    page.fill("#mfa-code", account.code())
    with page.expect_navigation():
        page.click("#verify-code")
