"""`toxcmp bench engines`: the CPU peer at its best (issue 25) against toxcmp's local backend (naive, prefix), on
the bundled GGUF, the same rows and thread count, in one process:

- llama-cpp-python in process (`Llama.create_chat_completion`, which keeps the previous prompt's KV and reuses its
  longest common prefix: after the first row the policy prefix is never prefilled again);
- llama-cpp-python's HTTP server, one request at a time and 2 in flight (it serves one at a time under a lock);
- llama.cpp's own C++ `llama-server` with parallel slots and continuous batching (`-np N -cb`), where a binary
  is found (`TOXCMP_LLAMA_SERVER`, else `llama-server` on PATH, else beside this Python, where `make llama-server`
  puts what it builds from the llama.cpp sources the llama-cpp-python sdist vendors) — otherwise the result says why it did not run.

Ratios are against the fastest peer that ran."""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from toxcmp.backends import BackendConfig, local_prefixes
from toxcmp.backends.server import SpawnedServer
from toxcmp.bench.result import BenchResult
from toxcmp.config import GenerationConfig

# toxcmp's own runs: the reference, the default strategy, and the default strategy with PyTorch's own linear
# kernels (MKL) instead of oneDNN's packed ones — the lever of toxcmp.backends.cpu_linear, measured beside it.
LOCAL_RUNS = {"local_naive": {"strategy": "naive"}, "local_prefix": {"strategy": "prefix"},
              "local_prefix_torch_linear": {"strategy": "prefix", "linear": "torch"}}
PEERS = ("llamacpp_in_process", "llamacpp_sequential", "llamacpp_parallel", "llama_server")
N_CTX = 4096  # per sequence: the longest prompt of the sample and its answer fit


@dataclass(frozen=True)
class EnginesBenchResult(BenchResult):
    rows: int
    max_new_tokens: int
    policy: str
    threads: int
    eps: dict  # examples/s of every engine that ran: each of LOCAL_RUNS and each peer in PEERS
    ratios: dict  # local_prefix against the fastest peer and the others, same process
    fastest_peer: str
    identical_prefix: int  # local prefix outputs token-identical to local naive
    identical_prefix_torch_linear: int  # the same with PyTorch's own linear kernels
    identical_llamacpp: int  # llama.cpp server final answers identical to local naive
    identical_peers: dict  # each peer's final answers identical to local naive
    not_run: dict = field(default_factory=dict)  # peer → why it did not run
    llama_server_slots: int | None = None
    note: str = ("same rows, policy, greedy token budget and thread count; model load, server start-up and a "
                 "warm-up on another policy not timed; llama-cpp-python's server has no parallel slots (one "
                 "request at a time under a lock): its 'parallel' run keeps 2 requests in flight, which it queues")


class LlamaServer(SpawnedServer):
    """llama.cpp's own C++ server: parallel slots sharing one KV cache, continuous batching."""

    engine = "llama-server"
    health_path = "/health"

    def __init__(self, binary: str, gguf: str, alias: str, slots: int, threads: int, n_ctx: int = N_CTX):
        super().__init__(gguf, threads=threads)
        self.binary, self.alias, self.slots, self.n_ctx = binary, alias, slots, n_ctx

    @property
    def served_model(self) -> str:
        return self.alias

    @property
    def capacity(self) -> int:
        return self.slots

    def command(self) -> list[str]:
        threads = str(self.threads)
        return [self.binary, "--model", self.model, "--alias", self.alias, "--host", "127.0.0.1",
                "--port", str(self.port), "--threads", threads, "--threads-batch", threads,
                "--parallel", str(self.slots), "--cont-batching", "--ctx-size", str(self.n_ctx * self.slots)]


def llama_server_binary() -> tuple[str | None, str]:
    """The C++ server to run, or None and why there is none."""
    beside = Path(sys.executable).parent / "llama-server"  # where `make llama-server` puts it
    path = os.environ.get("TOXCMP_LLAMA_SERVER") or shutil.which("llama-server") or (str(beside) if beside.exists() else None)
    if path and os.access(path, os.X_OK):
        return path, ""
    if path:
        return None, f"TOXCMP_LLAMA_SERVER={path} is not an executable"
    return None, ("no llama-server binary (set TOXCMP_LLAMA_SERVER or put it on PATH; `make llama-server` builds "
                  "it from the llama.cpp sources in the llama-cpp-python sdist, ~15 min on 2 cores)")


def llamacpp_in_process(gguf: str, threads: int):
    """llama-cpp-python's `Llama` as a peer with a `generate(requests)`: greedy, no repeat penalty, one call per
    row in order (so each call reuses the previous prompt's KV up to their common prefix)."""
    from llama_cpp import Llama

    llm = Llama(model_path=gguf, n_ctx=N_CTX, n_threads=threads, n_threads_batch=threads, verbose=False)

    def generate(requests):
        out = []
        for r in requests:
            answer = llm.create_chat_completion(messages=r.chat_messages(), max_tokens=r.generation.max_new_tokens,
                                                temperature=0.0, repeat_penalty=1.0)
            text = answer["choices"][0]["message"].get("content") or ""
            out.append(SimpleNamespace(error=None, content=text, raw_text=text))
        return out

    return SimpleNamespace(generate=generate, close=llm.close)


def bench_engines(dataset, rows: int = 24, max_new_tokens: int = 32, policy: str = "toxic_chat_claude_1",
                  model: str = "smollm2-135m", threads: int | None = None, slots: int = 4,
                  log=print) -> EnginesBenchResult:
    """local naive and prefix against every CPU peer that can run here, on the same rows, one process."""
    import torch

    from toxcmp.backends.api import ApiBackend
    from toxcmp.backends.api_options import ApiOptions
    from toxcmp.backends.local import LocalBackend, LocalOptions
    from toxcmp.backends.server import gguf_of, llamacpp_version
    from toxcmp.domain.data import read_file
    from toxcmp.domain.models import resolve_model
    from toxcmp.domain.policies import load_policy
    from toxcmp.domain.prompting import build_request

    texts = read_file(Path(dataset))["user_input"].head(rows).to_list()
    spec = resolve_model(model)
    llamacpp_version()  # before any timing: llama-cpp-python and a GGUF for it
    gguf = str(gguf_of(spec))
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    generation = GenerationConfig.from_defaults(max_new_tokens=max_new_tokens)
    requests = [build_request(load_policy(policy), t, spec, generation) for t in texts]
    warmup = [build_request(load_policy("toxic_simple"), "hello", spec, GenerationConfig.from_defaults(max_new_tokens=1))]
    eps: dict[str, float] = {}
    outputs: dict[str, list] = {}
    not_run: dict[str, str] = {}

    def timed(name: str, backend) -> None:
        backend.generate(warmup)  # start-up and weight paging not timed; another policy, so no prefix is cached
        t0 = time.perf_counter()
        out = backend.generate(requests)
        elapsed = time.perf_counter() - t0
        errors = [r.error for r in out if r.error]
        if errors:
            raise RuntimeError(f"{name}: {len(errors)} example(s) failed, first: {errors[0]}")
        eps[name], outputs[name] = round(len(requests) / elapsed, 4), out
        log(f"{name:22s} {elapsed:7.2f}s  {len(requests) / elapsed:6.2f} ex/s")

    for name, options in LOCAL_RUNS.items():
        backend = LocalBackend(LocalOptions(threads=threads, device="cpu", **options))  # the CPU peer
        backend.load(spec)  # once per process; not timed
        local_prefixes.forget()  # the timed run computes its own shared prefix
        timed(name, backend)
    in_process = llamacpp_in_process(gguf, threads)
    try:
        timed("llamacpp_in_process", in_process)
    finally:
        in_process.close()  # its weights and KV are freed before the servers run
    for name, in_flight in (("llamacpp_sequential", 1), ("llamacpp_parallel", 2)):
        backend = ApiBackend(BackendConfig(api_server="llamacpp", threads=threads, concurrency=in_flight,
                                           max_retries=0, timeout_s=600))
        try:
            backend.start_server(requests)
            timed(name, backend)
        finally:
            backend.close()
    binary, why = llama_server_binary()
    if binary is None:
        not_run["llama_server"] = why
        log(f"{'llama_server':22s} not run: {why}")
    else:
        with LlamaServer(binary, gguf, spec.model_id, slots, threads) as server:
            backend = ApiBackend(ApiOptions.build({"base_url": server.base_url, "engine": "llama.cpp",
                                                   "concurrency": slots, "max_retries": 0, "timeout_s": 600}))
            try:
                timed("llama_server", backend)
            finally:
                backend.close()
    peers = {name: eps[name] for name in PEERS if name in eps}
    fastest = max(peers, key=peers.get)
    ratios = {"local_prefix_vs_fastest_peer": round(eps["local_prefix"] / peers[fastest], 3),
              **{f"local_prefix_vs_{name}": round(eps["local_prefix"] / rate, 3) for name, rate in peers.items()},
              "local_prefix_vs_llamacpp": round(eps["local_prefix"] / eps["llamacpp_sequential"], 3),
              "local_naive_vs_llamacpp": round(eps["local_naive"] / eps["llamacpp_sequential"], 3),
              "local_prefix_vs_local_naive": round(eps["local_prefix"] / eps["local_naive"], 3),
              "local_prefix_vs_torch_linear": round(eps["local_prefix"] / eps["local_prefix_torch_linear"], 3),
              "llamacpp_parallel_vs_sequential": round(eps["llamacpp_parallel"] / eps["llamacpp_sequential"], 3)}
    naive = outputs["local_naive"]
    same = {name: sum(a.content == b.content for a, b in zip(naive, outputs[name])) for name in peers}
    return EnginesBenchResult(
        rows=len(requests), max_new_tokens=max_new_tokens, policy=policy, threads=threads, eps=eps, ratios=ratios,
        fastest_peer=fastest,
        identical_prefix=sum(a.raw_text == b.raw_text for a, b in zip(naive, outputs["local_prefix"])),
        identical_prefix_torch_linear=sum(a.raw_text == b.raw_text
                                          for a, b in zip(naive, outputs["local_prefix_torch_linear"])),
        identical_llamacpp=same["llamacpp_sequential"], identical_peers=same, not_run=not_run,
        llama_server_slots=slots if "llama_server" in eps else None)
