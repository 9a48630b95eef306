"""The `recorded` backend, and real gpt-oss text through the whole pipeline (issue 10).

Expected values come from the study file's own columns (`*_parsed_successfully`, `*_binary_label`,
`binary_match`), never from toxcmp's output.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from toxcmp.testing.fake_server import FakeChatServer, Reply, completion

from tests.conftest import RECORDED, TOXICCHAT_CSV, require_shared

N50_NAME = "backend_comparison_gpt-oss-safeguard-20b_toxic_chat_claude_1_n50.parquet"
MODEL = "openai/gpt-oss-safeguard-20b"


@pytest.fixture
def n50() -> Path:
    return require_shared(RECORDED / N50_NAME)


@pytest.fixture
def study(n50) -> pl.DataFrame:
    return pl.read_parquet(n50)


def _compare(cli, out: Path, backends: str, dataset: Path, *extra: str):
    result = cli("compare", "--backends", backends, "--dataset", str(dataset), "--policy", "toxic_chat_claude_1",
                 "--model", "gpt-oss-safeguard-20b", "--output-dir", str(out), "--json", *extra)
    return result, (json.loads(result.stdout) if result.stdout.strip().startswith("{") else None)


def _kappa(a: list[int], b: list[int]) -> float:
    """Cohen's kappa by its textbook formula, written out here independently of toxcmp.analysis.metrics."""
    n = len(a)
    po = sum(x == y for x, y in zip(a, b)) / n
    pe = sum((a.count(k) / n) * (b.count(k) / n) for k in (0, 1))
    return (po - pe) / (1 - pe)


def test_recorded_arms_reproduce_the_study_on_n50(cli, tmp_path, n50, study):
    both = f"recorded[path={n50};side=api],recorded[path={n50};side=local]"
    study_way, s0 = _compare(cli, tmp_path / "a", both, n50, "--unparsed-as", "0")
    assert study_way.exit_code == 0, study_way.output
    assert s0["binary_agreement"]["successes"] == int(study["binary_match"].sum()) == 49
    assert s0["binary_agreement"]["n"] == study.height == 50 and s0["verdict"] == "pass"

    default, s = _compare(cli, tmp_path / "b", both, n50)
    both_parsed = study.filter(pl.col("api_parsed_successfully") & pl.col("local_parsed_successfully"))
    agree_parsed = int((both_parsed["api_binary_label"] == both_parsed["local_binary_label"]).sum())
    neither = int((~study["api_parsed_successfully"] & ~study["local_parsed_successfully"]).sum())
    assert s["binary_agreement"]["successes"] == agree_parsed + neither == 48
    assert s["n_both_parsed"] == both_parsed.height == 49
    assert s["backends"]["a"]["parse_rate"]["successes"] == int(study["api_parsed_successfully"].sum())
    assert s["backends"]["b"]["parse_rate"]["successes"] == int(study["local_parsed_successfully"].sum())
    expected_kappa = _kappa([int(x) for x in both_parsed["api_binary_label"]], [int(x) for x in both_parsed["local_binary_label"]])
    assert s["cohen_kappa"]["value"] == pytest.approx(expected_kappa, abs=1e-6)
    flips = both_parsed.filter(pl.col("api_binary_label") != pl.col("local_binary_label"))
    assert s["causes"]["label_flip"] == flips.height == 1
    assert s["cause_examples"]["label_flip"][0]["example_id"] == flips["conv_id"][0]
    assert "Walmart" in flips["text"][0]
    one_sided = int((study["api_parsed_successfully"] ^ study["local_parsed_successfully"]).sum())
    assert s["causes"]["refusal"] + s["causes"]["parse"] == one_sided == 1
    assert all(sb.startswith(N50_NAME) and "@sha256:" in sb for sb in s["backends"]["a"]["served_by"])

    # the same run again answers from the cache
    again, s2 = _compare(cli, tmp_path / "b", both, n50)
    assert s2["backends"]["a"]["cached"] == 50 and s2["backends"]["b"]["cached"] == 50
    assert s2["binary_agreement"] == s["binary_agreement"]


def test_examples_missing_from_the_recording_are_error_rows(cli, tmp_path, n50, study):
    require_shared(TOXICCHAT_CSV)
    data = tmp_path / "rows.csv"
    known = study.head(2).select(pl.col("conv_id"), pl.col("text").alias("user_input"),
                                 pl.col("ground_truth").cast(pl.Int8).alias("toxicity"))
    stranger = pl.DataFrame({"conv_id": ["not-in-n50"], "user_input": ["a text nobody recorded"], "toxicity": [0]},
                            schema=known.schema)
    pl.concat([known, stranger]).write_csv(data)
    result, s = _compare(cli, tmp_path / "out", f"recorded[path={n50};side=api],recorded[path={n50};side=local]", data)
    assert result.exit_code == 4 and s["verdict"] == "incomplete"
    frame = pl.read_parquet(Path(s["run_dir"]) / "pairs.parquet")
    missing = frame.filter(pl.col("example_id") == "not-in-n50")
    assert "not in the recording" in missing["a_error"][0] and missing["cause"][0] == "error"
    assert frame.filter(pl.col("example_id") != "not-in-n50")["a_error"].is_null().all()


def test_a_toxcmp_run_dir_replays_as_a_recording(cli, tmp_path, n50):
    both = f"recorded[path={n50};side=api],recorded[path={n50};side=local]"
    _, first = _compare(cli, tmp_path / "a", both, n50)
    run_dir = Path(first["run_dir"])
    replay = f"recorded[path={run_dir};side=a;label=last-month],recorded[path={n50};side=api;label=today]"
    _, s = _compare(cli, tmp_path / "b", replay, n50)
    assert s["content_identical"]["successes"] == 50 and s["binary_agreement"]["successes"] == 50
    assert [b["label"] for b in s["backends"].values()] == ["last-month", "today"]
    # a side picked by the run's backend label reads the same answers as side=b
    by_label, s_label = _compare(cli, tmp_path / "c", f"recorded[path={run_dir};side=recorded:local],"
                                                     f"recorded[path={n50};side=local;label=study]", n50)
    assert s_label["content_identical"]["successes"] == 50, by_label.output


def test_bad_recording_specs_are_one_line_errors(cli, tmp_path, n50):
    for backends, message in ((f"recorded[path={n50}],local", "pick one"),
                              (f"recorded[path={tmp_path / 'nope.parquet'};side=api],local", "no recording at"),
                              ("recorded,local", "needs a recording")):
        result, _ = _compare(cli, tmp_path / "out", backends, n50)
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output


def _replay_server(study: pl.DataFrame) -> FakeChatServer:
    """An OpenAI-compatible loopback server that answers each row with the study's recorded api response, in the
    shapes providers use: a separate `reasoning` field, `reasoning_content`, or the collapsed Harmony form."""
    by_text = {r["text"]: (i, r) for i, r in enumerate(study.iter_rows(named=True))}

    def respond(payload: dict) -> Reply:
        user = next(m["content"] for m in reversed(payload["messages"]) if m["role"] == "user")
        i, row = by_text[user]
        content, reasoning = row["api_response"], row["api_reasoning"]
        if i % 3 == 0:
            return Reply(body=completion(f"analysis{reasoning}assistantfinal{content}", model=MODEL))
        return Reply(body=completion(content, reasoning, "reasoning" if i % 3 == 1 else "reasoning_content", model=MODEL))

    return FakeChatServer(models=[MODEL], responder=respond)


def test_real_gpt_oss_text_through_the_api_backends_http_path(cli, tmp_path, n50, study):
    with _replay_server(study) as server:
        result, s = _compare(cli, tmp_path / "out", f"api[base_url={server.base_url}],recorded[path={n50};side=local]",
                             n50, "--no-margin")
        assert len(server.requests) == 50
    assert result.exit_code == 0, result.output
    frame = pl.read_parquet(Path(s["run_dir"]) / "pairs.parquet").sort("example_id")
    expected = study.sort("conv_id")
    # the api backend split every shape back into the recorded final answer and reasoning
    assert frame["a_content"].to_list() == expected["api_response"].to_list()
    assert [r.strip() for r in frame["a_reasoning"].to_list()] == [r.strip() for r in expected["api_reasoning"].to_list()]
    both_parsed = study.filter(pl.col("api_parsed_successfully") & pl.col("local_parsed_successfully"))
    assert s["backends"]["a"]["parse_rate"]["successes"] == int(study["api_parsed_successfully"].sum()) == 50
    assert s["n_both_parsed"] == both_parsed.height == 49
    kappa = _kappa([int(x) for x in both_parsed["api_binary_label"]], [int(x) for x in both_parsed["local_binary_label"]])
    assert s["cohen_kappa"]["value"] == pytest.approx(kappa, abs=1e-6)
    assert s["causes"]["label_flip"] == int((both_parsed["api_binary_label"] != both_parsed["local_binary_label"]).sum())
    assert s["causes"]["refusal"] == 1 and s["binary_agreement"]["successes"] == 48


def test_the_demo_recording_ships_with_the_project_and_ends_on_a_labelled_finding(cli, tmp_path):
    """`make demo` part 2 on a fresh clone (no ../shared): the shipped n50 copy, replayed through both sides."""
    from toxcmp.config import configs_dir

    shipped = configs_dir() / "recordings" / N50_NAME
    study = pl.read_parquet(shipped)
    both = f"recorded[path={shipped};side=api;label=provider],recorded[path={shipped};side=local;label=local-gpu]"
    result = cli("compare", "--backends", both, "--dataset", str(shipped), "--policy", "toxic_chat_claude_1",
                 "--model", "gpt-oss-safeguard-20b", "--output-dir", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    agree = int(((study["api_binary_label"] == study["local_binary_label"])
                 & study["api_parsed_successfully"] & study["local_parsed_successfully"]).sum())
    verdicts = [i for i, line in enumerate(lines) if line.startswith("PASS: binary agreement 96.0%")]
    assert len(verdicts) == 2 and "provider vs local-gpu" in lines[verdicts[0] + 1] and agree == 48  # report opens and closes on it
    assert "label_flip" in result.output and "Walmart" in result.output and "κ" in result.output
    if (RECORDED / N50_NAME).exists():
        assert shipped.read_bytes() == (RECORDED / N50_NAME).read_bytes()
