"""The prepared GPU check (`scripts/gpu_check.sh`): the local backend's three strategies on one CUDA GPU.

For the gpt-oss-shaped random model and SmolLM2, in fp32 and bf16: examples/s of naive / batched / prefix, how many
outputs are token-identical to naive (fp32 must be all of them; bf16 reports the share and, for each mismatch, the
first divergent token position), prefix against batched (fp32 prefix must not be slower), the memory-aware batch
size, peak GPU memory, and a forced OOM (a tiny memory cap) that must split the batch and recover. One JSON object
per line, a verdict line, and one JSON file of results. Without CUDA it says so and runs only the fp32 identity check of the gpt-oss-shaped model on the CPU, so CI proves
the script is not broken.
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


def check(model: str, dtype: str, texts: list[str], max_new_tokens: int, device: str = "cuda") -> dict:
    import torch

    from toxcmp.backends import BackendConfig, local_prefixes
    from toxcmp.backends.local import LocalBackend
    from toxcmp.backends.local_batches import auto_batch_size
    from toxcmp.backends.local_model import LocalModelCache
    from toxcmp.config import GenerationConfig
    from toxcmp.domain.models import resolve_model
    from toxcmp.domain.policies import load_policy
    from toxcmp.domain.prompting import build_request

    cuda = device == "cuda"
    spec = resolve_model(model)
    generation = GenerationConfig.from_defaults(max_new_tokens=max_new_tokens)
    requests = [build_request(load_policy("toxic_chat_claude_1"), t, spec, generation) for t in texts]
    out: dict = {"model": model, "dtype": dtype, "device": device, "rows": len(texts)}
    tokens: dict[str, list[list[int]]] = {}
    for strategy in ("naive", "batched", "prefix"):
        backend = LocalBackend(BackendConfig(device=device, dtype=dtype, strategy=strategy))
        loaded = backend.load(spec)
        local_prefixes.forget()  # the timed run computes its own shared prefix
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        answers = backend.generate(requests)
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        errors = [a.error for a in answers if a.error]
        tokens[strategy] = [loaded.tokenizer(a.raw_text, add_special_tokens=False)["input_ids"] for a in answers]
        out[strategy] = {"examples_per_s": round(len(texts) / elapsed, 3), "errors": len(errors),
                         "first_error": errors[0] if errors else None,
                         "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
                         "used": sorted({a.extra.get("strategy", strategy) for a in answers})}
        if strategy == "naive":
            prompt_tokens = max(len(loaded.tokenizer(backend.render(r))["input_ids"]) for r in requests)
            out["auto_batch_size"] = auto_batch_size(loaded, prompt_tokens + max_new_tokens, device)
    for strategy in ("batched", "prefix"):
        diverge = [first_divergence(x, y) for x, y in zip(tokens[strategy], tokens["naive"])]
        out[strategy]["identical_to_naive"] = sum(d is None for d in diverge)
        out[strategy]["first_divergent_positions"] = [d for d in diverge if d is not None][:10]
        out[strategy]["speedup_vs_naive"] = round(out[strategy]["examples_per_s"] / out["naive"]["examples_per_s"], 2)
    out["prefix_vs_batched"] = round(out["prefix"]["examples_per_s"] / out["batched"]["examples_per_s"], 2)
    LocalModelCache.clear()  # the next dtype starts from free memory
    return out


def forced_oom(texts: list[str], naive_tokens: int = 16, model: str = "smollm2-135m", headroom_mb: int = 64) -> dict:
    """Cap this process's GPU memory to the weights plus a sliver, run a large batch: the backend must split and
    recover."""
    import torch

    from toxcmp.backends import BackendConfig
    from toxcmp.backends.local import LocalBackend
    from toxcmp.backends.local_model import LocalModelCache
    from toxcmp.config import GenerationConfig
    from toxcmp.domain.models import resolve_model
    from toxcmp.domain.policies import load_policy
    from toxcmp.domain.prompting import build_request

    spec = resolve_model(model)
    requests = [build_request(load_policy("toxic_chat_claude_1"), t, spec,
                              GenerationConfig.from_defaults(max_new_tokens=naive_tokens)) for t in texts]
    backend = LocalBackend(BackendConfig(device="cuda", dtype="float32", strategy="batched", batch_size=str(len(texts))))
    backend.load(spec)
    used = torch.cuda.memory_allocated() / torch.cuda.get_device_properties(0).total_memory
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(0.99, used + headroom_mb * 2**20 / total))  # a full batch won't fit
    try:
        answers = backend.generate(requests)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        LocalModelCache.clear()
    return {"rows": len(texts), "splits": backend.stats.get("splits", 0),
            "errors": sum(1 for a in answers if a.error), "recovered": backend.stats.get("splits", 0) > 0,
            "first_error": next((a.error[:300] for a in answers if a.error), None),
            "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20)}


def _user_inputs(dataset: str) -> list[str]:
    """polars where installed; pyarrow / csv otherwise (a GPU image may lack polars)."""
    try:
        import polars as pl

        frame = pl.read_parquet(dataset) if dataset.endswith(".parquet") else pl.read_csv(dataset, infer_schema=False)
        return frame["user_input"].to_list()
    except ImportError:
        if dataset.endswith(".parquet"):
            import pyarrow.parquet as pq

            return pq.read_table(dataset, columns=["user_input"]).column("user_input").to_pylist()
        import csv

        with open(dataset, newline="", encoding="utf-8") as fh:
            return [row["user_input"] for row in csv.DictReader(fh)]


def _available(model: str) -> bool:
    from toxcmp.errors import BackendError
    from toxcmp.domain.models import bundled_gguf_path, resolve_model

    spec = resolve_model(model)
    if not spec.is_bundled:
        return True
    try:
        bundled_gguf_path(spec)
        return True
    except (BackendError, ImportError):
        return False


def main(argv: list[str] | None = None) -> int:
    import torch

    args = argv if argv is not None else sys.argv[1:]
    dataset = args[0] if args else "configs/samples/toxicchat0124_test.parquet"
    rows = int(args[1]) if len(args) > 1 else 32
    target = args[2] if len(args) > 2 else "gpu_check.json"
    texts = [t[:600] for t in _user_inputs(dataset)[:rows]]
    results: dict = {"cuda": torch.cuda.is_available(), "checks": []}
    ok = True
    if not torch.cuda.is_available():
        print("no CUDA device: skipping the CUDA checks (bf16, peak memory, forced OOM); running the fp32 identity "
              "check of the gpt-oss-shaped model on the CPU only", flush=True)
        result = check("gpt-oss-shaped", "float32", texts[:2], 8, device="cpu")
        results["checks"].append(result)
        print(json.dumps(result), flush=True)
        ok = all(result[s]["identical_to_naive"] == len(texts[:2]) and not result[s]["errors"] for s in ("batched", "prefix"))
    else:
        for model in ("gpt-oss-shaped", "smollm2-135m"):
            if not _available(model):
                results["checks"].append({"model": model, "skipped": "its bundled weights are not installed here"})
                print(json.dumps(results["checks"][-1]), flush=True)
                continue
            for dtype in ("float32", "bfloat16"):
                result = check(model, dtype, texts, 32)
                results["checks"].append(result)
                print(json.dumps(result), flush=True)
                if dtype == "float32":
                    same = all(result[s]["identical_to_naive"] == len(texts) and not result[s]["errors"]
                               for s in ("batched", "prefix"))
                    results.setdefault("parts", {})[f"{model} fp32 token identity"] = same
                    ok &= same
                    # issue 25: on an H200 prefix ran 11–13× naive and batched 12–14×; prefix must not lose
                    not_slower = result["prefix_vs_batched"] >= 1.0
                    results["parts"][f"{model} fp32 prefix not slower than batched"] = not_slower
                    ok &= not_slower
        oom_model = "smollm2-135m" if _available("smollm2-135m") else "gpt-oss-shaped"
        # the cap: weights + a sliver that one row fits in and 16 do not (the gpt-oss-shaped model's sinks attention
        # holds heads × seq² scores per row: ~250 MB at these prompt lengths, ~3.9 GB for 16 rows, measured on an H200)
        headroom = 64 if oom_model == "smollm2-135m" else 1024
        results["forced_oom"] = {"model": oom_model, "headroom_mb": headroom,
                                 **forced_oom(texts[:16], model=oom_model, headroom_mb=headroom)}
        print(json.dumps({"forced_oom": results["forced_oom"]}), flush=True)
        recovered = results["forced_oom"]["recovered"] and not results["forced_oom"]["errors"]
        results.setdefault("parts", {})["forced OOM (split and recover, no row lost)"] = bool(recovered)
        ok &= recovered
    results["ok"] = bool(ok)
    with open(target, "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=2)
    failed = [name for name, good in results.get("parts", {}).items() if not good]
    print(("PASS" if ok else "FAIL") + ": " + ("; ".join(failed) + " failed" if failed else
          "fp32 prefix and batched token-identical to naive" + ("; forced OOM split and recovered" if "forced_oom" in results else ""))
          + f"; results in {target}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
