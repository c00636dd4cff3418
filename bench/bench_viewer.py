"""Viewer benchmark: OHIF in headless Chromium over HTTPS with a signed-in session (password + TOTP).

Prints ONE JSON line, e.g.::

    {"bench": "viewer", "images": 500, "matrix": 512, "first_image_s": 2.1, "scroll_s": 31.0,
     "scroll_images_per_s": 16.1, ...}

* ``first_image_s``: from navigating to ``/viewer/viewer?StudyInstanceUIDs=…`` (a 500-image CT
  study) until the viewport canvas shows the CT image (its pixels are sampled, not the DOM).
* ``scroll_s``: from the first image to the last one, one mouse-wheel step at a time, each step
  waiting until OHIF reports the new image on screen (every frame fetched over WADO-RS,
  decrypted, audited, decoded and drawn).

Environment: ``DICOMVAULT_BENCH_IMAGES`` (default 500), ``DICOMVAULT_BENCH_MATRIX`` (default 512).
Needs Debian ``chromium`` and the ``playwright`` package; OHIF is installed (verified) on first use.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.interop.browser import harness as h  # noqa: E402
from tests.interop.browser.ctdata import new_spec  # noqa: E402
from tests.interop.browser.viewer_probe import (  # noqa: E402
    OVERLAY_INDEX,
    PageWatch,
    wait_for_image,
    wait_text,
)

IMAGES = int(os.environ.get("DICOMVAULT_BENCH_IMAGES", "500"))
MATRIX = int(os.environ.get("DICOMVAULT_BENCH_MATRIX", "512"))


def main() -> None:
    from playwright.sync_api import sync_playwright

    h.install_ohif()
    with tempfile.TemporaryDirectory(prefix="dv-bench-viewer-") as tmp:
        vault = h.start_vault(Path(tmp), idle_minutes=15)
        try:
            t0 = time.perf_counter()
            spec = h.add_study(vault, "CT", new_spec("BENCH0001", "Bench^Phantom", "CT bench",
                                                     slices=IMAGES, size=MATRIX))
            ingest_s = time.perf_counter() - t0
            h.add_user(vault, "reader", {"radiologist"})
            url = f"{vault.base_url}/viewer/viewer?StudyInstanceUIDs={spec.study_uid}"
            with sync_playwright() as p:
                browser = h.launch_browser(p)
                page = h.new_context(browser).new_page()
                h.login(page, vault, "reader")
                watch = PageWatch(page)
                start = time.perf_counter()
                page.goto(url)
                wait_for_image(page, timeout=120)
                first_image_s = time.perf_counter() - start
                box = page.locator("canvas.cornerstone-canvas").first.bounding_box()
                page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                start = time.perf_counter()
                for i in range(2, IMAGES + 1):
                    page.mouse.wheel(0, 120)
                    wait_text(page, OVERLAY_INDEX, lambda t, i=i: f"({i}/{IMAGES})" in t,
                              timeout=60, poll_ms=5)
                scroll_s = time.perf_counter() - start
                version = browser.version
                watch.close()
                browser.close()
        finally:
            vault.stop()
    print(json.dumps({
        "bench": "viewer", "viewer": f"OHIF {h.ohif.OHIF_VERSION}", "browser": f"chromium {version} headless",
        "images": IMAGES, "matrix": MATRIX, "transfer": "https, session cookie (password + TOTP)",
        "first_image_s": round(first_image_s, 3), "scroll_s": round(scroll_s, 3),
        "scroll_images_per_s": round((IMAGES - 1) / scroll_s, 1), "ingest_s": round(ingest_s, 1),
        "console_errors": len(watch.errors), "failed_requests": len(watch.failed),
    }))


if __name__ == "__main__":
    main()
