"""`toxcmp bench arms` runs end to end on tiny settings: loopback providers slow in turn, all together vs each
alone, every provider at exactly its --concurrency."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.serial  # benchmarks measure time


def test_bench_arms_json_on_tiny_settings(cli):
    result = cli("bench", "arms", "--rows", "16", "--phase", "0.1", "--fast", "0.02", "--slow", "0.1",
                 "--concurrency", "2", "--chunk-size", "4", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["rows"] == 16 and data["providers"] == 2 and set(data["alone_s"]) == {"A", "B"}
    assert data["complete"] and data["concurrency_ok"] and data["max_in_flight"] == {"A": 2, "B": 2}
    assert data["together_s"] > 0 and data["ratio"] == pytest.approx(data["together_s"] / data["slowest_alone_s"],
                                                                     rel=0.01)
    assert data["scheduling"] == "concurrent" and data["goal"] == 1.15
