"""Look at what OHIF actually shows: viewport canvas pixels, overlay text, console and network."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

CANVAS = "canvas.cornerstone-canvas"
OVERLAY_INDEX = '[data-cy="viewport-overlay-bottom-right"]'
OVERLAY_WL = '[data-cy="viewport-overlay-bottom-left"]'
#: Chromium reports requests the page itself cancelled (OHIF drops queued prefetches) as
#: ERR_ABORTED; they are not failures of the server or the network.
CLIENT_CANCELLED = "net::ERR_ABORTED"


def viewport_pixels(page: Any) -> np.ndarray:
    """Grey levels of the central part of the viewport canvas (overlay text excluded)."""
    png = page.locator(CANVAS).first.screenshot()
    img = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.int16)
    h, w = img.shape
    return img[int(h * 0.12):int(h * 0.88), int(w * 0.2):int(w * 0.8)]


def looks_like_ct(px: np.ndarray) -> bool:
    """Air (dark), soft tissue (grey) and bone (bright) all present: an image, not a blank canvas."""
    n = px.size
    return bool((px < 30).sum() > 0.05 * n and ((px > 60) & (px < 200)).sum() > 0.10 * n
                and (px > 220).sum() > 0.02 * n)


def wait_for_image(page: Any, timeout: float = 30.0) -> np.ndarray:
    deadline = time.monotonic() + timeout
    page.wait_for_selector(CANVAS, timeout=timeout * 1000)
    while True:
        px = viewport_pixels(page)
        if looks_like_ct(px):
            return px
        if time.monotonic() > deadline:
            raise AssertionError("the viewport never showed a CT image")
        page.wait_for_timeout(250)


def changed(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels that differ by more than 8 grey levels."""
    return float((np.abs(a - b) > 8).mean())


def wait_for_change(page: Any, before: np.ndarray, minimum: float = 0.002, timeout: float = 10.0) -> np.ndarray:
    deadline = time.monotonic() + timeout
    while True:
        px = viewport_pixels(page)
        if changed(before, px) >= minimum:
            return px
        if time.monotonic() > deadline:
            raise AssertionError(f"the viewport did not change ({changed(before, px):.4f})")
        page.wait_for_timeout(100)


@dataclass
class PageWatch:
    """Console errors, page errors, failed requests and HTTP errors seen by a page."""

    page: Any
    errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: int = 0

    def __post_init__(self) -> None:
        self._handlers = {
            "console": self._console, "pageerror": self._pageerror,
            "requestfailed": self._requestfailed, "response": self._response,
        }
        for event, fn in self._handlers.items():
            self.page.on(event, fn)

    def _console(self, msg: Any) -> None:
        if msg.type == "error":
            self.errors.append(msg.text[:300])

    def _pageerror(self, exc: Any) -> None:
        self.errors.append(f"page error: {str(exc)[:300]}")

    def _requestfailed(self, request: Any) -> None:
        if request.failure == CLIENT_CANCELLED:
            self.cancelled += 1
        else:
            self.failed.append(f"{request.failure} {request.url[:160]}")

    def _response(self, response: Any) -> None:
        if response.status >= 400:
            self.failed.append(f"HTTP {response.status} {response.url[:160]}")

    def close(self) -> None:
        for event, fn in self._handlers.items():
            self.page.remove_listener(event, fn)


def wait_text(page: Any, selector: str, predicate: Any, timeout: float = 20.0, poll_ms: int = 20) -> str:
    """Poll an element's text until ``predicate(text)`` holds (no eval: the pages' CSP forbids it)."""
    deadline = time.monotonic() + timeout
    while True:
        text = page.locator(selector).first.inner_text()
        if predicate(text):
            return str(text)
        if time.monotonic() > deadline:
            raise AssertionError(f"{selector} never matched; last text {text!r}")
        page.wait_for_timeout(poll_ms)
