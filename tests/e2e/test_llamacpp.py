"""The second real engine: llama.cpp's OpenAI-compatible server (llama-cpp-python) on the bundled GGUF.

It runs the Q4_1 weights with llama.cpp's kernels, while the local backend dequantizes the same file for
transformers, so texts genuinely part; the comparison must say where and whether the parting was a near tie.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import polars as pl
import pytest

from toxcmp.backends import BackendConfig, get_backend
from toxcmp.config import GenerationConfig
from toxcmp.domain.models import resolve_model
from toxcmp.domain.policies import load_policy
from toxcmp.domain.prompting import build_request

from tests.helpers.processes import alive, listening_addresses, server_dies_with_parent, server_pids

# not serial: each server is on a port of its own, the orphan check counts only this worker's servers, and the speed
# bench asserts no speed (a server test here is mostly one core busy: two files at once use both)

SAMPLE = Path(__file__).resolve().parents[2] / "configs" / "samples" / "toxicchat0124_test_sample.csv"
ROWS = 12  # of the shipped 24: texts part on most of them (Q4_1 against float weights), at half the time


def _llamacpp_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def require_llamacpp() -> None:
    """Skip without llama-cpp-python; fail instead under TOXCMP_REQUIRE_LLAMACPP=1 (CI installs it)."""
    if _llamacpp_installed():
        return
    message = "llama-cpp-python is not installed (make llamacpp)"
    if os.environ.get("TOXCMP_REQUIRE_LLAMACPP") == "1":
        pytest.fail(f"{message}; TOXCMP_REQUIRE_LLAMACPP=1 forbids skipping", pytrace=False)
    pytest.skip(message)


def _llamacpp_pids() -> list[int]:
    return server_pids("llama_cpp.server")


# -- without the package ------------------------------------------------------------------------------------------

def test_missing_package_is_a_one_line_hint(cli, monkeypatch):
    import importlib.metadata

    real = importlib.metadata.version

    def version(name: str) -> str:
        if name == "llama-cpp-python":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    result = cli("compare", "--model", "smollm2-135m", "--backends", "local,api", "--api-server", "llamacpp",
                 "--dataset", str(SAMPLE), "--sample-size", "2")
    assert result.exit_code not in (0, 1, 3), result.output
    assert "toxcmp[llamacpp]" in result.output and "Traceback" not in result.output
    assert len([line for line in result.output.strip().splitlines() if line.strip()]) <= 2, result.output


def test_llamacpp_needs_a_gguf(cli):
    result = cli("classify", "hi", "--backend", "api", "--api-server", "llamacpp", "--model", "openai/gpt-oss-20b")
    assert result.exit_code == 2, result.output
    assert "GGUF" in result.output and "Traceback" not in result.output


def test_cache_identity_names_engine_settings_and_file(monkeypatch):
    """llama.cpp answers are never served from (or into) transformers-serve cache entries, and a change of
    llama-cpp-python version or server settings is a different identity."""
    require_llamacpp()
    from toxcmp.backends import spawned as api_module
    from toxcmp.run.cache import cache_key
    from toxcmp.domain.models import bundled_gguf_path, file_sha256

    spec = resolve_model("smollm2-135m")
    request = build_request(load_policy("toxic_simple"), "hello", spec, GenerationConfig(max_new_tokens=8))
    llama = get_backend("api", BackendConfig(api_server="llamacpp"))
    serve = get_backend("api", BackendConfig(api_server="local"))
    assert llama.endpoint.startswith("llamacpp-server:llama-cpp-python==") and "n_ctx=" in llama.endpoint
    assert "repeat_penalty=1.0" in llama.endpoint
    assert llama.resolved_revision(spec) == f"sha256:{file_sha256(bundled_gguf_path(spec))}"
    keys = {cache_key(b.name, b.endpoint, request, b.resolved_revision(spec)) for b in (llama, serve)}
    assert len(keys) == 2
    monkeypatch.setattr(api_module, "LLAMACPP_SAMPLING", {**api_module.LLAMACPP_SAMPLING, "repeat_penalty": 1.1})
    assert get_backend("api", BackendConfig(api_server="llamacpp")).endpoint != llama.endpoint


# -- a real llama.cpp server -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_server_is_loopback_only_and_answers_greedily():
    require_llamacpp()
    from toxcmp.backends.server import llamacpp_api_server

    spec = resolve_model("smollm2-135m")
    with llamacpp_api_server(spec, threads=1) as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        cmd = server.command()
        assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
        assert listening_addresses(server.port) == ["127.0.0.1"]
        api = get_backend("api", BackendConfig(base_url=server.base_url, served_model=server.served_model,
                                               concurrency=1))
        request = build_request(load_policy("toxic_simple"), "what is the capital of France?", spec,
                                GenerationConfig(max_new_tokens=12))
        first, second = api.generate([request, request])
        assert first.ok and first.content and first.content == second.content  # greedy: the same text twice
        pid = server.process.pid
    assert not alive(pid)


@pytest.mark.slow
@pytest.mark.parametrize("squatter", ["answers", "silent"])
def test_a_port_taken_before_the_server_binds_it_is_chosen_again(monkeypatch, squatter):
    """The port toxcmp chose is taken by another process before its server binds it (two runs, or two test
    workers, on one machine): the server starts on another port, and no request goes to the other process, even
    one that answers the health check as a server would."""
    require_llamacpp()
    import socket

    from toxcmp.backends import server as server_module
    from toxcmp.testing.fake_server import FakeChatServer

    spec = resolve_model("smollm2-135m")
    with FakeChatServer(models=[spec.model_id]) as fake, socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        taken = fake.port if squatter == "answers" else silent.getsockname()[1]
        ports = iter([taken])
        real_free_port = server_module.free_port
        monkeypatch.setattr(server_module, "free_port", lambda: next(ports, None) or real_free_port())
        with server_module.llamacpp_api_server(spec, threads=1) as server:
            assert server.port != taken
            api = get_backend("api", BackendConfig(base_url=server.base_url, served_model=server.served_model))
            request = build_request(load_policy("toxic_simple"), "hello", spec, GenerationConfig(max_new_tokens=4))
            [answer] = api.generate([request])
        assert answer.ok and answer.content
        assert fake.requests == []  # the process that held the port got no completion request


@pytest.mark.slow
def test_server_answers_equal_llama_cpp_in_process_greedy():
    """What toxcmp gets over HTTP equals llama-cpp-python's own greedy chat completion of the same messages with
    no repeat penalty, run in this process: the messages, the template and the sampling settings all arrive, and
    a request waiting for the server does not cut short the one being streamed."""
    require_llamacpp()
    import csv

    from llama_cpp import Llama

    from toxcmp.backends.server import gguf_of

    spec = resolve_model("smollm2-135m")
    with SAMPLE.open(encoding="utf-8", newline="") as fh:
        texts = [row["user_input"] for _, row in zip(range(4), csv.DictReader(fh))]
    requests = [build_request(load_policy("toxic_simple"), t, spec, GenerationConfig(max_new_tokens=24)) for t in texts]
    # two in flight: the server queues the second (it must not cut off the one it is streaming)
    answers = _spawned_answers(requests, concurrency=2)
    llm = Llama(model_path=str(gguf_of(spec)), n_ctx=8192, n_threads=1, verbose=False)
    for request, answer in zip(requests, answers):
        own = llm.create_chat_completion(messages=request.chat_messages(), max_tokens=24, temperature=0.0,
                                         repeat_penalty=1.0)
        assert answer.content == own["choices"][0]["message"]["content"], request.chat_messages()[-1]["content"][:60]


def _spawned_answers(requests, **settings):
    """`requests` answered by a llama.cpp server toxcmp starts (one thread), stopped afterwards."""
    api = get_backend("api", BackendConfig(api_server="llamacpp", threads=1, **settings))
    try:
        return api.generate(requests)
    finally:
        api.close()


def test_token_logprobs_from_the_server_equal_llama_cpp_in_process(models_dir):
    """Issue 24: `logprobs=K` on the spawned llama.cpp server (streamed) gives each generated token with its log p
    and top K; they equal llama-cpp-python's own in-process completion of the same messages (an oracle outside
    toxcmp: the same library's `create_chat_completion(logprobs=True, top_logprobs=K)`) to 1e-3."""
    require_llamacpp()
    from llama_cpp import Llama

    from toxcmp.backends.server import gguf_of

    spec = resolve_model("smollm2-135m")
    texts = ["you are an idiot", "have a nice day"]
    requests = [build_request(load_policy("toxic_simple"), t, spec, GenerationConfig(max_new_tokens=12)) for t in texts]
    answers = _spawned_answers(requests, logprobs=3)
    llm = Llama(model_path=str(gguf_of(spec)), n_ctx=4096, n_threads=1, verbose=False, logits_all=True)
    for request, answer in zip(requests, answers):
        assert answer.extra["streamed"] and answer.extra["logprobs_asked"] == 3
        own = llm.create_chat_completion(messages=request.chat_messages(), max_tokens=12, temperature=0.0,
                                         repeat_penalty=1.0, logprobs=True, top_logprobs=3)
        expected = own["choices"][0]["logprobs"]["content"]
        got = answer.extra["token_logprobs"]
        assert [t["token"] for t in got] == [t["token"] for t in expected] and len(got) == 12
        for mine, theirs in zip(got, expected):
            assert abs(mine["logprob"] - float(theirs["logprob"])) < 1e-3, (mine, theirs)
            assert [t for t, _ in mine["top"]] == [t["token"] for t in theirs["top_logprobs"]]
            assert all(abs(lp - float(t["logprob"])) < 1e-3 for (_, lp), t in zip(mine["top"], theirs["top_logprobs"]))


@pytest.mark.slow
def test_llamacpp_tokens_scored_under_the_local_model_match_a_plain_forward_pass(cli, tmp_path, models_dir):
    """Issue 24, step 2: beside a local arm, the llama.cpp arm's own tokens (logprobs=5) are scored under the local
    model. Q4_1 kernels against the dequantized float weights: |Δ log p| is not zero. Each stored local log p
    equals a plain forward pass written here (transformers, the chat template applied by hand) to 1e-4."""
    require_llamacpp()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from toxcmp.domain.models import materialize

    result = cli("compare", "--model", "smollm2-135m", "--backends", "local,api[api_server=llamacpp;logprobs=5;label=cpp]",
                 "--dataset", str(SAMPLE), "--sample-size", "3", "--max-new-tokens", "16", "--output-dir",
                 str(tmp_path / "out"))
    assert result.exit_code == 3, result.output  # SmolLM2 gives no labels
    run_dir = next(p for p in (tmp_path / "out").iterdir() if p.is_dir())
    summary = json.loads((run_dir / "summary.json").read_text())
    parity = summary["token_parity"]["cpp"]
    assert parity["reference"] == "local" and parity["rows"] == 3 and parity["aligned"] >= 30
    assert parity["mean_abs_delta"] > 0 and parity["max_abs_delta"] >= parity["mean_abs_delta"]
    assert "token log p, cpp vs local's model: |Δ| mean" in " ".join(result.output.split())
    tokens = pl.read_parquet(run_dir / "tokens.parquet").filter(pl.col("local_logprob").is_not_null())
    results = pl.read_parquet(run_dir / "results.parquet").filter(pl.col("arm") == "cpp")
    path = materialize(resolve_model("smollm2-135m"))
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    texts = dict(zip(results["example_id"], results["text"]))
    raws = dict(zip(results["example_id"], results["raw"]))
    checked = 0
    for example_id in tokens["example_id"].unique().to_list():
        request = build_request(load_policy("toxic_simple"), texts[example_id], resolve_model("smollm2-135m"),
                                GenerationConfig(max_new_tokens=16))
        prompt = tokenizer.apply_chat_template(request.chat_messages(), add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = tokenizer(raws[example_id], add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logp = torch.log_softmax(model(torch.tensor([prompt_ids + ids])).logits[0].float(), dim=-1)
        # position j of the answer is predicted at prompt + j - 1; map each stored token to its local token
        pieces = [tokenizer.decode(ids[: j + 1]) for j in range(len(ids))]
        starts = {len(pieces[j - 1]) if j else 0: j for j in range(len(ids))}
        at = 0
        for row in tokens.filter(pl.col("example_id") == example_id).sort("position").iter_rows(named=True):
            j = starts.get(at)
            at += len(row["token"])
            if j is None:
                continue
            expected = float(logp[len(prompt_ids) + j - 1, ids[j]])
            assert abs(row["local_logprob"] - expected) < 1e-4, (example_id, row["token"], row["local_logprob"], expected)
            checked += 1
    assert checked >= 30
    # the local arm's label probability at its answer's first position, against the same plain forward pass
    local = summary["label_probs"]["arms"]["local"]
    assert local["source"] == "its model, in process" and local["rows"] == 3
    zero, one = (tokenizer(x, add_special_tokens=False)["input_ids"][0] for x in ("0", "1"))
    mine = pl.read_parquet(run_dir / "results.parquet").filter(pl.col("arm") == "local")
    for example_id, p_violating in zip(mine["example_id"], mine["p_violating"]):
        request = build_request(load_policy("toxic_simple"), texts[example_id], resolve_model("smollm2-135m"),
                                GenerationConfig(max_new_tokens=16))
        prompt = tokenizer.apply_chat_template(request.chat_messages(), add_generation_prompt=True, tokenize=False)
        with torch.inference_mode():
            probs = torch.softmax(model(torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]]))
                                  .logits[0, -1].float(), dim=-1)
        assert abs(p_violating - float(probs[one] / (probs[zero] + probs[one]))) < 1e-5
    # rescore calls no model: it keeps the tokens and their parity as measured
    rescored = cli("rescore", str(run_dir), "--output-dir", str(tmp_path / "rescored"), "--json")
    again = json.loads(rescored.stdout)
    assert again["token_parity"] == summary["token_parity"] and again["logprobs"] == summary["logprobs"]
    assert again["label_probs"] == summary["label_probs"]
    order = ("example_id", "arm", "repeat", "position")
    assert pl.read_parquet(Path(again["run_dir"]) / "tokens.parquet").sort(order).equals(
        pl.read_parquet(run_dir / "tokens.parquet").sort(order))


@pytest.mark.slow
def test_cli_leaves_no_server_behind(cli):
    require_llamacpp()
    before = set(_llamacpp_pids())
    result = cli("classify", "hello", "--backend", "api", "--api-server", "llamacpp", "--max-new-tokens", "4", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["backend"] == "api" and data["served_by"].startswith("http://127.0.0.1:")
    time.sleep(0.5)
    assert set(_llamacpp_pids()) - before == set()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_the_spawned_llamacpp_server(sig):
    require_llamacpp()
    code = (
        "import time\n"
        "from toxcmp.backends.server import llamacpp_api_server\n"
        "from toxcmp.domain.models import resolve_model\n"
        "with llamacpp_api_server(resolve_model('smollm2-135m'), threads=1) as s:\n"
        "    print(s.process.pid, flush=True)\n"
        "    time.sleep(120)\n"
    )
    assert server_dies_with_parent(code, sig), "the llama.cpp server survived its parent"


@pytest.fixture(scope="module")
def llamacpp_run(tmp_path_factory, models_dir):
    """compare local vs api --api-server llamacpp on ROWS rows of the shipped sample, then the same command again, then
    in the arm form; with a cache of their own (a module fixture runs before the per-test isolation)."""
    require_llamacpp()
    os.environ["TOXCMP_MODELS_DIR"] = str(models_dir)
    from typer.testing import CliRunner

    from toxcmp.cli.app import app

    out = tmp_path_factory.mktemp("llamacpp-run")
    args = ["compare", "--model", "smollm2-135m", "--backends", "local,api", "--api-server", "llamacpp",
            "--dataset", str(SAMPLE), "--sample-size", str(ROWS), "--max-new-tokens", "32", "--cache-dir", str(out / "cache"),
            "--output-dir", str(out)]
    first = CliRunner().invoke(app, args)
    second = CliRunner().invoke(app, args)
    run_dir = next(p for p in out.iterdir() if p.is_dir() and p.name != "cache")
    # the arm form only asks the cache (its tests read no margins): --no-margin spares a scoring pass
    arm_form = args[:4] + ["local,api[api_server=llamacpp]"] + args[7:-1] + [str(out / "arm-form"), "--no-margin"]
    third = CliRunner().invoke(app, arm_form)
    return first, second, run_dir, third, out / "arm-form"


def _comparable(text: str) -> str:
    for marker in ("<|im_end|>",):  # what SmolLM2 stops on; a server does not return it
        if text.endswith(marker):
            text = text[: -len(marker)]
    return text


@pytest.mark.slow
def test_compare_local_vs_llamacpp_reports_every_parting(llamacpp_run):
    first, _, run_dir, _, _ = llamacpp_run
    assert first.exit_code == 3, first.output  # SmolLM2 gives no labels: INCONCLUSIVE, by design
    summary = json.loads((run_dir / "summary.json").read_text())
    results = pl.read_parquet(run_dir / "results.parquet")
    local = {r["example_id"]: r for r in results.filter(pl.col("arm") == "local").iter_rows(named=True)}
    api = {r["example_id"]: r for r in results.filter(pl.col("arm") == "api").iter_rows(named=True)}
    assert len(local) == len(api) == ROWS and all(r["error"] is None for r in [*local.values(), *api.values()])
    # the content-identity rate, against a count made here from the raw outputs
    same_content = sum(local[i]["content"] == api[i]["content"] for i in local)
    assert summary["content_identical"]["successes"] == same_content and summary["content_identical"]["n"] == ROWS
    # the first divergent character of every row, by os.path.commonprefix
    expected = {}
    for i in local:
        a, b = _comparable(local[i]["raw"]), _comparable(api[i]["raw"])
        if a != b:
            expected[i] = len(os.path.commonprefix([a, b]))
    pairs = pl.read_parquet(run_dir / "pairs.parquet")
    found = {r["example_id"]: r for r in pairs.iter_rows(named=True)}
    assert {i: r["diverge_char"] for i, r in found.items() if r["diverge_char"] is not None} == expected
    assert expected, "Q4_1 kernels vs dequantized float weights: some of the greedy texts should part"
    first_calls, second_calls = (i["calls"] for i in summary["metadata"]["invocations"])
    assert first_calls["api"] == ROWS and second_calls["api"] == 0  # the first run really asked llama.cpp
    d = summary["divergence"]
    assert d["n_differ"] == len(expected) and sorted(expected.values()) == d["char_positions"]["values"]
    # every parting is scored: near tie or real; the local side wrote greedily, so its own next token is the one
    # its model ranks higher (log p local ≥ log p other) at the parting
    for i in expected:
        row = found[i]
        assert row["divergence_kind"] in ("near_tie", "real"), row
        assert row["diverge_token"] is not None and row["a_next_token"] is not None and row["b_next_token"] is not None
        assert row["a_next_logprob"] >= row["b_next_logprob"] - 1e-3, row
        assert row["a_continuation"] == _comparable(local[i]["raw"])[expected[i]:][:40]
        assert row["b_continuation"] == _comparable(api[i]["raw"])[expected[i]:][:40]
    assert d["near_tie"] + d["real"] == len(expected) and d["unscored"] == 0
    # the report says it in words and in the page
    assert f"(end-of-turn markers aside) part in {len(expected)} of {ROWS} answered rows" in " ".join(first.output.split())
    page = (run_dir / "report.html").read_text()
    assert f"Where the texts part ({len(expected)} rows)" in page
    assert "final content byte-identical" in page
    assert all(str(i)[:16] in page for i in expected)


@pytest.mark.slow
def test_second_run_is_served_from_cache_without_starting_a_server(llamacpp_run):
    _, second, run_dir, _, _ = llamacpp_run
    assert second.exit_code == 3, second.output
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["backends"]["b"]["cached"] == ROWS
    assert "starting llama.cpp server" not in second.output
    reliability = summary["metadata"]["reliability"]["api"]
    assert reliability["server_threads"] is None  # no server was started


@pytest.mark.slow
def test_arm_form_is_the_same_backend_with_the_same_cache_identity(llamacpp_run):
    """`--backends 'local,api[api_server=llamacpp]'` is the same arm as `--api-server llamacpp`: every answer of the
    first run is found in the cache."""
    *_, third, arm_dir = llamacpp_run
    assert third.exit_code == 3, third.output
    run_dir = next(p for p in arm_dir.iterdir() if p.is_dir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["backends"]["b"]["cached"] == ROWS and summary["backends"]["a"]["cached"] == ROWS
    assert any(a.get("identity", {}).get("api_server") == "llamacpp" for a in summary["metadata"]["arms"])


@pytest.mark.slow
def test_the_page_shows_every_parting_in_chromium(llamacpp_run):
    """In a real browser: the divergence table has one row per parting in pairs.parquet, with its character
    position and its near-tie/real class, and the page is otherwise intact (rows rendered, verdict shown)."""
    from tests.helpers.browser import start_browser

    _, _, run_dir, _, _ = llamacpp_run
    pairs = pl.read_parquet(run_dir / "pairs.parquet").filter(pl.col("diverge_char").is_not_null())
    driver = start_browser()
    try:
        driver.get((run_dir / "report.html").resolve().as_uri())
        driver.implicitly_wait(5)
        assert driver.find_element("css selector", "body[data-ready='1']")
        assert driver.find_element("id", "verdict").text.startswith("INCONCLUSIVE")
        cells = [[td.text for td in tr.find_elements("css selector", "td")]
                 for tr in driver.find_elements("css selector", "table.divergence tbody tr")]
        assert len(cells) == pairs.height
        shown = sorted((row[0], int(row[1]), row[-1]) for row in cells)
        expected = sorted((r["example_id"][:16], r["diverge_char"], r["divergence_kind"])
                          for r in pairs.iter_rows(named=True))
        assert shown == expected
        assert len(driver.find_elements("css selector", "#rows tr.row")) == ROWS
    finally:
        driver.quit()


def test_a_gguf_path_is_a_model_named_by_its_content(tmp_path):
    import hashlib

    from toxcmp.backends.server import gguf_of
    from toxcmp.domain.models import resolved_revision

    path = tmp_path / "tiny-model.Q4_0.gguf"
    path.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    spec = resolve_model(str(path))
    assert spec.gguf_path == str(path.resolve()) and spec.only_here and not spec.is_bundled
    assert gguf_of(spec) == path.resolve()
    assert resolved_revision(spec) == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(Exception, match="GGUF"):
        gguf_of(resolve_model("openai/gpt-oss-20b"))


@pytest.mark.slow
def test_llamacpp_serves_a_gguf_given_by_path(cli, tmp_path):
    """Any GGUF file: a copy of the bundled one, given by path, answers as the bundled alias does."""
    require_llamacpp()
    import shutil

    from toxcmp.domain.models import bundled_gguf_path

    copy = tmp_path / "copy.gguf"
    shutil.copyfile(bundled_gguf_path(resolve_model("smollm2-135m")), copy)
    answers = []
    for model in (str(copy), "smollm2-135m"):
        result = cli("classify", "what is the capital of France?", "--backend", "api", "--api-server", "llamacpp",
                     "--model", model, "--max-new-tokens", "12", "--json")
        assert result.exit_code == 0, result.output
        answers.append(json.loads(result.stdout)["content"])
    assert answers[0] and answers[0] == answers[1]


@pytest.mark.slow
def test_bench_engines_runs_every_peer_and_prints_ratios_against_the_fastest(cli, monkeypatch):
    """A smoke run (speed is read from the numbers it prints, never asserted): every engine answers, the ratios
    are the ratios of the printed rates against the fastest peer, prefix is token-identical to naive, and the
    C++ llama-server that cannot be found here is named as not run, with why."""
    require_llamacpp()
    monkeypatch.setenv("TOXCMP_LLAMA_SERVER", "/nonexistent/llama-server")
    result = cli("bench", "engines", "--rows", "2", "--max-new-tokens", "4", "--threads", "1", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    eps = data["eps"]
    peers = {"llamacpp_in_process", "llamacpp_sequential", "llamacpp_parallel"}
    assert set(eps) == {"local_naive", "local_prefix", "local_prefix_torch_linear", *peers}
    assert all(v > 0 for v in eps.values())
    assert data["fastest_peer"] == max(peers, key=eps.get)
    assert data["ratios"]["local_prefix_vs_fastest_peer"] == pytest.approx(
        eps["local_prefix"] / max(eps[p] for p in peers), rel=1e-2)
    assert data["ratios"]["local_prefix_vs_llamacpp"] == pytest.approx(eps["local_prefix"] / eps["llamacpp_sequential"],
                                                                       rel=1e-2)
    assert data["ratios"]["local_prefix_vs_torch_linear"] == pytest.approx(
        eps["local_prefix"] / eps["local_prefix_torch_linear"], rel=1e-2)
    assert data["identical_prefix"] == 2 and data["identical_prefix_torch_linear"] == 2 and data["threads"] == 1
    # the in-process library and its server run the same kernels on the same prompt: the same answers
    assert data["identical_peers"]["llamacpp_in_process"] == data["identical_peers"]["llamacpp_sequential"]
    assert set(data["not_run"]) == {"llama_server"} and "not an executable" in data["not_run"]["llama_server"]
    assert data["llama_server_slots"] is None


@pytest.fixture(scope="module")
def users_server(llamacpp_run):
    """llama-cpp-python's server started the way a user starts it: the GGUF, a port, every other default (its
    model is then known by the file's path, and it applies repeat_penalty 1.1 unless asked otherwise)."""
    import subprocess
    import sys

    from toxcmp.backends.server import free_port, gguf_of

    gguf = str(gguf_of(resolve_model("smollm2-135m")))
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    for _ in range(3):  # another worker's server may take the port before this one binds it: then another port
        port = free_port()
        process = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1",
                                    "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/v1"
        if _answers_itself(process, url, port):
            break
        process.terminate()
        process.wait(timeout=30)
    else:
        pytest.fail("llama_cpp.server did not start in 3 tries")
    try:
        yield url, gguf
    finally:
        process.terminate()
        process.wait(timeout=30)


def _answers_itself(process, url: str, port: int) -> bool:
    """The server answers on `port` and the listening socket is its own (not another worker's server)."""
    import httpx

    from toxcmp.backends.server import _listening_inodes, _socket_owners

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return process.pid in _socket_owners(_listening_inodes(port))
        except httpx.HTTPError:
            time.sleep(0.5)
    return False


@pytest.mark.slow
def test_a_users_own_server_needs_its_served_name_and_says_which(cli, users_server):
    url, gguf = users_server
    result = cli("classify", "hello there", "--backend", "api", "--model", "smollm2-135m", "--base-url", url,
                 "--no-cache")
    lines = [line for line in result.stderr.splitlines() if line.strip() and "engine is" not in line]
    assert result.exit_code == 4 and len(lines) == 1, result.stderr
    assert f"does not serve model 'smollm2-135m' (it serves: {gguf})" in lines[0]
    assert f"--served-model '{gguf}'" in lines[0]


@pytest.mark.slow
def test_a_users_own_llama_cpp_server_answers_as_the_spawned_one(llamacpp_run, users_server):
    """The same GGUF behind a server the user started: toxcmp asks it what it is (llama-cpp-python), sends it
    repeat_penalty=1.0, and its answers are byte-identical to the spawned server's; the same server asked as
    it is (engine=generic: nothing engine-specific sent) applies its repeat_penalty 1.1 and parts from them."""
    from typer.testing import CliRunner

    from toxcmp.cli.app import app

    _, _, first_run, _, _ = llamacpp_run
    url, gguf = users_server
    out = first_run.parent / "users-server"
    arms = (f"api[api_server=llamacpp;label=spawned],api[base_url={url};served_model={gguf};label=mine],"
            f"api[base_url={url};served_model={gguf};engine=generic;label=as-is]")
    result = CliRunner().invoke(app, ["compare", "--model", "smollm2-135m", "--backends", arms, "--dataset",
                                      str(SAMPLE), "--sample-size", str(ROWS), "--max-new-tokens", "32", "--no-margin",
                                      "--cache-dir", str(first_run.parent / "cache"), "--output-dir", str(out)])
    assert result.exit_code in (0, 1, 3), result.output
    run_dir = next(p for p in out.iterdir() if p.is_dir())
    tidy = pl.read_parquet(run_dir / "results.parquet")
    raw = {arm: dict(zip(f["example_id"], f["raw"])) for arm, f in
           ((a, tidy.filter(pl.col("arm") == a)) for a in ("spawned", "mine", "as-is"))}
    assert len(raw["spawned"]) == ROWS and all(raw["spawned"].values())
    assert raw["mine"] == raw["spawned"]
    assert sum(raw["as-is"][k] != raw["spawned"][k] for k in raw["spawned"]) >= 1
    meta = json.loads((run_dir / "summary.json").read_text())["metadata"]
    assert meta["reliability"]["mine"]["engine"] == "llama-cpp-python"
    assert meta["reliability"]["mine"]["engine_settings"]["repeat_penalty"] == 1.0
    assert meta["reliability"]["as-is"]["engine_settings"] == {}
