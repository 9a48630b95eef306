"""Prompt-token parity end to end: the count a server reports for each request (`usage.prompt_tokens`) against
the tokens of toxcmp's own render, through `toxcmp compare` into results.parquet, summary.json and the report.

Expected counts come from the model's tokenizer called directly here (transformers on the GGUF or the model
directory, `apply_chat_template` + encode) and, for llama.cpp, from llama-cpp-python's own tokenizer — never
from toxcmp's counting. The variant finder is checked on scripted servers whose reported count is computed here
from a deliberately different render: it must name that variant.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from tests.e2e.test_llamacpp import require_llamacpp
from toxcmp.domain.models import bundled_gguf_path, resolve_model
from toxcmp.domain.policies import load_policy
from toxcmp.testing.fake_server import FakeChatServer, Reply, completion

SAMPLE = Path(__file__).resolve().parents[2] / "configs" / "samples" / "toxicchat0124_test_sample.csv"
SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"  # SmolLM2's template default


def smol_tokenizer():
    from transformers import AutoTokenizer

    gguf = bundled_gguf_path(resolve_model("smollm2-135m"))
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def rendered(tok, messages, **options) -> str:
    return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **options)


def count(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


def usage_reply(prompt_tokens: int | None) -> Reply:
    body = completion("0")
    if prompt_tokens is None:
        body.pop("usage")
    else:
        body["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": prompt_tokens + 1}
    return Reply(body=body)


def compare(cli, tmp_path: Path, model: str, backends: str, n: int, run_id: str, *extra: str):
    result = cli("compare", "--model", model, "--policy", "toxic_simple", "--backends", backends,
                 "--dataset", str(SAMPLE), "--sample-size", str(n), "--max-new-tokens", "4",
                 "--output-dir", str(tmp_path / "out"), "--run-id", run_id, *extra)
    assert result.exit_code in (0, 1, 3), result.output
    run_dir = tmp_path / "out" / run_id
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    return result, summary, pl.read_parquet(run_dir / "results.parquet")


def by_arm(frame: pl.DataFrame, arm: str) -> list[dict]:
    return frame.filter(pl.col("arm") == arm).to_dicts()


# -- scripted servers: the finder names the variant a server rendered ---------------------------------------------

def test_smollm2_parity_and_the_default_system_prompt_variant(cli, tmp_path):
    """Three servers for the bundled model: one reports the count of the request as sent, one the count of the
    request with SmolLM2's default system prompt written before the policy (computed here), one no usage."""
    tok = smol_tokenizer()

    def honest(payload):
        return usage_reply(count(tok, rendered(tok, payload["messages"])))

    def with_default(payload):
        return usage_reply(count(tok, rendered(tok, [{"role": "system", "content": SMOL_SYSTEM}, *payload["messages"]])))

    with FakeChatServer(models=["smollm2-135m"], responder=honest) as a, \
            FakeChatServer(models=["smollm2-135m"], responder=with_default) as b, \
            FakeChatServer(models=["smollm2-135m"], responder=lambda payload: usage_reply(None)) as c:
        backends = (f"api[base_url={a.base_url};label=honest],api[base_url={b.base_url};label=default-system],"
                    f"api[base_url={c.base_url};label=silent]")
        result, summary, frame = compare(cli, tmp_path, "smollm2-135m", backends, 6, "smol-variants")
        sent = {p["messages"][-1]["content"]: p["messages"] for p in a.requests}
    parity = summary["prompt_tokens"]
    assert parity["honest"]["equal"] == {**parity["honest"]["equal"], "successes": 6, "n": 6, "value": 1.0}
    for row in by_arm(frame, "honest"):
        expected = count(tok, rendered(tok, sent[row["text"]]))
        assert row["prompt_tokens"] == row["own_prompt_tokens"] == expected
    # the default system prompt is a whole extra turn: its own tokens, counted here, on every row
    extra = count(tok, rendered(tok, [{"role": "system", "content": SMOL_SYSTEM}, *sent[next(iter(sent))]])) - \
        count(tok, rendered(tok, sent[next(iter(sent))]))
    moved = parity["default-system"]
    assert moved["equal"]["successes"] == 0 and moved["equal"]["n"] == 6
    assert moved["difference"]["min"] == moved["difference"]["max"] == extra > 0
    assert moved["variants"]["explained_by"] == {"default_system_prompt": 6}
    assert {r["prompt_variants"] for r in by_arm(frame, "default-system")} == {"default_system_prompt"}
    silent = parity["silent"]
    assert silent["equal"] is None and silent["reason"] == "no usage reported"
    assert all(r["prompt_tokens"] is None for r in by_arm(frame, "silent"))
    lines = {line.split(":")[0]: line for line in result.output.splitlines() if line.startswith("prompt tokens, ")}
    assert "matches: the template's default system prompt before the policy (6/6" in lines["prompt tokens, default-system"]
    assert "no usage reported" in lines["prompt tokens, silent"] and "%" not in lines["prompt tokens, silent"]
    page = (tmp_path / "out" / "smol-variants" / "report.html").read_text(encoding="utf-8")
    assert "prompt tokens (reported vs toxcmp&#x27;s render)" in page and "reported = toxcmp&#x27;s render on 6/6" in page
    # a rescore calls no model and loads no tokenizer: the counts are in results.parquet, the statistics follow
    rescored = cli("rescore", str(tmp_path / "out" / "smol-variants"), "--no-write", "--json")
    assert rescored.exit_code in (0, 1, 3), rescored.output
    assert json.loads(rescored.stdout)["prompt_tokens"] == parity


@pytest.fixture(scope="module")
def tiny_gptoss(tmp_path_factory):
    from tests.helpers.tiny_gptoss import build_tiny_gptoss

    return build_tiny_gptoss(tmp_path_factory.mktemp("gpt-oss-tiny") / "model")


def test_harmony_policy_as_system_message_and_reasoning_line_are_named(cli, tmp_path, tiny_gptoss):
    """A Harmony model (the gpt-oss template, a tiny tokenizer): one server renders the policy as a system message
    instead of the developer message, one renders `Reasoning: medium` whatever was asked; both computed here."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_gptoss))
    model = str(Path(tiny_gptoss).resolve())

    def as_system(payload):
        text = rendered(tok, payload["messages"], reasoning_effort=payload["reasoning_effort"])
        assert text.count("<|start|>developer<|message|>") == 1
        return usage_reply(count(tok, text.replace("<|start|>developer<|message|>", "<|start|>system<|message|>")))

    def medium(payload):
        return usage_reply(count(tok, rendered(tok, payload["messages"], reasoning_effort="medium")))

    with FakeChatServer(models=[model], responder=as_system) as a, FakeChatServer(models=[model], responder=medium) as b:
        backends = f"api[base_url={a.base_url};label=as-system],api[base_url={b.base_url};label=medium]"
        result, summary, frame = compare(cli, tmp_path, model, backends, 4, "harmony-variants")
        asked = {p["reasoning_effort"] for p in a.requests}
        messages = a.requests[0]["messages"]
    assert asked == {"low"}
    ours = count(tok, rendered(tok, messages, reasoning_effort="low"))
    assert count(tok, rendered(tok, messages, reasoning_effort="medium")) != ours  # else nothing to find
    parity = summary["prompt_tokens"]
    assert parity["as-system"]["equal"]["successes"] == 0
    assert parity["as-system"]["variants"]["explained_by"] == {"policy_as_system_message": 4}
    assert parity["medium"]["variants"]["explained_by"] == {"reasoning_medium": 4}
    row = next(r for r in by_arm(frame, "as-system") if r["text"] == messages[-1]["content"])
    assert row["own_prompt_tokens"] == ours
    assert "matches: policy as a system message (4/4 differing rows)" in result.output
    assert "matches: Reasoning: medium (4/4 differing rows)" in result.output


# -- real servers (llama.cpp's and transformers serve) ---------------------------------------------------------------

def real_expected(tok, frame: pl.DataFrame, arm: str) -> list[tuple[int | None, int, int | None]]:
    """(reported, counted here, toxcmp's own) for each row of an arm: the policy and the row's text as the user
    message, rendered and counted with the tokenizer called directly."""
    policy = load_policy("toxic_simple").text
    return [(r["prompt_tokens"], count(tok, rendered(tok, [{"role": "system", "content": policy},
                                                           {"role": "user", "content": r["text"]}])),
             r["own_prompt_tokens"]) for r in by_arm(frame, arm)]


@pytest.mark.slow
def test_llamacpp_reports_prompt_tokens_only_unstreamed_and_they_match(cli, tmp_path):
    """llama.cpp's server on the bundled GGUF, 24 ToxicChat rows: asked without streaming it reports usage, and
    its counts equal the tokenizer's (transformers, and llama.cpp's own); the spawned arm streams by default, and
    llama.cpp sends no usage in a stream: that arm says "no usage reported", never 0 %."""
    require_llamacpp()
    from llama_cpp import Llama

    tok = smol_tokenizer()
    backends = "api[api_server=llamacpp;stream=false;label=llama-plain],api[api_server=llamacpp;label=llama-streamed]"
    # --no-cache: `stream` does not change answers, so the streamed arm would be answered from the first's cache
    result, summary, frame = compare(cli, tmp_path, "smollm2-135m", backends, 24, "llamacpp-parity", "--no-cache")
    rows = real_expected(tok, frame, "llama-plain")
    assert len(rows) == 24
    vocab = Llama(model_path=str(bundled_gguf_path(resolve_model("smollm2-135m"))), vocab_only=True, verbose=False)
    policy = load_policy("toxic_simple").text
    for (reported, here, own), row in zip(rows, by_arm(frame, "llama-plain")):
        text = rendered(tok, [{"role": "system", "content": policy}, {"role": "user", "content": row["text"]}])
        assert reported == here == own == len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True))
        assert 0 < row["completion_tokens"] <= 4
    plain = summary["prompt_tokens"]["llama-plain"]
    assert plain["equal"]["successes"] == plain["equal"]["n"] == 24 and plain["difference"]["counts"] == {"0": 24}
    streamed = summary["prompt_tokens"]["llama-streamed"]
    assert streamed["equal"] is None and streamed["reason"] == "no usage reported" and streamed["reported"] == 0
    assert all(r["prompt_tokens"] is None and r["completion_tokens"] is None for r in by_arm(frame, "llama-streamed"))
    line = next(x for x in result.output.splitlines() if x.startswith("prompt tokens, llama-streamed"))
    assert "no usage reported" in line and "%" not in line


@pytest.mark.slow
def test_transformers_serve_and_local_report_prompt_tokens_that_match(cli, tmp_path):
    """`transformers serve` (spawned, streaming: it sends usage in the last chunk) and the local backend on 24
    ToxicChat rows: both report prompt tokens, and they equal the tokenizer's count of the request."""
    tok = smol_tokenizer()
    _, summary, frame = compare(cli, tmp_path, "smollm2-135m", "local,api", 24, "serve-parity",
                                "--api-server", "local")
    for arm in ("local", "api"):
        rows = real_expected(tok, frame, arm)
        assert len(rows) == 24
        assert all(reported == here == own for reported, here, own in rows), (arm, rows)
        parity = summary["prompt_tokens"][arm]
        assert parity["equal"]["successes"] == parity["equal"]["n"] == 24, (arm, parity)
        assert all(0 < r["completion_tokens"] <= 4 for r in by_arm(frame, arm))
