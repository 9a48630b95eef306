"""One arm is an evaluation (issue 23): `toxcmp compare --backends ARM` scores that arm against the human labels
instead of refusing — summary, exit code, console, report.html and `toxcmp view`.

Real runs of the `compare` command over the recorded n50 study file (no model) and the rule double. Expected
values come from the study file's own columns (polars), hand counts and scipy's Wilson interval, never from
toxcmp's output."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest
from scipy.stats import binomtest

from toxcmp.config import configs_dir

from tests.run.test_compare import TEXTS, TRUTH, dataset, plugin_backends  # noqa: F401 - fixtures

N50 = configs_dir() / "recordings" / "backend_comparison_gpt-oss-safeguard-20b_toxic_chat_claude_1_n50.parquet"
ARM = f"recorded[path={N50};side=api;label=provider]"


def _compare(out: Path, backends: str, *extra: str, dataset: Path = N50):
    from typer.testing import CliRunner

    from toxcmp.cli.app import app

    return CliRunner().invoke(app, ["compare", "--backends", backends, "--dataset", str(dataset), "--policy",
                                    "toxic_chat_claude_1", "--model", "gpt-oss-safeguard-20b", "--output-dir",
                                    str(out), "--cache-dir", str(out / "cache"), *extra])


def _wilson(k: int, n: int) -> tuple[float, float]:
    ci = binomtest(k, n).proportion_ci(method="wilson")
    return ci.low, ci.high


def _study_counts() -> dict[str, tuple[int, int]]:
    """The provider's (api side's) counts, from the study file's own columns."""
    study = pl.read_parquet(N50)
    parsed, said = study["api_parsed_successfully"], study["api_binary_label"]
    truth = study["ground_truth"] == 1
    right = int((parsed & (said.cast(pl.Int64) == study["ground_truth"])).sum())
    tp = int((parsed & said & truth).sum())
    fp = int((parsed & said & ~truth).sum())
    return {"accuracy": (right, study.height), "precision": (tp, tp + fp), "recall": (tp, int(truth.sum())),
            "parse_rate": (int(parsed.sum()), study.height)}


@pytest.fixture(scope="module")
def one_arm(tmp_path_factory) -> tuple[object, dict]:
    out = tmp_path_factory.mktemp("one-arm")
    result = _compare(out, ARM, "--json")
    return result, json.loads(result.stdout)


def test_hand_count_of_the_provider_in_the_study_file():
    """What the tests below rely on: 38 of 50 right (13 of 25 toxic rows caught, no false alarm, all parsed)."""
    assert _study_counts() == {"accuracy": (38, 50), "precision": (13, 13), "recall": (13, 25),
                               "parse_rate": (50, 50)}


def test_one_recorded_arm_is_an_evaluation_against_the_human_labels(one_arm):
    result, summary = one_arm
    assert summary["kind"] == "evaluation" and summary["reference"] == "human labels"
    assert summary["n"] == summary["n_labelled"] == 50 and summary["comparisons"] == {}
    side = summary["backends"]["a"]
    assert side["label"] == "provider"
    for name, (k, n) in _study_counts().items():
        assert (side[name]["successes"], side[name]["n"]) == (k, n), name
        assert (side[name]["low"], side[name]["high"]) == pytest.approx(_wilson(k, n), abs=1e-6), name
    tp, fp, fn = 13, 0, 25 - 13
    assert side["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-6)
    assert side["f1_ci"]["low"] < side["f1"] < side["f1_ci"]["high"]
    for key in ("noise_floor", "response_shape", "prompt_tokens", "conformance"):
        assert "provider" in summary[key] or summary[key].get("reference"), key
    assert summary["response_shape"]["provider"]["answered"] == 50
    # the verdict is the evaluation's: 38/50 = 76 % is below the default 95 % threshold → fail, exit 1
    assert summary["verdict"] == "fail" and result.exit_code == 1
    assert summary["verdict_reason"].startswith("accuracy against the human labels 76.0% < threshold 95%")


def test_one_arm_run_dir_holds_its_rows_and_no_pairs(one_arm):
    _, summary = one_arm
    run_dir = Path(summary["run_dir"])
    tidy = pl.read_parquet(run_dir / "results.parquet")
    assert tidy.height == 50 and tidy["arm"].unique().to_list() == ["provider"]
    assert pl.read_parquet(run_dir / "pairs.parquet").height == 0
    study = pl.read_parquet(N50).select(pl.col("conv_id").alias("example_id"), pl.col("ground_truth"))
    joined = tidy.join(study, on="example_id")
    assert joined.height == 50 and int((joined["binary"].cast(pl.Int64) == joined["ground_truth"]).sum()) == 38


def test_one_arm_passes_at_a_threshold_it_meets(tmp_path):
    result = _compare(tmp_path, ARM, "--json", "--threshold", "0.75")
    summary = json.loads(result.stdout)
    assert result.exit_code == 0 and summary["verdict"] == "pass"  # 38/50 = 76 % ≥ 75 %


def test_one_arm_with_repeats_measures_its_noise_floor(tmp_path):
    """A recording replays the same answer each time: agreement with itself 50 of 50."""
    result = _compare(tmp_path, ARM, "--json", "--repeats", "2")
    summary = json.loads(result.stdout)
    floor = summary["noise_floor"]["provider"]
    assert (floor["successes"], floor["n"]) == (50, 50)
    assert summary["backends"]["a"]["accuracy"]["successes"] == 38  # scored on the first answers only


def test_one_rule_arm_on_the_console(cli, dataset, tmp_path):
    """The rule double says 1 exactly on the three texts with "idiot", which are the three toxic rows: 12 of 12."""
    assert [int("idiot" in t) for t in TEXTS] == TRUTH
    result = cli("compare", "--backends", "rule", "--dataset", str(dataset), "--output-dir", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    low, high = _wilson(12, 12)
    line = next(x for x in result.output.splitlines() if x.strip("│ ").startswith("accuracy"))
    assert f"100.0% [{100 * low:.1f}–{100 * high:.1f}]" in line and line.rstrip(" │").endswith("12")
    assert "PASS: accuracy against the human labels 100.0% ≥ threshold 95%" in result.output
    assert "binary agreement" not in result.output and "Cohen" not in result.output


def test_specs_take_one_arm_and_refuse_none():
    from toxcmp.errors import UsageError
    from toxcmp.run.specs import parse_backend_specs

    assert [s.label for s in parse_backend_specs(ARM)] == ["provider"]
    with pytest.raises(UsageError, match="at least one arm"):
        parse_backend_specs(" , ")


class _Cells(HTMLParser):
    """The text of every table cell of a page, row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def _cells(page: str) -> dict[str, str]:
    parser = _Cells()
    parser.feed(page)
    return {row[0]: row[1] for row in parser.rows if len(row) >= 2}


def _share(k: int, n: int) -> str:
    low, high = _wilson(k, n)
    return f"{100 * k / n:.1f}% [{100 * low:.1f}–{100 * high:.1f}] (n = {n})"


def test_one_arm_report_is_an_evaluation_page(one_arm):
    _, summary = one_arm
    page = (Path(summary["run_dir"]) / "report.html").read_text(encoding="utf-8")
    cells = _cells(page)
    for name, (k, n) in _study_counts().items():
        assert cells[name.replace("_", " ")] == _share(k, n), name
    assert cells["TP / FP / FN / TN"] == "13 / 0 / 12 / 25"
    assert cells["human-labelled rows"] == "50/50"
    assert re.match(r"0\.684 \[0\.\d{3}, 0\.\d{3}\]$", cells["F1 (percentile bootstrap 95% CI)"])  # 26/38 = 0.684
    assert "<h2>Against the human labels</h2>" in page and "agreement between the sides" not in page
    # the answers by human label: 25 non-toxic all said 0; of 25 toxic, 13 said 1 and 12 said 0 (hand count above)
    rows = {row[0]: row[1:] for row in _rows(page)}
    assert rows["human ↓ / provider →"] == ["0", "1"] and rows["0"] == ["25", "0"] and rows["1"] == ["12", "13"]
    assert 'id="verdict"><b>FAIL</b>: accuracy against the human labels 76.0%' in page


def _rows(page: str) -> list[list[str]]:
    parser = _Cells()
    parser.feed(page)
    return parser.rows


def test_view_rebuilds_a_one_arm_report(one_arm, tmp_path):
    import shutil

    from toxcmp.report.html import rebuild

    _, summary = one_arm
    copy = tmp_path / "run"
    shutil.copytree(summary["run_dir"], copy)
    (copy / "report.html").unlink()
    page = rebuild(copy).read_text(encoding="utf-8")
    assert _cells(page)["accuracy"] == _share(38, 50)


def test_one_api_arm_against_a_server_that_always_says_0(tmp_path):
    """`--backends api` alone: a server that answers 0 to everything is right on exactly the non-toxic rows."""
    from toxcmp.testing.fake_server import FakeChatServer

    study = pl.read_parquet(N50)
    negatives, positives = int((study["ground_truth"] == 0).sum()), int((study["ground_truth"] == 1).sum())
    with FakeChatServer(models=["openai/gpt-oss-safeguard-20b"]) as server:
        result = _compare(tmp_path, f"api[base_url={server.base_url}]", "--json", "--no-margin")
        asked = len(server.requests)
    summary = json.loads(result.stdout)
    side = summary["backends"]["a"]
    assert asked >= study.height and summary["kind"] == "evaluation" and result.exit_code == 1
    assert (side["accuracy"]["successes"], side["accuracy"]["n"]) == (negatives, 50) == (25, 50)
    assert (side["recall"]["successes"], side["recall"]["n"]) == (0, positives)
    assert side["precision"]["value"] is None and side["undefined"]["precision"]  # it never said 1: blank, why
    assert side["f1"] == 0.0  # positives exist and none was caught


def test_rescore_of_a_one_arm_run_is_the_same_evaluation(one_arm, cli):
    _, summary = one_arm
    again = cli("rescore", summary["run_dir"], "--no-write", "--json")
    assert again.exit_code == one_arm[0].exit_code, again.output
    rescored = json.loads(again.stdout)
    assert rescored["kind"] == "evaluation" and rescored["verdict"] == summary["verdict"]
    assert rescored["backends"] == summary["backends"]
