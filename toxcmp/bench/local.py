"""`toxcmp bench local`: the local backend's naive per-example generate vs batched vs batched + shared prefix KV."""

from __future__ import annotations

import time
from dataclasses import dataclass

from toxcmp.backends import BackendConfig, local_prefixes
from toxcmp.bench.result import BenchResult
from toxcmp.config import GenerationConfig


@dataclass(frozen=True)
class LocalBenchResult(BenchResult):
    rows: int
    max_new_tokens: int
    policy: str
    naive_eps: float
    batched_eps: float
    prefix_eps: float
    speedup: float  # prefix over naive
    batched_speedup: float
    identical: bool
    identical_batched: int
    identical_prefix: int
    peak_rss_mb: float
    matmul_peak_gflops: float
    mfu: dict
    prompt_tokens: int
    prefix_tokens: int
    threads: int


def matmul_peak_gflops(size: int = 1024, seconds: float = 1.0) -> float:
    """Best observed fp32 matmul throughput in this process: the MFU denominator."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    with torch.inference_mode():
        torch.mm(a, b)
        best = 0.0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = max(best, 2 * size**3 / (time.perf_counter() - t0) / 1e9)
    return best


def bench_local(csv_path, rows: int = 64, max_new_tokens: int = 32, policy: str = "toxic_chat_claude_1",
                model: str = "smollm2-135m", batch_size: str = "auto", log=print) -> LocalBenchResult:
    """naive (one generate per example, full prompt) vs batched vs batched + shared prefix KV, same process."""
    import resource

    import polars as pl
    import torch

    torch.manual_seed(0)
    from toxcmp.backends.local import LocalBackend
    from toxcmp.domain.models import resolve_model
    from toxcmp.domain.policies import load_policy
    from toxcmp.domain.prompting import build_request

    texts = pl.read_csv(csv_path, infer_schema=False)["user_input"].head(rows).to_list()
    spec = resolve_model(model)
    generation = GenerationConfig.from_defaults(max_new_tokens=max_new_tokens)
    requests = [build_request(load_policy(policy), t, spec, generation) for t in texts]
    outputs, eps, work = {}, {}, {}
    for strategy in ("naive", "batched", "prefix"):
        backend = LocalBackend(BackendConfig(strategy=strategy, batch_size=batch_size))
        loaded = backend.load(spec)  # loaded once per process (LocalModelCache); not timed
        local_prefixes.forget()  # the timed run computes its own shared prefix
        t0 = time.perf_counter()
        outputs[strategy] = backend.generate(requests)
        elapsed = time.perf_counter() - t0
        eps[strategy] = len(requests) / elapsed
        errors = [r.error for r in outputs[strategy] if r.error]
        if errors:
            raise RuntimeError(f"{strategy}: {len(errors)} example(s) failed, first: {errors[0]}")
        generated = sum(r.extra.get("completion_tokens", 0) for r in outputs[strategy])
        prompt = sum(r.extra.get("prompt_tokens", 0) for r in outputs[strategy])
        # useful tokens through the model: prompts (less the prefix tokens served from the cache) + generated
        computed = prompt - backend.stats["prefix_tokens_reused"] + backend.stats["prefix_tokens_computed"] + generated
        work[strategy] = (computed, elapsed)
        log(f"{strategy:8s} {elapsed:7.2f}s  {eps[strategy]:6.2f} ex/s  batches {backend.stats['batches']}")
    params = sum(p.numel() for p in loaded.model.parameters())
    peak = matmul_peak_gflops()
    mfu = {s: round(2 * params * tokens / seconds / 1e9 / peak, 4) for s, (tokens, seconds) in work.items()}
    same = {s: sum(a.raw_text == b.raw_text for a, b in zip(outputs["naive"], outputs[s])) for s in ("batched", "prefix")}
    prompt_tokens = sum(r.extra["prompt_tokens"] for r in outputs["naive"])
    prefix_tokens = backend.stats["prefix_tokens_computed"]
    return LocalBenchResult(
        rows=len(requests), max_new_tokens=max_new_tokens, policy=policy,
        naive_eps=round(eps["naive"], 4), batched_eps=round(eps["batched"], 4), prefix_eps=round(eps["prefix"], 4),
        speedup=round(eps["prefix"] / eps["naive"], 3), batched_speedup=round(eps["batched"] / eps["naive"], 3),
        identical=same["batched"] == same["prefix"] == len(requests), identical_batched=same["batched"],
        identical_prefix=same["prefix"], peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        matmul_peak_gflops=round(peak, 1), mfu=mfu, prompt_tokens=prompt_tokens, prefix_tokens=prefix_tokens,
        threads=torch.get_num_threads())
