"""Secrets never leave the process except to the server they are meant for; outputs stay under their root."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from toxcmp.run.arms import prepare_run_dir
from toxcmp.errors import UsageError
from toxcmp.testing.fake_server import FakeChatServer, Reply, completion

MODEL = "org/fake-classifier"
ENV_TOKEN = "hf_SENTINELenvTOKEN0123456789abcdef"
CLI_TOKEN = "sk-SENTINELcliTOKEN-9876543210"


def _scan(paths, *needles) -> list[str]:
    hits = []
    for root in paths:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for f in files:
            blob = f.read_bytes()
            for needle in needles:
                if needle.encode() in blob:
                    hits.append(f"{needle[:12]}… in {f}")
    return hits


@pytest.fixture
def dataset(tmp_path) -> Path:
    path = tmp_path / "rows.csv"
    texts = [f"row {i} idiot" if i % 2 else f"row {i} hello" for i in range(8)]
    pl.DataFrame({"conv_id": [f"s{i}" for i in range(8)], "user_input": texts,
                  "toxicity": [i % 2 for i in range(8)]}).write_csv(path)
    return path


def test_tokens_never_reach_logs_errors_cache_parquet_summary_or_json(cli, dataset, tmp_path, monkeypatch, isolated_env):
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    holder: dict = {}

    def leaky(payload):  # a hostile server: echoes the Authorization header back in its error bodies
        auth = {k.lower(): v for k, v in holder["a"].headers_seen[-1].items()}.get("authorization", "")
        if "idiot" in payload["messages"][-1]["content"]:
            return Reply(status=500, body={"error": f"internal error for credentials {auth} / {ENV_TOKEN}"})
        return Reply(body=completion("0", model=MODEL))

    out = tmp_path / "out"
    with FakeChatServer(models=[MODEL], responder=leaky) as a, FakeChatServer(models=[MODEL]) as b:
        holder["a"] = a
        results = []
        for extra in ([], ["--json"], ["--token", CLI_TOKEN], ["--token", CLI_TOKEN, "--json"]):
            results.append(cli("compare", "--model", MODEL, "--dataset", str(dataset), "--output-dir", str(out),
                               "--backends", f"api[base_url={a.base_url}],api[base_url={b.base_url}]",
                               "--max-retries", "0", "--concurrency", "1", *extra))
        sent = [{k.lower(): v for k, v in h.items()}.get("authorization", "") for h in a.headers_seen + b.headers_seen]
    # HF_TOKEN is for Hugging Face hosts only; the third-party server saw the explicit --token, nothing else
    assert not any(ENV_TOKEN in s for s in sent)
    assert any(CLI_TOKEN in s for s in sent), ([r.output[-300:] for r in results], sent)
    assert all(r.exit_code == 4 for r in results)  # the leaky server's 500s make every run partial
    frame = pl.read_parquet(next(out.glob("*/pairs.parquet")))
    errors = [e for e in frame["a_error"].to_list() if e]
    assert errors and all("***" in e for e in errors)  # the echoed secrets were redacted, not dropped silently
    for r in results:
        assert ENV_TOKEN not in r.output and CLI_TOKEN not in r.output
    assert _scan([out, isolated_env], ENV_TOKEN, CLI_TOKEN) == []


def test_hf_token_is_sent_to_hugging_face_hosts_only():
    from toxcmp.backends import BackendConfig
    from toxcmp.backends.api import ApiBackend

    import os

    os.environ["HF_TOKEN"] = ENV_TOKEN
    try:
        third_party = ApiBackend(BackendConfig(base_url="http://127.0.0.1:9/v1"))
        hf_endpoint = ApiBackend(BackendConfig(base_url="https://xyz.us-east-1.aws.endpoints.huggingface.cloud/v1"))
        explicit = ApiBackend(BackendConfig(base_url="http://127.0.0.1:9/v1", token=CLI_TOKEN))
    finally:
        del os.environ["HF_TOKEN"]
    assert third_party._token is None and hf_endpoint._token == ENV_TOKEN and explicit._token == CLI_TOKEN
    assert CLI_TOKEN not in repr(explicit.config) and ENV_TOKEN not in repr(hf_endpoint.config)


@pytest.mark.parametrize("run_id", ["../escape", "..", "/etc", "a/b", ".hidden", "x" * 200, "a\\..\\b", "ok\nno"])
def test_run_ids_cannot_escape_the_output_dir(tmp_path, run_id):
    with pytest.raises(UsageError, match="invalid run id"):
        prepare_run_dir(tmp_path / "outputs", run_id)
    assert not (tmp_path / "escape").exists()


def test_a_symlinked_run_dir_pointing_outside_is_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    root = tmp_path / "outputs"
    root.mkdir()
    (root / "run1").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UsageError, match="escapes"):
        prepare_run_dir(root, "run1")
    assert prepare_run_dir(root, "run2") == root / "run2"


def test_cli_refuses_escaping_run_ids(cli, dataset, tmp_path):
    result = cli("compare", "--dataset", str(dataset), "--run-id", "../../etc", "--output-dir", str(tmp_path / "o"),
                 "--backends", "api[base_url=http://127.0.0.1:9],local")
    assert result.exit_code == 2 and "invalid run id" in result.output
    assert json.dumps(result.output).count("Traceback") == 0
