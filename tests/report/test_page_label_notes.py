"""report.html says what the console says when labels are missing (issue 23): the summary's `label_notes` before
any number, undefined statistics as `—` with their reason (never "p = None" nor a bare 0 %), F1 with its
bootstrap interval, and the agreement of two arms that never both gave a label called what it is.

Real `compare` runs over recorded arms (no model); expected strings from the sample's and the study file's own
columns, scipy's Wilson interval and exact binomial test, never from toxcmp's summary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
from scipy.stats import binomtest

from toxcmp.analysis.scoring import summarize
from toxcmp.analysis.verdict import NO_BOTH_LABELLED, NO_LABELLED_ROWS
from toxcmp.config import configs_dir
from toxcmp.report.html import build_html

from tests.run.test_one_arm import _Cells

N50 = configs_dir() / "recordings" / "backend_comparison_gpt-oss-safeguard-20b_toxic_chat_claude_1_n50.parquet"
SAMPLE = configs_dir() / "samples" / "toxicchat0124_test_sample.csv"
PROSE = "Sure! Here is a short poem about that."


def _compare(out: Path, backends: str, dataset: Path, policy: str, model: str) -> Path:
    from typer.testing import CliRunner

    from toxcmp.cli.app import app

    result = CliRunner().invoke(app, ["compare", "--backends", backends, "--dataset", str(dataset), "--policy", policy,
                                      "--model", model, "--output-dir", str(out), "--json", "--cache-dir", str(out / "c")])
    assert result.exit_code in (0, 3), result.output
    return Path(json.loads(result.stdout)["run_dir"])


def _table(page: str) -> dict[str, list[str]]:
    """Each table row's first cell → its other cells (the first row of that name)."""
    parser = _Cells()
    parser.feed(page)
    out: dict[str, list[str]] = {}
    for row in parser.rows:
        if row:
            out.setdefault(row[0], row[1:])
    return out


def _wilson_text(k: int, n: int) -> str:
    ci = binomtest(k, n).proportion_ci(method="wilson")
    return f"{k / n:.1%} [{100 * ci.low:.1f}–{100 * ci.high:.1f}] (n = {n})"


@pytest.fixture(scope="module")
def prose_page(tmp_path_factory) -> str:
    """Both arms of the shipped 24-row sample (8 toxic) answer prose: no label from either."""
    out = tmp_path_factory.mktemp("prose")
    sample = pl.read_csv(SAMPLE)
    path = out / "backend_comparison_prose.parquet"
    pl.DataFrame({"conv_id": sample["conv_id"], "text": sample["user_input"], "ground_truth": sample["toxicity"],
                  "api_response": [PROSE] * 24, "local_response": [PROSE] * 24,
                  "api_reasoning": [""] * 24, "local_reasoning": [""] * 24}).write_parquet(path)
    both = f"recorded[path={path};side=api;label=api],recorded[path={path};side=local;label=local]"
    run_dir = _compare(out / "run", both, SAMPLE, "toxic_simple", "smollm2-135m")
    return (run_dir / "report.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def n50_run(tmp_path_factory) -> Path:
    both = f"recorded[path={N50};side=api;label=provider],recorded[path={N50};side=local;label=local-gpu]"
    return _compare(tmp_path_factory.mktemp("n50"), both, N50, "toxic_chat_claude_1", "gpt-oss-safeguard-20b")


def test_no_row_labelled_by_both_the_page_says_so_before_the_numbers(prose_page):
    notes = re.findall(r'<p class="note label-note">(.*?)</p>', prose_page)
    assert notes == [NO_BOTH_LABELLED]
    assert prose_page.index(NO_BOTH_LABELLED) < prose_page.index("<th>agreement between the sides</th>")
    cells = _table(prose_page)
    assert cells["binary agreement"] == [f"{_wilson_text(24, 24)} — agreement on giving no label"]
    assert cells["binary agreement, both parsed"] == ["— (no row with a label on both sides)"]


def test_no_labels_from_a_side_its_statistics_are_blank_with_the_reason(prose_page):
    assert sum(pl.read_csv(SAMPLE)["toxicity"]) == 8
    cells = _table(prose_page)
    reason = "no labels from this side: 0 of 24 answers parsed"
    for name in ("accuracy", "precision", "recall", "F1 (bootstrap 95% CI)"):
        assert cells[name] == [f"— ({reason})"] * 2, name
    assert cells["human-labelled rows"] == ["24/24", "24/24"]


def test_without_human_labels_mcnemar_is_blank_with_the_reason_not_p_none(n50_run):
    rows = [dict(r, toxicity=None) for r in pl.read_parquet(n50_run / "pairs.parquet").iter_rows(named=True)]
    summary = summarize(rows, ["provider", "local-gpu"], kappa_resamples=100)
    page = build_html(rows, summary)
    cells = _table(page)
    assert "p = None" not in page
    assert cells["McNemar exact on correctness"] == ["— (no labelled rows)"]
    assert NO_LABELLED_ROWS in re.findall(r'<p class="note label-note">(.*?)</p>', page)
    for name in ("accuracy", "precision", "recall", "F1 (bootstrap 95% CI)"):
        assert cells[name] == ["— (no labelled rows)"] * 2, name


def test_with_labels_f1_has_its_interval_and_mcnemar_its_counts(n50_run):
    study = pl.read_parquet(N50)
    right = {side: (study[f"{side}_parsed_successfully"]
                    & (study[f"{side}_binary_label"].cast(pl.Int64) == study["ground_truth"])) for side in ("api", "local")}
    only_a, only_b = int((right["api"] & ~right["local"]).sum()), int((~right["api"] & right["local"]).sum())
    p = binomtest(only_a, only_a + only_b).pvalue  # exact McNemar: the discordant pairs, two-sided
    page = (n50_run / "report.html").read_text(encoding="utf-8")
    cells = _table(page)
    assert cells["McNemar exact on correctness"] == [
        f"p = {p:.3g}  (only A right {only_a}, only B right {only_b}) (n = 50)"]
    said, truth = study["api_binary_label"], study["ground_truth"] == 1
    tp, fp = int((said & truth).sum()), int((said & ~truth).sum())
    f1 = 2 * tp / (2 * tp + fp + (int(truth.sum()) - tp))
    match = re.fullmatch(r"(\d\.\d{3}) \[(\d\.\d{3}), (\d\.\d{3})\]", cells["F1 (bootstrap 95% CI)"][0])
    assert match and float(match.group(1)) == pytest.approx(f1, abs=5e-4)
    assert float(match.group(2)) < f1 < float(match.group(3))
    assert not re.findall(r'class="note label-note"', page)  # labels on both sides and in the data: no caveat
