"""Regenerate docs/screenshots/*.png: runs the browser end-to-end tests with screenshots on.

    python bench/screenshots.py

The screens come from the real flows in ``tests/interop/browser`` (login page, OHIF study list,
OHIF viewer with the CT phantom, break-the-glass form, admin console, audit browser), so the
pictures always show what the tests checked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    env = {**os.environ, "DICOMVAULT_SCREENSHOTS": str(ROOT / "docs" / "screenshots")}
    return subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "tests/interop/browser/test_browser_ui.py"], cwd=ROOT, env=env)


if __name__ == "__main__":
    raise SystemExit(main())
