"""Issue 23: statistics without labels, and one arm as an evaluation against the human labels.

Two kinds of missing labels: the arms gave none (the bundled-model demo: 0 of 24 answers parsed, yet "binary
agreement 100 %" and "recall 0.0 % [0.0–32.4]" beside TP/FP/FN/TN 0/0/0/0), and the rows have no human label
(`toxicity` None). Real runs: the `compare` command over recorded arms, with no model. Expected values come from
the dataset's and the study file's own columns, hand counts, and scipy's Wilson interval — never toxcmp's output.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.stats import binomtest

from toxcmp.analysis.metrics import classification_report
from toxcmp.analysis.scoring import summarize
from toxcmp.analysis.verdict import SideLabels, decide
from toxcmp.config import configs_dir

N50 = configs_dir() / "recordings" / "backend_comparison_gpt-oss-safeguard-20b_toxic_chat_claude_1_n50.parquet"
SAMPLE = configs_dir() / "samples" / "toxicchat0124_test_sample.csv"
PROSE = "Sure! Here is a short poem about that."  # an answer that is no label (what SmolLM2 writes)
NO_LABELLED = "no labelled rows: agreement between arms only; accuracy, precision, recall, F1 undefined"


def _compare(out: Path, backends: str, dataset: Path, policy: str, model: str) -> dict:
    from typer.testing import CliRunner

    from toxcmp.cli.app import app

    result = CliRunner().invoke(app, ["compare", "--backends", backends, "--dataset", str(dataset), "--policy", policy,
                                      "--model", model, "--output-dir", str(out), "--json", "--cache-dir", str(out / "c")])
    assert result.exit_code in (0, 1, 3), result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def unlabelled_arms(tmp_path_factory) -> dict:
    """The shipped 24-row sample (8 toxic), both arms answering prose: no label from either arm."""
    out = tmp_path_factory.mktemp("nolabels")
    sample = pl.read_csv(SAMPLE)
    recording = out / "backend_comparison_prose.parquet"
    pl.DataFrame({"conv_id": sample["conv_id"], "text": sample["user_input"], "ground_truth": sample["toxicity"],
                  "api_response": [PROSE] * sample.height, "local_response": [PROSE] * sample.height,
                  "api_reasoning": [""] * sample.height, "local_reasoning": [""] * sample.height}).write_parquet(recording)
    both = f"recorded[path={recording};side=api;label=api],recorded[path={recording};side=local;label=local]"
    return _compare(out, both, SAMPLE, "toxic_simple", "smollm2-135m")


@pytest.fixture(scope="module")
def n50_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("n50")
    both = f"recorded[path={N50};side=api;label=provider],recorded[path={N50};side=local;label=local-gpu]"
    return Path(_compare(out, both, N50, "toxic_chat_claude_1", "gpt-oss-safeguard-20b")["run_dir"])


def _wilson(k: int, n: int) -> tuple[float, float]:
    ci = binomtest(k, n).proportion_ci(method="wilson")
    return ci.low, ci.high


# -- the arms gave no label -----------------------------------------------------------------------------------------

def test_a_side_without_labels_has_no_accuracy_precision_recall_or_f1_and_says_why(unlabelled_arms):
    sample = pl.read_csv(SAMPLE)
    assert (sample.height, int(sample["toxicity"].sum())) == (24, 8)  # the 0/8 → "0.0 % [0.0–32.4]"
    for p in ("a", "b"):
        side = unlabelled_arms["backends"][p]
        assert side["parse_rate"]["successes"] == 0 and side["confusion"]["no_label"] == 24
        assert (side["confusion"]["tp"], side["confusion"]["fp"], side["confusion"]["fn"], side["confusion"]["tn"]) == (0, 0, 0, 0)
        for name in ("accuracy", "precision", "recall"):
            assert side[name]["value"] is None and side[name]["low"] is None, name  # never 0.0 % [0.0–32.4]
        assert side["f1"] is None
        for name in ("accuracy", "precision", "recall", "f1"):
            assert side["undefined"][name] == "no labels from this side: 0 of 24 answers parsed"


def test_agreement_of_two_arms_without_labels_is_kept_but_the_headline_says_what_it_is(unlabelled_arms):
    s = unlabelled_arms
    # the arms are still compared: 24 answers without a label on both sides are the same outcome (hand count)
    assert (s["binary_agreement"]["successes"], s["binary_agreement"]["n"]) == (24, 24)
    assert s["n_both_labelled"] == 0 and s["verdict"] == "inconclusive" and s["passed"] is False
    assert any(note.startswith("no row labelled by both arms") for note in s["label_notes"])
    assert "no row labelled by both arms" in s["verdict_reason"]


# -- the rows have no human label ------------------------------------------------------------------------------------

def _pairs_without_truth(run_dir: Path) -> list[dict]:
    return [dict(r, toxicity=None) for r in pl.read_parquet(run_dir / "pairs.parquet").iter_rows(named=True)]


def test_without_human_labels_agreement_stays_and_accuracy_is_blank_with_a_reason(n50_run):
    study = pl.read_parquet(N50)
    rows = _pairs_without_truth(n50_run)
    summary = summarize(rows, ["provider", "local-gpu"], kappa_resamples=200)
    # agreement between the arms needs no truth: 48 of 50 by the study's columns (both parsed and equal; the one
    # local refusal disagrees with the provider's label)
    same = ((study["api_parsed_successfully"] & study["local_parsed_successfully"])
            & (study["api_binary_label"] == study["local_binary_label"]))
    assert summary["binary_agreement"]["successes"] == int(same.sum()) == 48
    assert summary["n_labelled"] == 0
    for p in ("a", "b"):
        side = summary["backends"][p]
        for name in ("accuracy", "precision", "recall"):
            assert side[name]["value"] is None, name
            assert side["undefined"][name] == "no labelled rows"
        assert side["f1"] is None and side["undefined"]["f1"] == "no labelled rows"
        assert side["parse_rate"]["successes"] == int(study[f"{'api' if p == 'a' else 'local'}_parsed_successfully"].sum())
    assert summary["mcnemar"]["p_value"] is None and summary["mcnemar"]["reason"] == "no labelled rows"
    assert NO_LABELLED in summary["label_notes"]


def test_without_human_labels_the_verdict_is_not_pass(n50_run):
    rows = pl.read_parquet(n50_run / "pairs.parquet").to_dicts()
    labelled = summarize(rows, ["provider", "local-gpu"], kappa_resamples=200)
    assert labelled["verdict"] == "pass"  # 96 % ≥ 95 % with the human labels (README)
    unlabelled = summarize(_pairs_without_truth(n50_run), ["provider", "local-gpu"], kappa_resamples=200)
    assert unlabelled["verdict"] == "inconclusive" and unlabelled["passed"] is False
    assert unlabelled["verdict_reason"].startswith(NO_LABELLED)
    assert "96.0%" in unlabelled["verdict_reason"]  # 48/50: what the arms do agree on, still said


def test_decide_without_labelled_rows_is_inconclusive():
    sides = [SideLabels("a", 50, 50), SideLabels("b", 49, 50)]
    assert decide(1.0, 0.95, sides, 49).verdict == "pass"  # n_labelled not given: as before
    verdict = decide(1.0, 0.95, sides, 49, n_labelled=0)
    assert verdict.verdict == "inconclusive" and verdict.reason.startswith(NO_LABELLED)
    assert decide(1.0, 0.95, sides, 49, n_labelled=1).verdict == "pass"


def test_rows_without_truth_are_left_out_of_accuracy():
    # hand count over the two labelled rows: both right; the unlabelled middle row is not a true negative
    r = classification_report([1, None, 0], [1, 1, 0])
    assert (r.accuracy.successes, r.accuracy.n) == (2, 2) and r.unlabelled == 1
    assert (r.confusion.tp, r.confusion.fp, r.confusion.fn, r.confusion.tn) == (1, 0, 0, 1)
    assert (r.precision.successes, r.precision.n) == (1, 1)


# -- precision, recall and F1 at their edges ---------------------------------------------------------------------

def test_precision_without_a_positive_prediction_is_blank_and_f1_is_zero():
    """2 positives, none predicted: precision 0/0 is undefined; recall 0/2 and F1 = 2·0 / (0 + 0 + 2) = 0 are not
    (scikit-learn's f1_score gives 0.0 on the same labels)."""
    r = classification_report([1, 1, 0, 0], [0, 0, 0, 0])
    assert math.isnan(r.precision.value) and "no positive predictions" in r.reasons["precision"]
    assert r.recall.value == 0.0 and "recall" not in r.reasons
    assert r.f1 == 0.0 and "f1" not in r.reasons


def test_recall_without_a_positive_row_is_blank_with_a_reason():
    r = classification_report([0, 0, 0], [0, 0, 0])
    assert math.isnan(r.recall.value) and "no positive rows" in r.reasons["recall"]
    assert math.isnan(r.f1) and "F1 is 0/0" in r.reasons["f1"]
    assert r.accuracy.value == 1.0 and "accuracy" not in r.reasons


def _hand_f1(t: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    tp = float((w * ((t == 1) & (p == 1))).sum())
    fp = float((w * ((t == 0) & (p == 1))).sum())
    fn = float((w * ((t == 1) & (p != 1))).sum())
    return 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else float("nan")


def test_f1_bootstrap_ci_matches_a_plain_loop_and_scipy():
    from scipy.stats import bootstrap

    from toxcmp.analysis.metrics import f1_with_bootstrap

    truth = [1] * 20 + [0] * 20 + [1] * 5 + [None] * 3
    pred = [1] * 14 + [0] * 4 + [None] * 2 + [0] * 17 + [1] * 3 + [None] * 5 + [1] * 3
    resamples, seed = 2000, 5
    est = f1_with_bootstrap(truth, pred, resamples=resamples, seed=seed)
    keep = [i for i, t in enumerate(truth) if t is not None]
    t = np.array([truth[i] for i in keep])
    p = np.array([-1 if pred[i] is None else pred[i] for i in keep])
    w = np.ones(len(keep))
    # hand counts over the 45 labelled rows: TP 14, FP 3, FN 4 + 2 + 5 = 11 → F1 = 28 / (28 + 3 + 11)
    assert est.value == pytest.approx(28 / 42)
    idx = np.random.default_rng(seed).integers(0, len(keep), size=(resamples, len(keep)))
    stats = np.array([_hand_f1(t[i], p[i], w[i]) for i in idx])
    assert (est.low, est.high) == pytest.approx(tuple(np.percentile(stats[~np.isnan(stats)], [2.5, 97.5])), abs=1e-12)
    res = bootstrap((t, p), lambda x, y: _hand_f1(x, y, np.ones(len(x))), paired=True, vectorized=False,
                    method="percentile", n_resamples=4000, rng=np.random.default_rng(1))
    assert est.low == pytest.approx(res.confidence_interval.low, abs=0.03)
    assert est.high == pytest.approx(res.confidence_interval.high, abs=0.03)


def test_f1_bootstrap_is_weighted_like_the_point_estimate():
    from toxcmp.analysis.metrics import f1_with_bootstrap

    truth, pred, weights = [1, 1, 0, 0, 1], [1, 0, 1, 0, 1], [2.0, 1.0, 1.0, 3.0, 0.5]
    # weighted counts: TP 2 + 0.5, FP 1, FN 1 → F1 = 5 / 7
    est = f1_with_bootstrap(truth, pred, weights, resamples=300, seed=0)
    assert est.value == pytest.approx(5 / 7) == classification_report(truth, pred, weights).f1
    assert 0.0 <= est.low <= est.value <= est.high <= 1.0


# -- one arm: an evaluation against the human labels -------------------------------------------------------------------

def _arm_rows(run_dir: Path, arm: str) -> list[dict]:
    tidy = pl.read_parquet(run_dir / "results.parquet")
    return tidy.filter((pl.col("arm") == arm) & (pl.col("repeat") == 0)).to_dicts()


@pytest.mark.parametrize("arm, side", [("provider", "api"), ("local-gpu", "local")])
def test_one_arm_is_scored_against_the_human_labels(n50_run, arm, side):
    from toxcmp.analysis.scoring import evaluate

    study = pl.read_parquet(N50)
    parsed = study[f"{side}_parsed_successfully"]
    said = study[f"{side}_binary_label"] & parsed
    truth = study["ground_truth"] == 1
    n = study.height
    correct = int((parsed & (study[f"{side}_binary_label"].cast(pl.Int64) == study["ground_truth"])).sum())
    tp, fp = int((said & truth).sum()), int((said & ~truth).sum())
    fn = int(truth.sum()) - tp  # positives not said positive, unparsed ones included
    refused = int(study.filter(~parsed)[f"{side}_response"].str.contains("sorry").sum())  # the local "I’m sorry…"
    summary = evaluate(_arm_rows(n50_run, arm), arm, resamples=2000)
    b = summary["backends"]["a"]
    assert summary["kind"] == "evaluation" and summary["n"] == summary["n_labelled"] == n == 50
    expected = {"accuracy": (correct, n), "precision": (tp, tp + fp), "recall": (tp, int(truth.sum())),
                "parse_rate": (int(parsed.sum()), n), "refusal_rate": (refused, n)}
    for name, (k, m) in expected.items():
        assert (b[name]["successes"], b[name]["n"]) == (k, m), name
        assert b[name]["value"] == pytest.approx(k / m, abs=1e-6), name
        assert (b[name]["low"], b[name]["high"]) == pytest.approx(_wilson(k, m), abs=1e-6), name
    assert b["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-6)
    assert b["f1_ci"]["low"] < b["f1"] < b["f1_ci"]["high"] and b["f1_ci"]["method"] == "percentile bootstrap"
    # 38/50 and 37/50 are below the 95 % threshold: the evaluation fails, and says against what
    assert summary["verdict"] == "fail" and "accuracy against the human labels" in summary["verdict_reason"]


def test_side_zero_refusals_and_the_one_refusal_by_hand():
    """The hand count the test above relies on: the provider refused nothing, the local GPU once."""
    study = pl.read_parquet(N50)
    assert int((~study["api_parsed_successfully"]).sum()) == 0
    assert study.filter(~pl.col("local_parsed_successfully"))["local_response"].to_list() == [
        "I’m sorry, but I can’t help with that."]


def test_one_arm_passes_on_its_accuracy_and_is_inconclusive_without_labels(n50_run):
    from toxcmp.analysis.scoring import evaluate

    rows = _arm_rows(n50_run, "provider")
    assert evaluate(rows, "provider", threshold=0.75, resamples=50)["verdict"] == "pass"  # 38/50 = 76 % ≥ 75 %
    unlabelled = evaluate([dict(r, toxicity=None) for r in rows], "provider", resamples=50)
    assert unlabelled["verdict"] == "inconclusive" and unlabelled["verdict_reason"].startswith("no labelled rows")
    assert unlabelled["backends"]["a"]["accuracy"]["value"] is None
    assert unlabelled["backends"]["a"]["parse_rate"]["successes"] == 50  # the arm still answered


def test_one_arm_that_gives_no_labels_is_inconclusive(unlabelled_arms, tmp_path):
    from toxcmp.analysis.scoring import evaluate

    rows = _arm_rows(Path(unlabelled_arms["run_dir"]), "api")
    summary = evaluate(rows, "api", resamples=50)
    assert summary["verdict"] == "inconclusive" and "too few labels" in summary["verdict_reason"]
    assert summary["backends"]["a"]["recall"]["value"] is None
    assert summary["backends"]["a"]["undefined"]["recall"] == "no labels from this side: 0 of 24 answers parsed"


def test_decide_evaluation_table():
    from toxcmp.analysis.verdict import decide_evaluation

    side = SideLabels("api", 50, 50)
    assert decide_evaluation(0.96, 0.95, side, 50).verdict == "pass"
    assert decide_evaluation(0.90, 0.95, side, 50).verdict == "fail"
    assert decide_evaluation(0.96, 0.95, side, 0).verdict == "inconclusive"
    assert decide_evaluation(0.96, 0.95, SideLabels("api", 24, 50), 50).verdict == "inconclusive"  # under half
    assert decide_evaluation(0.96, 0.95, side, 50, status="interrupted").verdict == "incomplete"
    assert decide_evaluation(0.96, 0.95, side, 50, n_errors=1).verdict == "incomplete"
