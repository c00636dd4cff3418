"""Browser fixtures: one dicomvault over HTTPS on loopback per module, headless Debian Chromium,
one signed-in browser context per user (TOTP codes are single-use, so each user signs in once).

The idle timeout is one minute (the smallest the setting allows) so the expiry test stays short.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.browser import harness as h

pytestmark = pytest.mark.interop


@pytest.fixture(scope="session")
def ohif_install() -> Path:
    """The pinned OHIF build, fetched from the npm registry and verified once per machine."""
    return h.install_ohif()


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory, ohif_install: Path) -> Iterator[h.Vault]:
    v = h.standard_vault(tmp_path_factory.mktemp("vault"), idle_minutes=1)
    yield v
    v.stop()


@pytest.fixture(scope="module")
def browser(vault: h.Vault) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = h.launch_browser(p)
        yield b
        b.close()


@pytest.fixture(scope="module")
def signed_in(browser: Any, vault: h.Vault) -> Iterator[Callable[[str], Any]]:
    """``signed_in("rad")`` → a page of a context where that user has signed in (password + TOTP)."""
    pages: dict[str, Any] = {}

    def get(username: str) -> Any:
        if username not in pages:
            context = h.new_context(browser)
            page = context.new_page()
            h.login(page, vault, username)
            pages[username] = page
        return pages[username]

    yield get
    for page in pages.values():
        page.context.close()


@pytest.fixture(scope="session")
def shots() -> Callable[[Any, str], None]:
    """Save a screenshot to ``DICOMVAULT_SCREENSHOTS`` (e.g. docs/screenshots) when set."""
    target = os.environ.get("DICOMVAULT_SCREENSHOTS")

    def take(page: Any, name: str) -> None:
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(target) / f"{name}.png"))

    return take
