"""`compare` orchestration: outputs, resume, interrupts, failures and bad input (rule-based backend doubles),
and the real thing: SmolLM2 through `local` against a real `transformers serve` (slow)."""

from __future__ import annotations

import json
from importlib.metadata import EntryPoint
from pathlib import Path

import polars as pl
import pytest

import toxcmp.backends as backends
from toxcmp.run.config import CompareConfig
from toxcmp.run.orchestrate import run_compare
from toxcmp.results.schema import PAIR_SCHEMA, TIDY_SCHEMA

from tests.helpers import doubles
from tests.conftest import TOXICCHAT_CSV, require_shared

TEXTS = ["hello there", "you idiot", "please refuse this", "ramble on", "flip me", "nice day", "what an idiot",
         "how do I bake bread", "tell me a joke", "good morning", "another idiot remark", "weather today"]
TRUTH = [0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0]


@pytest.fixture(autouse=True)
def plugin_backends(monkeypatch):
    eps = [EntryPoint(name="rule", value="tests.helpers.doubles:RuleBackend", group=backends.ENTRY_POINT_GROUP),
           EntryPoint(name="quirky", value="tests.helpers.doubles:QuirkyBackend", group=backends.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(backends, "entry_points", lambda group: eps if group == backends.ENTRY_POINT_GROUP else [])
    doubles.reset()
    yield
    doubles.reset()


@pytest.fixture
def dataset(tmp_path) -> Path:
    path = tmp_path / "rows.csv"
    pl.DataFrame({"conv_id": [f"id{i:02d}" for i in range(len(TEXTS))], "user_input": TEXTS, "toxicity": TRUTH,
                  "jailbreaking": [0] * len(TEXTS)}).write_csv(path)
    return path


def _args(dataset, out, *extra):
    return ["compare", "--backends", "rule,quirky", "--dataset", str(dataset), "--output-dir", str(out),
            "--chunk-size", "4", *extra]


def test_compare_writes_rows_summary_and_provenance(cli, dataset, tmp_path):
    out = tmp_path / "out"
    result = cli(*_args(dataset, out, "--json"))
    summary = json.loads(result.stdout)
    assert result.exit_code == 1  # 9/12 agree: below the 0.95 threshold
    assert summary["n"] == 12 and summary["binary_agreement"]["successes"] == 9
    assert summary["causes"] == {"error": 0, "refusal": 1, "parse": 1, "label_flip": 1, "fine_grain_only": 0}
    for key in ("fine_grain_agreement", "cohen_kappa", "passed", "mcnemar", "content_similarity_mean"):
        assert key in summary
    for key in ("parse_rate", "refusal_rate", "accuracy", "precision", "recall", "f1"):
        assert key in summary["backends"]["a"] and key in summary["backends"]["b"]
    assert summary["backends"]["a"]["accuracy"]["value"] == pytest.approx(1.0)
    assert summary["backends"]["b"]["accuracy"]["successes"] == 9
    run_dir = Path(summary["run_dir"])
    assert run_dir.parent == out
    frame = pl.read_parquet(run_dir / "pairs.parquet")
    assert frame.columns == list(PAIR_SCHEMA) and frame.height == 12 and frame["example_id"].n_unique() == 12
    tidy = pl.read_parquet(run_dir / "results.parquet")  # one row per (example, arm)
    assert tidy.columns == list(TIDY_SCHEMA) and tidy.height == 24 and set(tidy["arm"]) == {"rule", "quirky"}
    assert frame.filter(pl.col("cause") == "refusal")["example_id"].to_list() == ["id02"]
    assert (frame["a_prompt_hash"] == frame["b_prompt_hash"]).all()
    meta = json.loads(pl.read_parquet_metadata(run_dir / "results.parquet")["toxcmp"])
    for key in ("toxcmp_version", "git_commit", "backends", "model", "policy", "generation", "sample_seed", "dataset",
                "libraries", "started_at", "finished_at", "command", "arms", "invocations"):
        assert key in meta
    assert "seed" not in meta  # one sampling seed (sample_seed), one generation seed (generation.seed)
    assert meta["command"].startswith("toxcmp compare ") and "--backends rule,quirky --output-dir" in meta["command"]
    assert summary["status"] == "complete"
    # each row says which backend is which, and keeps the dataset's human_annotation
    assert frame["a_backend"].unique().to_list() == ["rule"] and frame["b_backend"].unique().to_list() == ["quirky"]
    assert "human_annotation" in frame.columns
    assert frame["reasoning_similarity"].to_list() == [1.0] * 12  # both doubles write the same reasoning
    assert meta["dataset"]["content_sha256"] and meta["policy"]["sha256"] and meta["status"] == "complete"
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["binary_agreement"] == summary["binary_agreement"]


def test_similarity_of_two_missing_reasonings_is_undefined():
    from toxcmp.domain.policies import load_policy
    from toxcmp.analysis.scoring import derive

    row = {"example_id": "x", "text": "t", "toxicity": 0, "weight": 1.0}
    for p in ("a", "b"):
        row |= {f"{p}_raw": "0", f"{p}_content": "0", f"{p}_reasoning": "", f"{p}_error": None}
    out = derive(row, load_policy("toxic_simple"), False)
    assert out["reasoning_similarity"] is None and out["content_similarity"] == 1.0


def test_rerun_resumes_from_cache_with_zero_calls_and_no_duplicate_rows(cli, dataset, tmp_path):
    out = tmp_path / "out"
    first = json.loads(cli(*_args(dataset, out, "--json")).stdout)
    calls = (doubles.RuleBackend.calls, doubles.QuirkyBackend.calls)
    assert calls == (12, 12)
    second = json.loads(cli(*_args(dataset, out, "--json")).stdout)
    assert (doubles.RuleBackend.calls, doubles.QuirkyBackend.calls) == calls  # zero backend calls
    assert second["run_dir"] == first["run_dir"]
    frame = pl.read_parquet(Path(second["run_dir"]) / "pairs.parquet")
    assert frame.height == 12 and frame["example_id"].n_unique() == 12 and frame["a_cached"].all()
    assert second["metadata"]["throughput"]["rule"]["calls"] == 0
    assert second["binary_agreement"] == first["binary_agreement"]
    # the resumed run keeps its history: when it first started and what each invocation did
    runs = second["metadata"]["invocations"]
    assert len(runs) == 2 and second["metadata"]["first_started_at"] == first["metadata"]["started_at"]
    assert [r["calls"]["rule"] for r in runs] == [12, 0]


def test_ctrl_c_keeps_finished_rows_and_the_rerun_completes(cli, dataset, tmp_path):
    out = tmp_path / "out"
    doubles.QuirkyBackend.interrupt_at = 7  # second chunk, third example
    result = cli(*_args(dataset, out))
    assert result.exit_code == 130 and "rerun the same command to resume" in result.output
    (run_dir,) = out.iterdir()
    partial = pl.read_parquet(run_dir / "pairs.parquet")
    # the first chunk, plus the two rows of the interrupted chunk that both sides had answered: a row is kept
    # the moment it is complete, not when its chunk is
    assert partial.height == 6 and partial["example_id"].to_list() == [f"id{i:02d}" for i in range(6)]
    assert json.loads((run_dir / "summary.json").read_text())["metadata"]["status"] == "interrupted"
    # rule runs at its own pace: at least the six rows that could complete, at most all twelve
    asked = doubles.RuleBackend.calls
    assert 6 <= asked <= 12
    doubles.reset()
    again = cli(*_args(dataset, out, "--json"))
    assert again.exit_code == 1  # complete now (fails the threshold, as planted)
    assert doubles.RuleBackend.calls == 12 - asked and doubles.QuirkyBackend.calls == 12 - 6  # only what is missing
    assert pl.read_parquet(run_dir / "pairs.parquet").height == 12


def test_backend_failing_mid_run_keeps_the_rows_so_far(cli, dataset, tmp_path):
    out = tmp_path / "out"
    doubles.RuleBackend.fail_at = 9  # third chunk
    result = cli(*_args(dataset, out))
    assert result.exit_code == 4 and "server went away" in result.output and "Traceback" not in result.output
    (run_dir,) = out.iterdir()
    assert pl.read_parquet(run_dir / "pairs.parquet").height == 8
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["metadata"]["status"] == "failed" and summary["passed"] is False


def test_unwritable_output_dir_fails_before_any_backend_call(cli, dataset, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")  # works even as root, where permission bits do not stop writes
    result = cli(*_args(dataset, blocker))
    assert result.exit_code == 2 and "not writable" in result.output and "--output-dir" in result.output
    assert doubles.RuleBackend.calls == 0


@pytest.mark.parametrize("extra, message", [
    (["--sample-size", "0"], "must be positive"),
    (["--sample-size", "-2"], "must be positive"),
    (["--backends", ","], "at least one arm"),
    (["--backends", "rule,rule"], "two arms are written 'rule'"),
    (["--backends", "rule,nosuch"], "valid"),
    (["--backends", "rule[colour=red],quirky"], "bad option"),
    (["--run-id", "../escape"], "invalid run id"),
    (["--threshold", "2"], "--threshold must be in"),
    (["--unparsed-as", "maybe"], "--unparsed-as must be one of"),
])
def test_bad_input_is_one_line_with_exit_2(cli, dataset, tmp_path, extra, message):
    args = _args(dataset, tmp_path / "out")
    if "--backends" in extra:
        args[2] = extra[1]
        extra = extra[2:]
    result = cli(*args, *extra)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert doubles.RuleBackend.calls == 0


def test_sample_size_larger_than_dataset_is_clamped_and_said(cli, dataset, tmp_path):
    result = cli(*_args(dataset, tmp_path / "out", "--sample-size", "500"))
    assert "larger than the dataset (12 rows); using all 12" in result.output
    assert doubles.RuleBackend.calls == 12


def test_non_terminal_output_has_no_redraws(cli, dataset, tmp_path):
    result = cli(*_args(dataset, tmp_path / "out"))
    assert "\r" not in result.output and "\x1b[" not in result.output
    progress = [line for line in result.output.splitlines() if line.startswith("[")]
    assert 1 <= len(progress) <= 12 and progress[-1].startswith("[12/12] agreement 9/12")
    quiet = cli(*_args(dataset, tmp_path / "out", "--quiet"))
    assert not [line for line in quiet.output.splitlines() if line.startswith("[")]
    assert "why they disagree" in quiet.output


def test_stratified_run_records_weights(dataset, tmp_path):
    cfg = CompareConfig(backends="rule,quirky", dataset=str(dataset), output_dir=tmp_path, sample_size=6,
                        stratify=True, seed=1)
    result = run_compare(cfg)
    frame = pl.read_parquet(result.run_dir / "pairs.parquet")
    assert frame.height == 6 and int(frame["toxicity"].sum()) == 3
    assert frame.filter(pl.col("toxicity") == 1)["weight"].to_list() == pytest.approx([(3 / 12) / 0.5] * 3)
    assert result.summary["metadata"]["dataset"]["strategy"] == "stratified"


@pytest.mark.slow
def test_real_compare_api_server_local_vs_local_text_identity_is_inconclusive_and_resumes(cli, tmp_path):
    """SmolLM2 greedy through a real `transformers serve` and through local `generate`: identical text, but
    SmolLM2 answers the user instead of classifying, so no labels: the verdict must be inconclusive, never PASS."""
    require_shared(TOXICCHAT_CSV)
    from toxcmp.backends.local_model import LocalModelCache

    out = tmp_path / "out"
    args = ["compare", "--model", "smollm2-135m", "--api-server", "local", "--dataset", str(TOXICCHAT_CSV),
            "--sample-size", "8", "--seed", "5", "--max-new-tokens", "24", "--output-dir", str(out), "--json"]
    first = cli(*args)
    summary = json.loads(first.stdout)
    assert first.exit_code == 3, first.output
    assert summary["verdict"] == "inconclusive" and summary["passed"] is False
    assert "PASS" not in first.output and "api 0/8" in summary["verdict_reason"]
    assert summary["n_both_labelled"] == 0 and summary["backends"]["a"]["parse_rate"]["successes"] == 0
    assert summary["content_identical"]["value"] == 1.0 and summary["content_identical"]["n"] == 8
    assert summary["backends"]["a"]["served_by"][0].startswith("http://127.0.0.1:")  # loopback only
    frame = pl.read_parquet(Path(summary["run_dir"]) / "pairs.parquet")
    assert (frame["a_content"] == frame["b_content"]).all() and (frame["a_prompt_hash"] == frame["b_prompt_hash"]).all()
    loads = LocalModelCache.loads
    second = json.loads(cli(*args).stdout)
    assert second["metadata"]["throughput"]["api"]["calls"] == 0 and second["metadata"]["throughput"]["local"]["calls"] == 0
    assert LocalModelCache.loads == loads
    assert pl.read_parquet(Path(second["run_dir"]) / "pairs.parquet").height == 8


def test_live_view_in_a_terminal_shows_progress_rows_and_agreement(dataset, tmp_path):
    import io

    from rich.console import Console

    from toxcmp.report.live import LiveObserver

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    cfg = CompareConfig(backends="rule,quirky", dataset=str(dataset), output_dir=tmp_path, chunk_size=4)
    result = run_compare(cfg, LiveObserver(console))
    text = buffer.getvalue()
    assert result.status == "complete"
    for expected in ("compare", "12/12", "ETA", "latest examples", "A rule", "B quirky", "agreement 9/12 (75.0%)",
                     "rule:", "ex/s"):
        assert expected in text, expected


def test_an_unexpected_backend_exception_still_keeps_the_rows(cli, dataset, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = doubles.QuirkyBackend.generate

    def crashing(self, requests, on_response=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ValueError("tokenizer exploded\nsecond line")
        return original(self, requests, on_response)

    monkeypatch.setattr(doubles.QuirkyBackend, "generate", crashing)
    result = cli(*_args(dataset, tmp_path / "out"))
    assert result.exit_code == 4 and "ValueError: tokenizer exploded" in result.output
    (run_dir,) = (tmp_path / "out").iterdir()
    assert pl.read_parquet(run_dir / "pairs.parquet").height == 4
    assert json.loads((run_dir / "summary.json").read_text())["metadata"]["status"] == "failed"


def test_a_three_arm_run_returns_every_comparison_and_names_its_headline(dataset, tmp_path):
    cfg = CompareConfig(backends="rule,quirky,rule[label=rule2]", dataset=str(dataset), output_dir=tmp_path)
    result = run_compare(cfg)
    assert list(result.comparisons) == ["quirky", "rule2"]
    assert result.rows is result.comparisons["quirky"]  # `rows` is the headline comparison
    # by hand: quirky refuses id02, rambles on id03 and flips id04; rule2 answers as rule does
    assert [r["example_id"] for r in result.comparisons["quirky"] if not r["binary_match"]] == ["id02", "id03", "id04"]
    assert len(result.comparisons["rule2"]) == 12 and all(r["binary_match"] for r in result.comparisons["rule2"])
    assert {r["arm"] for r in result.pairs} == {"quirky", "rule2"} and len(result.pairs) == 24
    headline = result.summary["headline"]
    assert (headline["arm"], headline["reference"]) == ("quirky", "rule")
    assert result.summary["binary_agreement"]["successes"] == 9  # the top level is the headline's 9 of 12
    on_disk = json.loads((result.run_dir / "summary.json").read_text())
    assert on_disk["schema_version"] == 2 and on_disk["headline"] == headline
    for name in ("results.parquet", "pairs.parquet"):
        assert pl.read_parquet_metadata(result.run_dir / name)["toxcmp_schema_version"] == "2"


def test_plain_progress_of_a_three_arm_run_shows_both_comparisons(cli, dataset, tmp_path):
    args = _args(dataset, tmp_path / "out")
    args[2] = "rule,quirky,rule[label=rule2]"
    result = cli(*args)
    progress = [line for line in result.output.splitlines() if line.startswith("[")]
    assert progress[-1].startswith("[12/12] agreement with rule: quirky 9/12 (75.0%) · rule2 12/12 (100.0%)"), progress
