"""Headless Chromium (Debian's chromium + chromium-driver) driven through Selenium, for the HTML report tests."""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def require_browser() -> None:
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return
    message = "Chromium not installed (apt-get install chromium chromium-driver)"
    if os.environ.get("TOXCMP_REQUIRE_BROWSER"):
        pytest.fail(message + " — CI must run the browser tests")
    pytest.skip(message)


def start_browser(width: int = 1300, height: int = 1600):
    require_browser()
    from toxcmp.bench.html import start_chromium

    return start_chromium(width, height)
