"""The prepared GPU check runs its CPU-checkable parts here: the divergence helper and the refusal without CUDA.
(The CUDA path itself runs only where a GPU is lent: `scripts/gpu_check.sh`.)"""

from __future__ import annotations

import pytest

from toxcmp.bench.gpu_check import first_divergence

# not serial: nothing here is judged by the clock (the figures are printed, only checked to exist)


def test_first_divergence():
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 9, 3]) == 1
    assert first_divergence([1, 2], [1, 2, 3]) == 2


@pytest.mark.slow
def test_the_script_runs_on_the_cpu_and_writes_its_json(tmp_path):
    """CI has no GPU: the script says it skips the CUDA parts, runs the CPU identity check and writes its file."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import torch

    if torch.cuda.is_available():  # pragma: no cover - on a GPU machine the real check runs instead
        pytest.skip("a GPU is present: run scripts/gpu_check.sh itself")
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "gpu_check.json"
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(root / "scripts" / "gpu_check.sh"), "configs/samples/toxicchat0124_test_sample.csv",
                           "4", str(out)], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no CUDA device: skipping the CUDA checks" in proc.stdout and "PASS" in proc.stdout
    results = json.loads(out.read_text())
    assert results["ok"] and not results["cuda"] and results["checks"][0]["prefix"]["identical_to_naive"] == 2
    assert results["checks"][0]["prefix_vs_batched"] > 0  # recorded, judged only on a GPU


def test_the_gpt_oss_shaped_model_is_built_from_the_repo_config(tmp_path, monkeypatch):
    from toxcmp.domain.models import resolve_model

    monkeypatch.setenv("TOXCMP_MODELS_DIR", str(tmp_path))
    spec = resolve_model("gpt-oss-shaped")
    import json
    from pathlib import Path

    config = json.loads((Path(spec.local_path) / "config.json").read_text())
    assert config["model_type"] == "gpt_oss" and config["sliding_window"] == 128 and config["num_local_experts"] == 8
    assert set(config["layer_types"]) == {"sliding_attention", "full_attention"} and spec.harmony
