"""The prepared GPU check runs its CPU-checkable parts here: the divergence helper and the refusal without CUDA.
(The CUDA path itself runs only where a GPU is lent: `scripts/gpu_check.sh`.)"""

from __future__ import annotations

from toxcmp.gpu_check import first_divergence, main


def test_first_divergence():
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 9, 3]) == 1
    assert first_divergence([1, 2], [1, 2, 3]) == 2


def test_without_cuda_the_check_refuses_with_exit_2(capsys):
    import torch

    if torch.cuda.is_available():  # pragma: no cover - on a GPU machine the real check runs instead
        return
    assert main(["configs/samples/toxicchat0124_test_sample.csv", "2"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_the_gpt_oss_shaped_model_is_built_from_the_repo_config(tmp_path, monkeypatch):
    from toxcmp.models import resolve_model

    monkeypatch.setenv("TOXCMP_MODELS_DIR", str(tmp_path))
    spec = resolve_model("gpt-oss-shaped")
    import json
    from pathlib import Path

    config = json.loads((Path(spec.local_path) / "config.json").read_text())
    assert config["model_type"] == "gpt_oss" and config["sliding_window"] == 128 and config["num_local_experts"] == 8
    assert set(config["layer_types"]) == {"sliding_attention", "full_attention"} and spec.harmony
