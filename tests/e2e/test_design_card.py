"""The design card's own commands, exactly as written, offline on a fresh cache (issue 17)."""

from __future__ import annotations

import json

import pytest

from toxcmp.domain.data import DEFAULT_DATASET, load


def test_offline_default_dataset_falls_back_to_the_bundled_test_split(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    frame, info = load(DEFAULT_DATASET, "toxicchat0124", "test")
    # ../shared/data/README.md: 2,853 human-annotated rows, 362 toxic
    assert frame.height == 2853 and int(frame["toxicity"].sum()) == 362
    assert info.source.startswith("bundled:") and "cannot be reached" in info.note and "CC BY-NC 4.0" in info.note


def test_unreachable_hub_falls_back_without_the_hub_clients_retries(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    frame, info = load(DEFAULT_DATASET, "toxicchat0124", "test")
    assert frame.height == 2853 and info.note


def test_other_hub_configs_do_not_fall_back_silently(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from toxcmp.errors import UsageError

    with pytest.raises(UsageError, match="cannot load"):
        load(DEFAULT_DATASET, "toxicchat1123", "train")


def test_explicit_api_server_none_refuses_before_loading_any_data(cli, tmp_path):
    result = cli("compare", "--api-server", "none", "--dataset", str(tmp_path / "missing.csv"),
                 "--output-dir", str(tmp_path / "out"))
    assert result.exit_code == 2 and "bundled model that no Inference Provider serves" in result.output
    assert "not found" not in result.output  # the dataset was never touched
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_three_design_card_commands_work_as_written(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    compared = cli("compare", "--policy", "toxic_simple", "--sample-size", "3")
    out = compared.output
    assert "bundled copy" in out and "starts a local transformers serve" in out, out
    # SmolLM2 does not follow the policy: no labels, so the honest verdict is inconclusive (exit 3), not PASS
    assert compared.exit_code == 3, out
    assert "INCONCLUSIVE" in out and "PASS" not in out
    (run_dir,) = (tmp_path / "outputs" / "backend_comparison").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["n"] == 3 and summary["metadata"]["dataset"]["dataset"].startswith("bundled:")

    classified = cli("classify", "You are a wonderful person.", "--backend", "local")
    assert classified.exit_code == 0, classified.output
    assert "toxcmp classify" in classified.output and "smollm2-135m" in classified.output

    cleared = cli("cache", "clear")
    assert cleared.exit_code == 0 and "removed" in cleared.output
    info = cli("cache", "info", "--json")
    assert json.loads(info.stdout)["entries"] == 0
