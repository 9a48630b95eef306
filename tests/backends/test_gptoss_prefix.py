"""Shared-prefix reuse for gpt-oss (issue 16): sliding-window layers and attention sinks, exactly.

A tiny random GptOssForCausalLM with a window of 16 positions (the ~840-token policy prefix is ~50 windows long),
non-zero sinks and four layers (alternating window/full), fp32, on 24 real ToxicChat rows rendered with a Harmony
chat template: greedy output with the `prefix` strategy must be token-identical to `naive` (one `generate` per
example over the full prompt — transformers' own attention, the reference).
"""

from __future__ import annotations

import polars as pl
import pytest

from tests.conftest import TOXICCHAT_CSV, require_shared


@pytest.fixture(scope="module")
def rows() -> list[str]:
    frame = pl.read_csv(require_shared(TOXICCHAT_CSV))
    shortest = frame.sort(pl.col("user_input").str.len_chars()).head(4)["user_input"].to_list()  # e.g. "hi"
    return [t[:300] for t in frame["user_input"].head(20).to_list()] + shortest


def _run(model_dir, texts, strategy):
    from toxcmp.backends import BackendConfig
    from toxcmp.backends.local import LocalBackend
    from toxcmp.config import GenerationConfig
    from toxcmp.domain.models import resolve_model
    from toxcmp.domain.policies import load_policy
    from toxcmp.domain.prompting import build_request

    spec = resolve_model(str(model_dir))
    generation = GenerationConfig.from_defaults(max_new_tokens=8, reasoning_effort="low")
    requests = [build_request(load_policy("toxic_simple"), t, spec, generation) for t in texts]
    backend = LocalBackend(BackendConfig(strategy=strategy, dtype="float32"))
    out = backend.generate(requests)
    assert [r.error for r in out] == [None] * len(texts)
    return out, backend, requests


@pytest.mark.slow
@pytest.mark.parametrize("window", [16, 4096])  # the prefix many windows long, and shorter than one window
def test_prefix_is_token_identical_to_naive_with_windows_and_sinks(tmp_path, rows, window):
    from toxcmp.backends import shared_prefix

    from tests.helpers.tiny_gptoss import build_tiny_gptoss

    model_dir = build_tiny_gptoss(tmp_path / "model", sliding_window=window, layers=4, random_sinks=True)
    naive, _, _ = _run(model_dir, rows, "naive")
    prefix, backend, requests = _run(model_dir, rows, "prefix")
    loaded = backend.load(requests[0].model)
    assert shared_prefix.supported(loaded.model) and all(r.extra["strategy"] == "prefix" for r in prefix)
    assert backend.stats["prefix_hits"] == len(rows)
    tok = loaded.tokenizer
    n_prefix = backend.stats["prefix_tokens_computed"]
    tails = [len(tok(backend.render(r), add_special_tokens=False)["input_ids"]) - n_prefix for r in requests]
    if window == 16:
        assert n_prefix > 10 * window  # the shared prefix spans many windows
        assert min(tails) < window < max(tails)  # one batch mixes tails shorter and longer than the window
    assert [r.raw_text for r in prefix] == [r.raw_text for r in naive]
    sinks = [layer.self_attn.sinks for layer in loaded.model.model.layers]
    assert all(float(s.abs().max()) > 0.5 for s in sinks)  # the sinks are not a no-op
