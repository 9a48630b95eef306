"""Issue 24: the local backend records its own token log-probabilities while it generates (`logprobs=K`): every
strategy gives the same log p for the same tokens (fp32, ≤ 1e-4), the token strings spell the decoded answer, and
they equal a plain forward pass over prompt + answer written here (the oracle: `model(ids).logits`, log-softmax);
beside it in `compare`, the naive arm's tokens scored under the prefix arm's model differ by ≤ 1e-4 on every token."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from toxcmp.backends.local import LocalBackend, LocalOptions
from toxcmp.config import GenerationConfig, configs_dir
from toxcmp.domain.models import resolve_model
from toxcmp.domain.policies import load_policy
from toxcmp.domain.prompting import build_request

SAMPLE = configs_dir() / "samples" / "toxicchat0124_test_sample.csv"
ROWS = 4


def _requests(n=ROWS, max_new_tokens=16):
    with SAMPLE.open(encoding="utf-8", newline="") as fh:
        texts = [row["user_input"] for row in csv.DictReader(fh)][:n]
    generation = GenerationConfig.from_defaults(max_new_tokens=max_new_tokens)
    return [build_request(load_policy("toxic_simple"), t, resolve_model("smollm2-135m"), generation) for t in texts]


@pytest.fixture(scope="module")
def by_strategy():
    requests = _requests()
    out = {}
    for strategy in ("naive", "batched", "prefix"):
        backend = LocalBackend(LocalOptions.build({"strategy": strategy, "logprobs": 3, "device": "cpu"}))
        out[strategy] = backend.generate(requests)
    return requests, out


@pytest.mark.slow
def test_every_strategy_records_the_same_log_p_and_the_tokens_spell_the_answer(by_strategy):
    requests, out = by_strategy
    for i in range(len(requests)):
        naive = out["naive"][i]
        tokens = naive.extra["token_logprobs"]
        assert naive.extra["logprobs_asked"] == 3 and len(tokens) == naive.extra["completion_tokens"]
        assert "".join(t["token"] for t in tokens) == naive.raw_text
        assert all(t["part"] == "content" and len(t["top"]) == 3 for t in tokens)
        for strategy in ("batched", "prefix"):
            other = out[strategy][i]
            assert other.raw_text == naive.raw_text and other.extra["strategy"] == strategy
            theirs = other.extra["token_logprobs"]
            assert [t["token"] for t in theirs] == [t["token"] for t in tokens]
            assert max(abs(a["logprob"] - b["logprob"]) for a, b in zip(tokens, theirs)) <= 1e-4


@pytest.mark.slow
def test_recorded_log_p_equal_a_plain_forward_pass_over_prompt_and_answer(by_strategy):
    import torch

    requests, out = by_strategy
    loaded = LocalBackend(LocalOptions.build({"device": "cpu"})).load(requests[0].model)
    tokenizer, model = loaded.tokenizer, loaded.model
    for request, response in zip(requests, out["prefix"]):
        prompt = tokenizer.apply_chat_template(request.chat_messages(), add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():  # the answer's own ids (re-encoding its text may split it otherwise)
            generated = model.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids),
                                       dtype=torch.long), max_new_tokens=16, do_sample=False, temperature=None,
                                       top_p=None, top_k=None, pad_token_id=tokenizer.eos_token_id)
            answer_ids = generated[0, len(prompt_ids):].tolist()
            assert tokenizer.decode(answer_ids) == response.raw_text
            logits = model(torch.tensor([prompt_ids + answer_ids])).logits[0].float()
        logp = torch.log_softmax(logits[len(prompt_ids) - 1:-1], dim=-1)
        tokens = response.extra["token_logprobs"]
        assert len(tokens) == len(answer_ids)
        for j, (token, token_id) in enumerate(zip(tokens, answer_ids)):
            assert abs(token["logprob"] - float(logp[j, token_id])) <= 1e-4
            top = torch.topk(logp[j], 3)
            assert [t for t, _ in token["top"]] == [tokenizer.decode([int(k)]) for k in top.indices]
            assert all(abs(v - float(w)) <= 1e-4 for (_, v), w in zip(token["top"], top.values))


@pytest.mark.slow
def test_without_logprobs_nothing_is_recorded():
    response = LocalBackend(LocalOptions.build({"device": "cpu"})).generate(_requests(1, 4))[0]
    assert "token_logprobs" not in response.extra and "logprobs_asked" not in response.extra


@pytest.fixture(scope="module")
def naive_beside_prefix(tmp_path_factory):
    from typer.testing import CliRunner

    from toxcmp.cli.app import app

    out = tmp_path_factory.mktemp("naive")
    result = CliRunner().invoke(app, [
        "compare", "--model", "smollm2-135m", "--backends", "local,local[strategy=naive;label=naive]", "--policy",
        "toxic_simple", "--dataset", str(SAMPLE), "--sample-size", "3", "--max-new-tokens", "16", "--logprobs", "5",
        "--output-dir", str(out / "out"), "--cache-dir", str(out / "cache"), "--json"])
    assert result.exit_code in (0, 1, 3), result.output
    return json.loads(result.stdout)


@pytest.mark.slow
def test_naive_arm_scored_under_the_prefix_arms_model_agrees_to_1e4(naive_beside_prefix):
    summary = naive_beside_prefix
    parity = summary["token_parity"]["naive"]
    assert parity["reference"] == "local" and parity["rows"] == 3
    assert parity["unaligned"] == 0 and parity["aligned"] == summary["logprobs"]["naive"]["tokens"]
    assert parity["max_abs_delta"] <= 1e-4 and parity["top1_share"] == 1.0  # greedy: every token was the top-1
    assert sum(parity["histogram"]["counts"]) == parity["aligned"]
    assert sum(parity["histogram"]["counts"][:2]) == parity["aligned"]  # every |Δ| below 1e-4
    import polars as pl

    tokens = pl.read_parquet(Path(summary["run_dir"]) / "tokens.parquet")
    assert set(tokens["arm"]) == {"local", "naive"}  # both arms recorded their own
    naive = tokens.filter(pl.col("arm") == "naive")
    assert naive["local_logprob"].null_count() == 0
    assert (naive["logprob"] - naive["local_logprob"]).abs().max() <= 1e-4


@pytest.mark.slow
def test_the_page_shows_the_histogram_the_reliability_diagrams_and_each_rows_worst_token(naive_beside_prefix):
    from tests.helpers.browser import start_browser

    summary = naive_beside_prefix
    run_dir = Path(summary["run_dir"])
    driver = start_browser()
    try:
        driver.get((run_dir / "report.html").resolve().as_uri())
        driver.implicitly_wait(5)
        assert driver.find_element("css selector", "body[data-ready='1']")
        section = driver.find_element("id", "logprobs")
        assert section.text == "Log-probability parity"
        charts = driver.find_elements("css selector", "div.charts.logprobs figure")
        captions = [f.find_element("css selector", "figcaption").text for f in charts]
        assert any(c.startswith("naive vs local's model: aligned tokens by |Δ log p|") for c in captions)
        histogram = charts[0].find_elements("css selector", "svg text")
        counts = summary["token_parity"]["naive"]["histogram"]["counts"]
        assert [t.text for t in histogram if t.text.isdigit()][: sum(1 for c in counts if c)] == [
            str(c) for c in counts if c]
        calibrated = [label for label, a in summary["label_probs"]["arms"].items() if not a.get("why_not")]
        assert calibrated == ["local", "naive"]  # both in process: their model's distribution at the label
        titles = [t.get_attribute("textContent") for t in driver.find_elements("css selector", "svg.chart > title")]
        assert all(f"reliability, {label}" in titles for label in calibrated)
        rows = driver.find_elements("css selector", "#rows tr.row")
        rows[0].click()
        detail = driver.find_element("css selector", "tr.detail").text
        shown = list(summary["token_parity"]["naive"]["by_row"].values())
        assert "worst token" in detail and "under the local model" in detail
        assert any(f"log p {w['arm_logprob']:.3f} here, {w['local_logprob']:.3f} under the local model" in detail
                   for w in shown), detail
        assert "p(violating)" in detail
    finally:
        driver.quit()


@pytest.mark.slow
def test_prefix_rows_prefilled_in_groups_of_different_lengths_record_the_naive_log_p():
    """The prefix strategy prefills short and long tails in separate groups, then decodes every row in one loop:
    each row's tokens and log p are still those of its own naive generation (the first step is assembled from
    the groups' logits)."""
    short = ["hi", "you are dumb", "thanks!"]
    long = " ".join(["Tell me everything about the history of the printing press in Europe, please."] * 20)
    generation = GenerationConfig.from_defaults(max_new_tokens=8)
    requests = [build_request(load_policy("toxic_simple"), t, resolve_model("smollm2-135m"), generation)
                for t in [short[0], long, *short[1:]]]
    prefix = LocalBackend(LocalOptions.build({"strategy": "prefix", "logprobs": 3, "device": "cpu"}))
    grouped = prefix.generate(requests)
    assert prefix.stats["batches"] == 1 and prefix.stats["prefill_groups"] >= 2
    naive = LocalBackend(LocalOptions.build({"strategy": "naive", "logprobs": 3, "device": "cpu"})).generate(requests)
    for mine, reference in zip(grouped, naive):
        assert mine.raw_text == reference.raw_text and mine.extra["strategy"] == "prefix"
        ours, theirs = mine.extra["token_logprobs"], reference.extra["token_logprobs"]
        assert [t["token"] for t in ours] == [t["token"] for t in theirs] and len(ours) == 8
        assert max(abs(a["logprob"] - b["logprob"]) for a, b in zip(ours, theirs)) <= 1e-4
        assert [[alt for alt, _ in t["top"]] for t in ours] == [[alt for alt, _ in t["top"]] for t in theirs]
