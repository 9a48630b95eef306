"""Issue 23 on screen: the console report when labels are missing, and one arm's evaluation table.

The runs are real `compare` runs over recorded arms (no model); expected strings are built from the dataset's and
the study file's own columns and scipy's Wilson interval, never from toxcmp's summary.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console
from scipy.stats import binomtest

from toxcmp.config import configs_dir
from toxcmp.report.console import render_report

N50 = configs_dir() / "recordings" / "backend_comparison_gpt-oss-safeguard-20b_toxic_chat_claude_1_n50.parquet"
SAMPLE = configs_dir() / "samples" / "toxicchat0124_test_sample.csv"
PROSE = "Sure! Here is a short poem about that."


def _invoke(*args: str):
    from typer.testing import CliRunner

    from toxcmp.cli.app import app

    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def prose_recording(tmp_path_factory) -> Path:
    """Both arms of the shipped 24-row sample (8 toxic) answer prose: no label from either."""
    out = tmp_path_factory.mktemp("prose")
    sample = pl.read_csv(SAMPLE)
    path = out / "backend_comparison_prose.parquet"
    pl.DataFrame({"conv_id": sample["conv_id"], "text": sample["user_input"], "ground_truth": sample["toxicity"],
                  "api_response": [PROSE] * 24, "local_response": [PROSE] * 24,
                  "api_reasoning": [""] * 24, "local_reasoning": [""] * 24}).write_parquet(path)
    return path


@pytest.fixture(scope="module")
def prose_report(prose_recording, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("prose-run")
    both = f"recorded[path={prose_recording};side=api;label=api],recorded[path={prose_recording};side=local;label=local]"
    result = _invoke("compare", "--backends", both, "--dataset", str(SAMPLE), "--policy", "toxic_simple",
                     "--model", "smollm2-135m", "--output-dir", str(out), "--cache-dir", str(out / "c"))
    assert result.exit_code == 3, result.output  # inconclusive
    return result.stdout


@pytest.fixture(scope="module")
def n50_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("n50")
    both = f"recorded[path={N50};side=api;label=provider],recorded[path={N50};side=local;label=local-gpu]"
    result = _invoke("compare", "--backends", both, "--dataset", str(N50), "--policy", "toxic_chat_claude_1",
                     "--model", "gpt-oss-safeguard-20b", "--output-dir", str(out), "--json", "--cache-dir", str(out / "c"))
    assert result.exit_code == 0, result.output
    return Path(json.loads(result.stdout)["run_dir"])


def _line(report: str, name: str, exact: bool = False) -> str:
    """The first table line whose first cell is (or starts with) `name`, with the lines its cells wrap onto."""
    lines = report.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in re.split(r"[│┃]", line)]
        if len(cells) > 1 and (cells[1] == name if exact else cells[1].startswith(name)):
            block = [line]
            for more in lines[i + 1:]:
                nxt = [c.strip() for c in re.split(r"[│┃]", more)]
                if len(nxt) > 1 and nxt[1] == "":
                    block.append(more)
                else:
                    break
            return " ".join(" ".join(re.split(r"\s+", b)) for b in block)
    raise AssertionError(f"no row {name!r} in:\n{report}")


def _wilson_text(k: int, n: int) -> str:
    ci = binomtest(k, n).proportion_ci(method="wilson")
    return f"{k / n:.1%} [{100 * ci.low:.1f}–{100 * ci.high:.1f}]"


def test_no_labels_from_either_arm_the_agreement_says_what_it_counts(prose_report):
    # the issue: "binary agreement 100.0 %" read as success while 0 of 24 rows were labelled
    verdicts = [line for line in prose_report.splitlines() if re.match(r"(PASS|FAIL|INCONCLUSIVE|INCOMPLETE): ", line)]
    assert len(verdicts) == 2 and all(v.startswith("INCONCLUSIVE") for v in verdicts)  # first and last
    assert "PASS" not in prose_report
    line = _line(prose_report, "binary agreement", exact=True)
    assert _wilson_text(24, 24) in line and "agreement on giving no label" in line


def test_no_labels_from_a_side_its_recall_is_blank_with_the_reason(prose_report):
    # the issue: "recall 0.0 % [0.0–32.4]" (0 of the 8 positives) beside TP/FP/FN/TN 0/0/0/0
    assert _wilson_text(0, 8) == "0.0% [0.0–32.4]"
    for name in ("accuracy", "precision", "recall", "F1"):
        line = _line(prose_report, name)
        assert "0.0%" not in line and "0.000" not in line, line
        assert line.count("no labels from this side") == 2, line  # both arms, each with its reason
    assert "0 / 0 / 0 / 0" in _line(prose_report, "TP / FP / FN / TN")


def _render(summary: dict) -> str:
    buffer = io.StringIO()
    render_report(summary, Console(file=buffer, width=140))
    return buffer.getvalue()


def test_no_human_labels_blank_accuracy_and_mcnemar_and_the_verdict_first(n50_dir):
    from toxcmp.analysis.scoring import summarize

    rows = [dict(r, toxicity=None) for r in pl.read_parquet(n50_dir / "pairs.parquet").iter_rows(named=True)]
    report = _render(summarize(rows, ["provider", "local-gpu"], kappa_resamples=100))
    first = report.splitlines()[0]
    assert first.startswith("INCONCLUSIVE: no labelled rows: agreement between arms only; accuracy, precision, "
                            "recall, F1 undefined")
    assert _wilson_text(48, 50) in _line(report, "binary agreement", exact=True)  # the arms' own agreement, kept
    for name in ("accuracy", "precision", "recall", "F1"):
        assert _line(report, name).count("— (no labelled rows)") == 2
    assert "— (no labelled rows)" in _line(report, "McNemar")


def test_one_arm_evaluation_table(n50_dir):
    from toxcmp.analysis.scoring import evaluate

    study = pl.read_parquet(N50)
    rows = pl.read_parquet(n50_dir / "results.parquet").filter(pl.col("arm") == "provider").to_dicts()
    summary = evaluate(rows, "provider", resamples=500)
    report = _render(summary)
    lines = report.splitlines()
    assert lines[0].startswith("FAIL: accuracy against the human labels 76.0%") and lines[-1].startswith("FAIL")
    assert "provider against the human labels (95 % CI)" in report
    correct = int((study["api_binary_label"].cast(pl.Int64) == study["ground_truth"]).sum())
    tp = int((study["api_binary_label"] & (study["ground_truth"] == 1)).sum())
    positives, said = int(study["ground_truth"].sum()), int(study["api_binary_label"].sum())
    assert _wilson_text(correct, 50) in _line(report, "accuracy")
    assert _wilson_text(tp, said) in _line(report, "precision")
    assert _wilson_text(tp, positives) in _line(report, "recall")
    assert _wilson_text(50, 50) in _line(report, "parse rate") and _wilson_text(0, 50) in _line(report, "refusal rate")
    f1 = 2 * tp / (said + positives)  # 2·TP / (2·TP + FP + FN): TP + FP = said, TP + FN = positives
    ci = summary["backends"]["a"]["f1_ci"]
    assert f"{f1:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]" in _line(report, "F1")
    assert "agreement between backends" not in report and "Cohen" not in report  # one arm: nothing to agree with
