from __future__ import annotations

import json

import pytest


def test_verify_setup_is_green(cli):
    result = cli("verify-setup")
    assert result.exit_code == 0, result.output
    assert "all required checks passed" in result.output and "✗" not in result.output


def test_verify_setup_json_and_token_is_masked(cli, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_SENTINELtoken1234567890")
    result = cli("verify-setup", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    names = {c["name"]: c for c in data["checks"]}
    assert data["ok"] and names["HF token"]["detail"] == "present (hidden)"
    assert names["public API: classify(backend=API)"]["ok"]
    assert "SENTINEL" not in result.output


def test_verify_setup_fails_on_unwritable_cache(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = cli("verify-setup", "--cache-dir", str(blocker / "sub"))
    assert result.exit_code == 1 and "cache dir writable" in result.output


def test_policies_and_backends_listing(cli):
    out = cli("policies", "list", "--json")
    assert {p["name"] for p in json.loads(out.stdout)} >= {"toxic_simple", "toxic_chat_claude_1"}
    shown = cli("policies", "show", "toxic_chat_claude_1")
    assert shown.exit_code == 0 and "DEFINITIONS" in shown.output
    backends = json.loads(cli("backends", "list", "--json").stdout)
    assert set(backends) >= {"api", "local"}
    assert backends["api"]["options"]["served_model"]["changes_answer"] is True  # what each backend declares
    assert backends["api"]["options"]["concurrency"]["changes_answer"] is False
    assert "token" not in backends["api"]["options"] and backends["local"]["options"]["strategy"]["default"] == "prefix"


def _assert_one_line_error(result, *needles):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("args,needles", [
    (["classify", "   "], ["empty"]),
    (["classify", "hi", "--policy", "nope"], ["unknown policy", "toxic_simple"]),
    (["classify", "hi", "--backend", "nope"], ["unknown backend", "api, local"]),
    (["classify", "hi", "--model", "nope"], ["unknown model", "smollm2-135m"]),
    (["classify", "hi", "--backend", "api", "--model", "gpt-oss-20b", "--provider", "nope"], ["unknown provider", "groq"]),
    (["classify", "hi", "--backend", "api", "--api-server", "remote"], ["--api-server"]),
    (["classify"], ["no text given"]),
    (["classify", "hi", "--backend", "api", "--model", "smollm2-135m", "--api-server", "none"], ["bundled model", "--api-server local"]),
    (["classify", "hi", "--backend", "api", "--model", "gpt-oss-20b"], ["need a Hugging Face token", "HF_TOKEN"]),
    (["policies", "show", "nope"], ["unknown policy"]),
])
def test_bad_input_is_one_line_without_traceback(cli, args, needles):
    _assert_one_line_error(cli(*args), *needles)


def test_offline_hub_is_named_and_token_not_echoed(cli, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_SENTINELtoken1234567890")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = cli("classify", "hi", "--backend", "api", "--model", "gpt-oss-20b")
    _assert_one_line_error(result, "HF_HUB_OFFLINE=1 blocks Inference Providers")
    assert "SENTINEL" not in result.output


def test_non_utf8_input_file(cli, tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes("caf\xe9 idiot".encode("latin-1"))
    _assert_one_line_error(cli("classify", "--file", str(path), "--backend", "local"), "not UTF-8", "iconv")


def test_broken_policy_file_from_cli(cli, tmp_path):
    path = tmp_path / "p.md"
    path.write_text("+++\n[categories]\na = 0\nb = 2\n+++\n## INSTRUCTIONS\nx\n", encoding="utf-8")
    _assert_one_line_error(cli("classify", "hi", "--policy", str(path)), "category 'b' maps to 2", "0 or 1")


def test_unreachable_base_url_fails_fast_naming_it(cli):
    result = cli("classify", "hi", "--backend", "api", "--base-url", "http://127.0.0.1:9")
    _assert_one_line_error(result, "cannot reach", "http://127.0.0.1:9/v1")


def test_debug_env_shows_traceback(cli, monkeypatch):
    monkeypatch.setenv("TOXCMP_DEBUG", "1")
    result = cli("classify", "hi", "--policy", "nope")
    assert result.exit_code != 0 and result.exception is not None  # raised, not swallowed


def test_cache_info_and_clear_on_empty_cache(cli, tmp_path):
    info = cli("cache", "info", "--json", "--cache-dir", str(tmp_path))
    assert info.exit_code == 0 and json.loads(info.stdout)["entries"] == 0
    cleared = cli("cache", "clear", "--cache-dir", str(tmp_path))
    assert cleared.exit_code == 0 and "removed 0" in cleared.output


def test_heavy_modules_not_imported_for_light_commands():
    import subprocess
    import sys

    code = ("import sys; from typer.testing import CliRunner; from toxcmp.cli.app import app; "
            "r = CliRunner().invoke(app, ['policies', 'list']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_groups_options_shows_defaults_and_no_bool_metavars(cli):
    text = cli("compare", "--help", env={"COLUMNS": "200"}).output
    for panel in ("Model and policy", "Data", "Backends and verdict", "API backend", "Local backend", "Output and cache"):
        assert f"─ {panel} ─" in text, panel
    assert [line for line in text.splitlines() if "<bool>" in line and "--help" not in line] == []
    assert "default: 64" in text and "default: low" in text
    classify = cli("classify", "--help", env={"COLUMNS": "200"}).output
    assert [line for line in classify.splitlines() if "<bool>" in line and "--help" not in line] == []
