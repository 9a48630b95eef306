"""Results on disk are versioned: `schema_version` in summary.json and in both parquet files' metadata, a file
written without it reads as version 1 (its headline is the first comparison, as version 1 laid it out), a newer
version is refused, and the writer writes the pages its caller hands it."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from toxcmp.errors import UsageError
from toxcmp.results.io import read_results, read_summary, write_outputs
from toxcmp.results.schema import PAIRS_FILE, RESULTS_FILE, SCHEMA_VERSION, SUMMARY_FILE, TIDY_SCHEMA, headline_of

from tests.run.test_compare import TEXTS, TRUTH, plugin_backends  # noqa: F401 - rule/quirky entry points, autouse

SUMMARY = {"reference": "ref", "comparisons": {"x": {"verdict": "pass"}, "y": {"verdict": "fail"}},
           "backends": {"a": {"label": "ref"}, "b": {"label": "x"}}, "verdict": "fail", "metadata": {"run_id": "r1"}}


def _tidy_row(arm: str, answer: str) -> dict:
    return {"example_id": "e0", "text": "t", "toxicity": 0, "weight": 1.0, "arm": arm, "repeat": 0, "raw": answer,
            "content": answer, "reasoning": "", "latency_s": 0.0, "cached": True}


def test_schema_version_is_written_into_the_summary_and_both_parquet_files(tmp_path):
    write_outputs(tmp_path, [_tidy_row("ref", "0"), _tidy_row("x", "1")], [], dict(SUMMARY),
                  pages={"page.txt": lambda: "built after the data files"})
    on_disk = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert SCHEMA_VERSION == 2 and on_disk["schema_version"] == 2 and list(on_disk)[:2] == ["schema_version", "headline"]
    assert on_disk["headline"]["arm"] == "x" and on_disk["headline"]["reference"] == "ref"  # the first comparison
    assert on_disk["verdict"] == "fail" and on_disk["comparisons"] == SUMMARY["comparisons"]  # the rest as given
    for name in (RESULTS_FILE, PAIRS_FILE):
        meta = pl.read_parquet_metadata(tmp_path / name)
        assert meta["toxcmp_schema_version"] == "2"
        assert json.loads(meta["toxcmp_summary"])["schema_version"] == 2
    assert (tmp_path / "page.txt").read_text() == "built after the data files"
    assert read_summary(tmp_path)["schema_version"] == 2
    assert read_results([tmp_path]).schema_version == 2


def _write_version_1(run_dir: Path, summary: dict) -> None:
    """A run dir as toxcmp wrote it before schema versions: no schema_version anywhere, no headline."""
    run_dir.mkdir(exist_ok=True)
    frame = pl.DataFrame([{k: r.get(k) for k in TIDY_SCHEMA} for r in (_tidy_row("ref", "0"), _tidy_row("x", "1"))],
                         schema=TIDY_SCHEMA, orient="row")
    frame.write_parquet(run_dir / RESULTS_FILE, metadata={"toxcmp": json.dumps({"run_id": "old"})})
    (run_dir / SUMMARY_FILE).write_text(json.dumps(summary))


def test_files_without_a_schema_version_read_as_version_1(tmp_path):
    _write_version_1(tmp_path, {k: v for k, v in SUMMARY.items()})
    recorded = read_results([tmp_path])
    assert recorded.schema_version == 1 and recorded.layout == "toxcmp" and recorded.meta == {"run_id": "old"}
    assert [r["arm"] for r in recorded.rows] == ["ref", "x"]
    summary = read_summary(tmp_path)
    assert summary["schema_version"] == 1
    assert (summary["headline"]["arm"], summary["headline"]["reference"]) == ("x", "ref")
    assert summary["verdict"] == "fail" and list(summary["comparisons"]) == ["x", "y"]  # today's keys, as they were


def test_a_version_1_summary_of_two_sides_names_side_b_against_side_a():
    two_sided = {"backends": {"a": {"label": "api"}, "b": {"label": "local"}}, "n": 3}
    headline = headline_of(two_sided)
    assert (headline["arm"], headline["reference"]) == ("local", "api")
    assert headline_of({"n": 3}) is None  # nothing says which sides these are


def test_a_newer_schema_version_is_refused(tmp_path):
    _write_version_1(tmp_path, dict(SUMMARY, schema_version=SCHEMA_VERSION + 1))
    with pytest.raises(UsageError, match=f"results schema {SCHEMA_VERSION + 1}; this toxcmp reads up to 2"):
        read_summary(tmp_path)


def test_a_version_1_run_rescores_and_rebuilds_its_page(tmp_path):
    from toxcmp.report.html import rebuild
    from toxcmp.run.config import CompareConfig
    from toxcmp.run.orchestrate import run_compare
    from toxcmp.run.rescore import rescore

    path = tmp_path / "rows.csv"
    pl.DataFrame({"conv_id": [f"id{i:02d}" for i in range(len(TEXTS))], "user_input": TEXTS,
                  "toxicity": TRUTH}).write_csv(path)
    run = run_compare(CompareConfig(backends="rule,quirky", dataset=str(path), output_dir=tmp_path / "out"))
    for name in (RESULTS_FILE, PAIRS_FILE):  # strip the version: the files as version 1 wrote them
        file = run.run_dir / name
        meta = pl.read_parquet_metadata(file)
        pl.read_parquet(file).write_parquet(file, metadata={k: v for k, v in meta.items()
                                                            if k in ("toxcmp", "toxcmp_summary")})
    old = json.loads((run.run_dir / SUMMARY_FILE).read_text())
    (run.run_dir / SUMMARY_FILE).write_text(json.dumps({k: v for k, v in old.items()
                                                        if k not in ("schema_version", "headline")}))
    assert read_summary(run.run_dir)["headline"]["arm"] == "quirky"
    assert "quirky" in rebuild(run.run_dir).read_text()
    result = rescore([run.run_dir], output_dir=tmp_path / "rescored")
    assert result.source_schema_version == 1 and result.summary["metadata"]["rescore_source_schema_version"] == 1
    assert result.summary["schema_version"] == 2 and result.summary["binary_agreement"]["successes"] == 9  # 12 - 3 quirks
    assert json.loads((result.run_dir / SUMMARY_FILE).read_text())["schema_version"] == 2
    assert pl.read_parquet_metadata(result.run_dir / RESULTS_FILE)["toxcmp_schema_version"] == "2"
    assert (result.run_dir / "report.html").is_file()
