"""Backends own their options: every option a backend declares as answer-changing is in its cache key and the
run id (walked option by option), no other option is, and a spec's unknown key lists that backend's keys."""

from __future__ import annotations

import json
from importlib.metadata import EntryPoint

import polars as pl
import pytest

import toxcmp.backends as backends
from toxcmp.backends import BackendConfig, backend_names, get_backend, options_class
from toxcmp.config import GenerationConfig, configs_dir
from toxcmp.domain.models import resolve_model
from toxcmp.domain.policies import load_policy
from toxcmp.domain.prompting import build_request
from toxcmp.errors import UsageError
from toxcmp.run.requests import cache_keys

from tests.helpers import doubles

N50 = configs_dir() / "recordings" / "backend_comparison_gpt-oss-safeguard-20b_toxic_chat_claude_1_n50.parquet"
BUILTIN = ("api", "local", "recorded")

# Each backend's starting options, and for every option it declares as answer-changing another valid value. A
# backend that declares a new answer-changing option fails `test_every_declared_option_has_a_value_to_try` until
# it is listed here, so no option escapes the walk below.
START = {
    "api": {"base_url": "http://127.0.0.1:8123/v1"},
    "local": {"device": "cpu"},
    "recorded": {"recording": str(N50), "side": "api"},
}
OTHER = {
    "api": {"base_url": "http://127.0.0.1:8124/v1", "provider": "together", "served_model": "openai/gpt-oss-20b:groq",
            "endpoint_label": "my-vllm", "api_server": "local", "engine": "vllm", "logprobs": 5},
    "local": {"device": "auto", "dtype": "float32", "batch_size": "4", "strategy": "naive", "logprobs": 5,
              "linear": "torch"},
    "recorded": {"recording": None, "side": "local"},  # recording: a copy of the file, made in the test
}
# Options that never change an answer: changing them must keep the key.
HARMLESS = {"concurrency": 3, "timeout_s": 5.0, "max_retries": 1, "rate_limit_wait_s": 1.0, "stream": True,
            "threads": 1, "token": "hf_never_in_a_key", "bill_to": "my-org"}


@pytest.fixture
def request_():
    return build_request(load_policy("toxic_simple"), "you idiot", resolve_model("smollm2-135m"), GenerationConfig())


def _key(name, values, request):
    backend = get_backend(name, options_class(name)(**values))
    try:
        return cache_keys(backend, [request])[0]
    finally:
        backend.close()


def _other_value(name, key, tmp_path):
    value = OTHER[name][key]
    if name == "recorded" and key == "recording":
        copy = tmp_path / "copy.parquet"
        pl.read_parquet(N50).head(10).write_parquet(copy)  # another file: another sha256
        return str(copy)
    return value


def test_every_declared_option_has_a_value_to_try():
    for name in BUILTIN:
        assert set(options_class(name).answer_changing()) == set(OTHER[name]), name


@pytest.mark.parametrize("name", BUILTIN)
def test_changing_any_answer_changing_option_changes_the_cache_key(name, request_, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    base = _key(name, START[name], request_)
    for key in options_class(name).answer_changing():
        changed = dict(START[name], **{key: _other_value(name, key, tmp_path)})
        assert _key(name, changed, request_) != base, f"{name}: changing {key} kept the cache key"


@pytest.mark.parametrize("name", BUILTIN)
def test_options_that_cannot_change_an_answer_keep_the_cache_key(name, request_, tmp_path):
    base = _key(name, START[name], request_)
    declared = options_class(name).declared()
    tried = [k for k in HARMLESS if k in declared] + ["cache_dir"]
    for key in tried:
        value = tmp_path if key == "cache_dir" else HARMLESS[key]
        assert _key(name, dict(START[name], **{key: value}), request_) == base, f"{name}: {key} changed the key"
    assert "token" not in json.dumps(options_class(name)(**START[name]).identity())


@pytest.mark.parametrize("name", BUILTIN)
def test_changing_any_answer_changing_option_changes_the_run_id(name, tmp_path, monkeypatch):
    from toxcmp.run.arms import build_arm, default_run_id
    from toxcmp.run.config import CompareConfig
    from toxcmp.run.specs import parse_backend_spec

    monkeypatch.delenv("HF_TOKEN", raising=False)
    cfg = CompareConfig()
    model, policy = resolve_model("smollm2-135m"), load_policy("toxic_simple")

    def run_id(values):
        written = ";".join(f"{k}={'none' if v is None else v}" for k, v in values.items())
        spec = parse_backend_spec(f"{name}[{written}]")
        arm, _ = build_arm(spec, cfg, BackendConfig())
        return default_run_id(cfg, model, policy, {"content_sha256": "x"}, [parse_backend_spec(name)], [arm])

    base = run_id(START[name])
    for key in options_class(name).answer_changing():
        assert run_id(dict(START[name], **{key: _other_value(name, key, tmp_path)})) != base, (name, key)


def test_two_arms_that_differ_only_in_the_served_model_never_share_a_cache_entry(request_):
    """The wrong PASS this issue names: the same base URL, two served models, one cache entry."""
    first = _key("api", {"base_url": "http://127.0.0.1:8123/v1", "served_model": "openai/gpt-oss-20b:groq"}, request_)
    second = _key("api", {"base_url": "http://127.0.0.1:8123/v1", "served_model": "openai/gpt-oss-20b:together"},
                  request_)
    assert first != second


def test_an_unknown_spec_key_lists_that_backends_own_keys():
    from toxcmp.run.specs import parse_backend_spec

    with pytest.raises(UsageError) as local:
        parse_backend_spec("local[provider=groq]")  # an api option written for local
    assert "bad option 'provider=groq'" in local.value.message
    assert "strategy" in local.value.hint and "provider" not in local.value.hint
    with pytest.raises(UsageError) as api:
        parse_backend_spec("api[strategy=naive]")
    assert "served_model" in api.value.hint and "strategy" not in api.value.hint


def test_a_spec_value_is_read_as_the_declared_type():
    from toxcmp.backends.api_options import ApiOptions

    assert ApiOptions.build(None, {"concurrency": "3", "timeout_s": "2.5", "stream": "true"}).concurrency == 3
    with pytest.raises(UsageError, match="concurrency='many'.* is not a int"):
        ApiOptions.build(None, {"concurrency": "many"}, where="'api[concurrency=many]'")
    with pytest.raises(UsageError, match="concurrency must be at least 1"):
        ApiOptions.build(None, {"concurrency": "0"})
    with pytest.raises(UsageError, match="token"):  # a secret is never written in a spec (it would be recorded)
        ApiOptions.build(None, {"token": "hf_x"})


@pytest.fixture
def switch_backend(monkeypatch):
    eps = [EntryPoint(name="switch", value="tests.helpers.doubles:SwitchBackend", group=backends.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(backends, "entry_points", lambda group: eps if group == backends.ENTRY_POINT_GROUP else [])
    doubles.reset()
    yield
    doubles.reset()


def test_an_entry_point_backend_takes_its_own_options_and_they_are_its_identity(switch_backend, cli, tmp_path):
    assert "switch" in backend_names()
    rows = tmp_path / "rows.csv"
    pl.DataFrame({"conv_id": ["a", "b", "c"], "user_input": ["you idiot", "hello", "nice"],
                  "toxicity": [1, 0, 0]}).write_csv(rows)
    args = ["compare", "--backends", "switch,switch[flip=true;pause_s=0]", "--dataset", str(rows),
            "--output-dir", str(tmp_path / "out"), "--json"]
    for _ in range(2):  # the second run answers from the cache: still from each arm's own entries
        summary = json.loads(cli(*args).stdout)
        assert summary["binary_agreement"]["successes"] == 0 and summary["n"] == 3
    assert doubles.SwitchBackend.calls == 6  # each arm asked once per row, the rerun asked nobody
    bad = cli("compare", "--backends", "switch[colour=red],switch", "--dataset", str(rows))
    assert bad.exit_code == 2 and "flip" in bad.output and "pause_s" in bad.output


def test_a_compare_reads_the_installed_backends_once_not_per_row(monkeypatch, cli, tmp_path):
    """The entry-point scan reads every installed package's metadata (~8 ms); asked per row it made a cached
    2,000-row compare take 52 s instead of 3 s. The shipped 50-row recording compared must scan at most once."""
    from importlib.metadata import entry_points as real_scan

    from toxcmp.config import configs_dir

    scans = []

    def counting_scan(group):
        scans.append(group)
        return real_scan(group=group)

    monkeypatch.setattr(backends, "entry_points", counting_scan)
    n50 = configs_dir() / "recordings" / "backend_comparison_gpt-oss-safeguard-20b_toxic_chat_claude_1_n50.parquet"
    n = 50
    result = cli("compare", "--policy", "toxic_chat_claude_1", "--model", "gpt-oss-safeguard-20b", "--dataset",
                 str(n50), "--backends", f"recorded[path={n50};side=api],recorded[path={n50};side=local]",
                 "--output-dir", str(tmp_path / "out"), "--json")
    assert result.exit_code in (0, 1), result.output
    assert json.loads(result.stdout)["n"] == n
    assert len(scans) <= 1, f"{len(scans)} scans of the installed packages for {n} rows"
