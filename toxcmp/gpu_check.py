"""The prepared GPU check (`scripts/gpu_check.sh`): the local backend's three strategies on one CUDA GPU.

For the gpt-oss-shaped random model and SmolLM2, in fp32 and bf16: examples/s of naive / batched / prefix, how many
outputs are token-identical to naive (fp32 must be all of them; bf16 reports the share and, for each mismatch, the
first divergent token position), the memory-aware batch size, and peak GPU memory. One JSON object per line, then
a verdict line. Run where `torch.cuda.is_available()`; it takes a few minutes.
"""

from __future__ import annotations

import json
import sys
import time


def first_divergence(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def check(model: str, dtype: str, texts: list[str], max_new_tokens: int) -> dict:
    import torch

    from .backends import BackendConfig
    from .backends.local import LocalBackend, auto_batch_size
    from .config import GenerationConfig
    from .models import resolve_model
    from .policies import load_policy
    from .prompting import build_request

    spec = resolve_model(model)
    generation = GenerationConfig.from_defaults(max_new_tokens=max_new_tokens)
    requests = [build_request(load_policy("toxic_chat_claude_1"), t, spec, generation) for t in texts]
    out: dict = {"model": model, "dtype": dtype, "rows": len(texts)}
    tokens: dict[str, list[list[int]]] = {}
    for strategy in ("naive", "batched", "prefix"):
        backend = LocalBackend(BackendConfig(device="cuda", dtype=dtype, strategy=strategy))
        loaded = backend.load(spec)
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        answers = backend.generate(requests)
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        errors = [a.error for a in answers if a.error]
        tokens[strategy] = [loaded.tokenizer(a.raw_text, add_special_tokens=False)["input_ids"] for a in answers]
        out[strategy] = {"examples_per_s": round(len(texts) / elapsed, 3), "errors": len(errors),
                         "first_error": errors[0] if errors else None,
                         "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20),
                         "used": sorted({a.extra.get("strategy", strategy) for a in answers})}
        if strategy == "naive":
            prompt_tokens = max(len(loaded.tokenizer(backend.render(r))["input_ids"]) for r in requests)
            out["auto_batch_size"] = auto_batch_size(loaded, prompt_tokens + max_new_tokens, "cuda")
    for strategy in ("batched", "prefix"):
        diverge = [first_divergence(x, y) for x, y in zip(tokens[strategy], tokens["naive"])]
        out[strategy]["identical_to_naive"] = sum(d is None for d in diverge)
        out[strategy]["first_divergent_positions"] = [d for d in diverge if d is not None][:10]
        out[strategy]["speedup_vs_naive"] = round(out[strategy]["examples_per_s"] / out["naive"]["examples_per_s"], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    import polars as pl
    import torch

    args = argv if argv is not None else sys.argv[1:]
    dataset = args[0] if args else "configs/samples/toxicchat0124_test.parquet"
    rows = int(args[1]) if len(args) > 1 else 32
    if not torch.cuda.is_available():
        print("no CUDA device: run this on a machine with one GPU", file=sys.stderr)
        return 2
    frame = pl.read_parquet(dataset) if dataset.endswith(".parquet") else pl.read_csv(dataset, infer_schema=False)
    texts = [t[:600] for t in frame["user_input"].head(rows).to_list()]
    ok = True
    for model in ("gpt-oss-shaped", "smollm2-135m"):
        for dtype in ("float32", "bfloat16"):
            result = check(model, dtype, texts, 32)
            print(json.dumps(result), flush=True)
            if dtype == "float32":
                ok &= all(result[s]["identical_to_naive"] == len(texts) and not result[s]["errors"]
                          for s in ("batched", "prefix"))
    print(("PASS" if ok else "FAIL") + ": fp32 prefix and batched token-identical to naive on both models", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
