"""`toxcmp bench html`: size and time-to-interactive of a 2,000-row report.html in headless Chromium, against a
one-row report loaded in the same browser (the baseline: what the page costs before it has any data)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from toxcmp.bench.result import BenchResult
from toxcmp.errors import UsageError

BUDGET_BYTES = 8 * 1024 * 1024
BUDGET_S = 2.0


@dataclass(frozen=True)
class HtmlBenchResult(BenchResult):
    rows: int
    bytes: int
    build_s: float
    baseline_ms: float  # one-row report, median of the loads
    interactive_ms: float  # the full report, median of the loads
    ratio: float
    loads: int

    @property
    def within_budget(self) -> bool:
        return self.bytes < BUDGET_BYTES and self.interactive_ms / 1000 < BUDGET_S

    def to_dict(self) -> dict[str, Any]:
        return super().to_dict() | {"within_budget": self.within_budget, "budget_bytes": BUDGET_BYTES, "budget_s": BUDGET_S}


def start_chromium(width: int = 1300, height: int = 1600):
    """Headless Debian Chromium through Selenium with the flags a closed network needs (used by the tests too)."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        raise UsageError("bench html needs Chromium", "apt-get install chromium chromium-driver (or make browser)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise UsageError("bench html needs selenium", "pip install 'toxcmp[dev]'") from None
    os.environ.setdefault("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--window-size={width},{height}", f"--user-data-dir={tempfile.mkdtemp()}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def _load_ms(driver, page: Path) -> float:
    driver.get("about:blank")
    driver.get(page.resolve().as_uri())
    deadline = time.time() + 60
    while time.time() < deadline:
        ready = driver.execute_script("return document.body && document.body.dataset.readyMs")
        if ready:
            return float(ready)
        time.sleep(0.02)
    raise RuntimeError(f"{page} never became interactive")


def bench_html(sources: Sequence[Path], workdir: Path, loads: int = 5) -> HtmlBenchResult:
    from toxcmp.run.rescore import rescore
    from toxcmp.report.html import REPORT_FILE, build_html

    result = rescore(list(sources), output_dir=None)
    t0 = time.perf_counter()
    page = build_html(result.rows, result.summary)
    build_s = time.perf_counter() - t0
    full = Path(workdir) / "full" / REPORT_FILE
    one = Path(workdir) / "one" / REPORT_FILE
    for path, rows in ((full, result.rows), (one, result.rows[:1])):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page if rows is result.rows else build_html(rows, result.summary), encoding="utf-8")
    driver = start_chromium()
    try:
        base = sorted(_load_ms(driver, one) for _ in range(loads))[loads // 2]
        full_ms = sorted(_load_ms(driver, full) for _ in range(loads))[loads // 2]
    finally:
        driver.quit()
    return HtmlBenchResult(len(result.rows), full.stat().st_size, round(build_s, 3), round(base, 1), round(full_ms, 1),
                           round(full_ms / base, 2) if base else float("inf"), loads)
