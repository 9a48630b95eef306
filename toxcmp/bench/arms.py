"""`toxcmp bench arms`: do arms proceed independently? Two or three loopback providers, each slow for a different
third of the run (provider A for the first, B for the second, …; a rate-limit episode, a cold start), compared
all together against each one run alone, in the same process (issue 22 item 7).

"Alone" is the same `compare` with that provider beside a steady loopback provider (a comparison needs two arms;
the steady one always answers at the fast delay, so it never holds the other back), so both measurements pay the
same per-run and per-request costs. With every arm at
its own pace the together run takes as long as the slowest arm alone (ratio 1); when every chunk of rows waits
for the slowest arm, each provider's slow third stalls the others too."""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from toxcmp.backends import BackendConfig
from toxcmp.bench.result import BenchResult
from toxcmp.testing.fake_server import FakeChatServer, Reply, completion

MODEL = "toxcmp-bench/fake-classifier"
NAMES = "ABC"


@dataclass(frozen=True)
class ArmsBenchResult(BenchResult):
    providers: int
    rows: int
    chunk_size: int
    concurrency: int  # every provider's --concurrency
    phase_s: float  # each provider is slow for one phase of this length, in turn
    fast_s: float  # seconds per request outside a provider's slow phase (and the steady partner's, always)
    slow_s: float  # ... and inside it
    repeat: int  # each measurement is the best of this many runs
    alone_s: dict[str, float]  # each provider run alone (beside the steady partner)
    slowest_alone_s: float
    together_s: float  # every provider in one run
    ratio: float  # together / slowest alone
    goal: float
    max_in_flight: dict[str, int]  # per provider, the most requests it had at once in the together runs
    concurrency_ok: bool  # every provider, in every run, reached exactly its --concurrency in flight
    complete: bool  # every run complete, no row with an error
    scheduling: str
    note: str = field(default=("providers: loopback OpenAI-compatible fake servers (no model runs), each with a "
                               "per-request delay that depends on the time since its first request; 'alone' is the "
                               "provider beside a steady partner (always the fast delay); no response cache; one "
                               "process for every run"))


def phased_latency(k: int, phase_s: float, fast_s: float, slow_s: float) -> Callable[[float], float]:
    """Provider k's delay: `slow_s` during [k·phase, (k+1)·phase) after its first request, else `fast_s`."""
    return lambda since: slow_s if k * phase_s <= since < (k + 1) * phase_s else fast_s


def default_rows(concurrency: int, phase_s: float, fast_s: float, slow_s: float) -> int:
    """Rows one provider alone answers in three phases, one of them slow: the together run spans every phase."""
    return max(8, round(concurrency * (phase_s / slow_s + 2 * phase_s / fast_s)))


def _label(payload) -> Reply:
    text = payload["messages"][-1]["content"]
    return Reply(body=completion("1" if "idiot" in text else "0", model=MODEL))


def bench_arms(providers: int = 2, rows: int | None = None, phase_s: float = 3.0, fast_s: float = 0.15,
               slow_s: float = 1.5, concurrency: int = 4, chunk_size: int = 16, repeat: int = 1,
               goal: float = 1.15, log=print) -> ArmsBenchResult:
    import polars as pl

    from toxcmp.run.config import CompareConfig
    from toxcmp.run.orchestrate import run_compare

    if providers not in (2, 3):
        raise ValueError("providers must be 2 or 3")
    n = rows or default_rows(concurrency, phase_s, fast_s, slow_s)
    names = NAMES[:providers]
    servers = {name: FakeChatServer(models=[MODEL], responder=_label,
                                    latency=phased_latency(k, phase_s, fast_s, slow_s))
               for k, name in enumerate(names)}
    steady = FakeChatServer(models=[MODEL], responder=_label, delay_s=fast_s)
    walls: dict[str, list[float]] = {}
    in_flight: dict[str, dict[str, int]] = {}
    complete, scheduling = True, ""
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        for server in (steady, *servers.values()):
            stack.enter_context(server)
        dataset = root / "rows.csv"
        pl.DataFrame({"conv_id": [f"r{i:05d}" for i in range(n)],
                      "user_input": [f"message {i}" + (" you idiot" if i % 5 == 0 else " hello") for i in range(n)],
                      "toxicity": [int(i % 5 == 0) for i in range(n)]}).write_csv(dataset)

        def run(mode: str, specs: str, used: list[str], rows_limit: int | None = None) -> None:
            nonlocal complete, scheduling
            for server in (steady, *servers.values()):
                server.reset()
            cfg = CompareConfig(model=MODEL, dataset=str(dataset), backends=specs, output_dir=root / mode,
                                backend=BackendConfig(concurrency=concurrency), use_cache=False, margins=False,
                                chunk_size=chunk_size, sample_size=rows_limit)
            t0 = time.perf_counter()
            result = run_compare(cfg)
            walls.setdefault(mode, []).append(time.perf_counter() - t0)
            complete = complete and result.status == "complete" and not result.summary["n_errors"]
            seen = in_flight.setdefault(mode, {})
            for name in used:
                seen[name] = max(seen.get(name, 0), servers[name].max_in_flight)
            scheduling = result.summary["metadata"]["scheduling"]["sides"]
            log(f"{mode:10s} {walls[mode][-1]:6.2f}s  max in flight "
                f"{ {name: servers[name].max_in_flight for name in used} }  status {result.status}")

        def spec(name: str, url: str) -> str:
            return f"api[base_url={url};label={name}]"

        run("warm-up", f"{spec('steady', steady.base_url)},{spec('steady2', steady.base_url)}", [],
            rows_limit=min(n, 16))  # imports, the first parquet and page writes: paid before any clock runs
        for _ in range(repeat):  # interleaved, so a busy spell on the machine is shared by every measurement
            for name in names:
                run(f"alone-{name}", f"{spec('steady', steady.base_url)},{spec(name, servers[name].base_url)}",
                    [name])
            run("together", ",".join(spec(name, servers[name].base_url) for name in names), list(names))
    alone = {name: round(min(walls[f"alone-{name}"]), 3) for name in names}
    slowest = max(alone.values())
    together = min(walls["together"])
    return ArmsBenchResult(providers=providers, rows=n, chunk_size=chunk_size, concurrency=concurrency,
                           phase_s=phase_s, fast_s=fast_s, slow_s=slow_s, repeat=repeat, alone_s=alone,
                           slowest_alone_s=slowest, together_s=round(together, 3), ratio=round(together / slowest, 3),
                           goal=goal, max_in_flight=in_flight["together"],
                           concurrency_ok=all(v == concurrency for mode, m in in_flight.items() for v in m.values()),
                           complete=complete, scheduling=scheduling)
