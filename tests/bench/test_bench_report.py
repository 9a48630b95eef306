"""`toxcmp bench report` runs end to end: a compare answered entirely from the cache (no server at its URLs)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import RECORDED, require_shared

# not serial: nothing here is judged by the clock (the figures are printed, only checked to exist)


def test_bench_report_runs_a_fully_cached_compare_without_its_servers(cli):
    sources = [require_shared(RECORDED / f"api_{m}_toxic_simple_n2000.parquet") for m in ("gpt-oss-20b", "gpt-oss-safeguard-20b")]
    result = cli("bench", "report", *map(str, sources), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["rows"] == 2000 and data["cached_compare_s"] > 0
