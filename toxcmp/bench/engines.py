"""`toxcmp bench engines`: the CPU peer, toxcmp's local backend (naive, prefix) vs llama.cpp's server (sequential,
2 in flight) on the bundled GGUF (issue 15)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from toxcmp.backends import BackendConfig
from toxcmp.bench.result import BenchResult
from toxcmp.config import GenerationConfig


@dataclass(frozen=True)
class EnginesBenchResult(BenchResult):
    rows: int
    max_new_tokens: int
    policy: str
    threads: int
    eps: dict  # examples/s: local_naive, local_prefix, llamacpp_sequential, llamacpp_parallel
    ratios: dict  # local_prefix / llamacpp_sequential and the others, same process
    identical_prefix: int  # local prefix outputs token-identical to local naive
    identical_llamacpp: int  # llama.cpp final answers identical to local naive
    note: str = ("same rows, policy, greedy token budget and thread count; model load and server start-up not "
                 "timed; llama-cpp-python's server has no parallel slots (one request at a time under a lock): "
                 "'parallel' keeps 2 requests in flight, which it queues")


def bench_engines(dataset, rows: int = 24, max_new_tokens: int = 32, policy: str = "toxic_chat_claude_1",
                  model: str = "smollm2-135m", threads: int | None = None, log=print) -> EnginesBenchResult:
    """local naive vs local prefix vs llama.cpp's server (sequential, 2 in flight) on the same rows, one process."""
    import torch

    from toxcmp.backends.api import ApiBackend
    from toxcmp.backends.local import LocalBackend
    from pathlib import Path

    from toxcmp.domain.data import read_file
    from toxcmp.domain.models import resolve_model
    from toxcmp.domain.policies import load_policy
    from toxcmp.domain.prompting import build_request

    from toxcmp.backends.server import gguf_of, llamacpp_version

    texts = read_file(Path(dataset))["user_input"].head(rows).to_list()
    spec = resolve_model(model)
    llamacpp_version(), gguf_of(spec)  # before any timing: the server and a GGUF for it
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    generation = GenerationConfig.from_defaults(max_new_tokens=max_new_tokens)
    requests = [build_request(load_policy(policy), t, spec, generation) for t in texts]
    eps: dict[str, float] = {}
    outputs: dict[str, list] = {}

    def timed(name: str, backend) -> None:
        t0 = time.perf_counter()
        out = backend.generate(requests)
        elapsed = time.perf_counter() - t0
        errors = [r.error for r in out if r.error]
        if errors:
            raise RuntimeError(f"{name}: {len(errors)} example(s) failed, first: {errors[0]}")
        eps[name], outputs[name] = round(len(requests) / elapsed, 4), out
        log(f"{name:22s} {elapsed:7.2f}s  {len(requests) / elapsed:6.2f} ex/s")

    for strategy in ("naive", "prefix"):
        backend = LocalBackend(BackendConfig(strategy=strategy, threads=threads, device="cpu"))  # the CPU peer
        backend.load(spec)  # once per process; not timed
        timed(f"local_{strategy}", backend)
    warmup = [build_request(load_policy("toxic_simple"), "hello", spec, GenerationConfig.from_defaults(max_new_tokens=1))]
    for name, in_flight in (("llamacpp_sequential", 1), ("llamacpp_parallel", 2)):
        backend = ApiBackend(BackendConfig(api_server="llamacpp", threads=threads, concurrency=in_flight,
                                           max_retries=0, timeout_s=600))
        try:
            backend.start_server(requests)  # start-up and weight paging not timed; the warm-up uses another policy,
            backend.generate(warmup)  # so no policy prefix is left in llama.cpp's prompt cache
            timed(name, backend)
        finally:
            backend.close()
    base = eps["llamacpp_sequential"]
    ratios = {"local_prefix_vs_llamacpp": round(eps["local_prefix"] / base, 3),
              "local_naive_vs_llamacpp": round(eps["local_naive"] / base, 3),
              "local_prefix_vs_local_naive": round(eps["local_prefix"] / eps["local_naive"], 3),
              "llamacpp_parallel_vs_sequential": round(eps["llamacpp_parallel"] / base, 3)}
    naive = outputs["local_naive"]
    return EnginesBenchResult(
        rows=len(requests), max_new_tokens=max_new_tokens, policy=policy, threads=threads, eps=eps, ratios=ratios,
        identical_prefix=sum(a.raw_text == b.raw_text for a, b in zip(naive, outputs["local_prefix"])),
        identical_llamacpp=sum(a.content == b.content for a, b in zip(naive, outputs["llamacpp_sequential"])))
