"""`toxcmp bench busy`: `compare --backends api,local --api-server local` idle and under a CPU hog (`CpuHog`),
in one process (issue 12)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from toxcmp.backends import BackendConfig
from toxcmp.bench.result import BenchResult
from toxcmp.config import GenerationConfig


HOG_CODE = "import time\nt = time.time()\nwhile time.time() - t < {seconds}: pass\n"


class CpuHog:
    """`with CpuHog(cores=1, seconds=600):` — `cores` processes that each keep one core busy and stop by themselves
    after `seconds` (also stopped when the block ends)."""

    def __init__(self, cores: int = 1, seconds: float = 600.0):
        self.cores, self.seconds = cores, seconds
        self.procs: list = []

    def __enter__(self) -> "CpuHog":
        import subprocess
        import sys

        self.procs = [subprocess.Popen([sys.executable, "-c", HOG_CODE.format(seconds=self.seconds)])
                      for _ in range(self.cores)]
        return self

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@dataclass(frozen=True)
class BusyBenchResult(BenchResult):
    command: str
    rows: int
    max_new_tokens: int
    idle_s: float
    hog_s: float
    ratio: float  # hog / idle wall time
    goal: float
    hog_cores: int
    usable_cores: int
    threads: dict  # the run's thread plan (provenance)
    scheduling: str
    counters: dict  # {"idle"|"hog": {label: {timeouts, retries, breaker_trips, errors, concurrency}}}
    complete: bool  # every row of both runs answered on both sides
    note: str = ("one process: the run idle, then the same run with a CPU hog (a busy loop that stops by itself) on "
                 "`hog_cores` core(s); no response cache; each run loads the local model and starts its server "
                 "(the bundled model is converted once, before timing)")


def bench_busy(dataset, rows: int = 20, seed: int = 7, max_new_tokens: int = 64, policy: str = "toxic_simple",
               model: str = "smollm2-135m", hog_cores: int = 1, threads: int | None = None, workdir=None,
               log=print) -> BusyBenchResult:
    """`compare --backends api,local --api-server local` idle and under a CPU hog, in one process."""
    import tempfile
    from contextlib import nullcontext
    from pathlib import Path

    from toxcmp.backends.local_model import LocalModelCache
    from toxcmp.backends.threads import usable_cores
    from toxcmp.run.config import CompareConfig
    from toxcmp.run.orchestrate import run_compare

    command = (f"toxcmp compare --backends api,local --api-server local --model {model} --policy {policy} "
               f"--dataset {dataset} --sample-size {rows} --seed {seed} --max-new-tokens {max_new_tokens}")
    from toxcmp.domain.models import materialize, resolve_model

    materialize(resolve_model(model))  # a bundled model's one-time conversion is not part of either run
    walls, counters, complete, meta = {}, {}, True, {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(workdir or tmp)
        for mode in ("idle", "hog"):
            LocalModelCache.clear()  # both runs pay the model load
            cfg = CompareConfig(policy=policy, model=model, dataset=str(dataset), sample_size=rows, seed=seed,
                                backends="api,local",
                                generation=GenerationConfig.from_defaults(max_new_tokens=max_new_tokens),
                                backend=BackendConfig(api_server="local", threads=threads),  # models: the usual cache
                                output_dir=root / mode, use_cache=False, command=command)
            hog = CpuHog(hog_cores, seconds=max(600.0, 4 * walls.get("idle", 300.0))) if mode == "hog" else nullcontext()
            with hog:
                t0 = time.perf_counter()
                result = run_compare(cfg)
                walls[mode] = time.perf_counter() - t0
            summary = result.summary
            meta = summary["metadata"]
            complete = complete and result.status == "complete" and not summary["n_errors"] and summary["n"] == rows
            counters[mode] = {b["label"]: {"timeouts": b.get("timeouts", 0), "retries": b["retries"],
                                           "breaker_trips": b.get("breaker_trips", 0), "errors": b["errors"],
                                           "concurrency": (meta.get("reliability", {}).get(b["label"]) or {}).get(
                                               "concurrency")}
                              for b in summary["backends"].values()}
            log(f"{mode:4s} {walls[mode]:7.1f}s  status {result.status}  errors {summary['n_errors']}  "
                f"{counters[mode]}")
    return BusyBenchResult(command=command, rows=rows, max_new_tokens=max_new_tokens, idle_s=round(walls["idle"], 2),
                           hog_s=round(walls["hog"], 2), ratio=round(walls["hog"] / walls["idle"], 3), goal=2.5,
                           hog_cores=hog_cores, usable_cores=usable_cores(), threads=meta.get("threads", {}),
                           scheduling=(meta.get("scheduling") or {}).get("sides", ""), counters=counters,
                           complete=complete)
