"""How many torch threads the local model and a spawned `transformers serve` get.

Measured on a 2-core machine (SmolLM2-135M, CPU; 8–12 rows, 32 new tokens; `toxcmp bench busy` has the full run):

    local backend (batched)   1 thread 11.8 s idle, 15.9 s with one core busy elsewhere
                              2 threads 12.9 s idle, 28.4 s with one core busy elsewhere
    transformers serve (c1)   1 thread 19.7 s idle, 20.2 s with one core busy elsewhere
                              2 threads 12.3 s idle, 221 s with one core busy elsewhere

`toxcmp bench busy` (the issue's 20 rows, 64 new tokens, api + local with a spawned server, on a machine other
tenants were also using): 1 thread per side 134.7 s idle, 184.1 s with a one-core hog (1.37×); `--threads 2`
about 500 s "idle" (the other tenants were enough) and not finished after 16 minutes with the hog.

torch's intra-op threads wait for each other at every op: when one of them shares a core with another busy process
the whole team waits for it, so a thread team as wide as the machine collapses the moment anything else runs.
Hence: whichever side computes alone gets every usable core but one (never fewer than 1), and sides that compute at
the same time split that between them. `--threads N` gives each computing side N.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; containers and `taskset` narrow it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def alone_threads(cores: int | None = None) -> int:
    """Threads for the only computation on this machine: every usable core but one."""
    cores = usable_cores() if cores is None else cores
    return max(1, cores - 1)


@dataclass(frozen=True)
class ThreadPlan:
    per_side: tuple[int | None, ...]  # None: the side computes nothing here (remote, recorded)
    cores: int
    source: str  # "auto" or "--threads"
    why: str
    record: dict[str, Any] = field(default_factory=dict)


def plan_threads(computing: Sequence[bool], concurrent: bool, override: int | None = None,
                 cores: int | None = None) -> ThreadPlan:
    """Threads per side. `computing[k]`: side k runs a model on this machine (the local backend or a spawned
    server); `concurrent`: the sides run at the same time."""
    cores = usable_cores() if cores is None else cores
    n = sum(bool(c) for c in computing)
    if override is not None:
        each, source = override, "--threads"
        why = f"--threads {override} for each side that computes here"
    elif n <= 1:
        each, source = alone_threads(cores), "auto"
        why = f"one side computes here: {cores} usable core(s), one left for everything else"
    elif concurrent:
        each, source = max(1, (cores - 1) // n), "auto"
        why = f"{n} sides compute here at the same time: {cores} usable core(s) split between them, one left over"
    else:
        each, source = alone_threads(cores), "auto"
        why = f"{n} sides compute here one after the other: each gets {cores} usable core(s) but one"
    per_side = tuple(each if c else None for c in computing)
    return ThreadPlan(per_side, cores, source, why,
                      {"usable_cores": cores, "affinity": _affinity(), "source": source, "why": why})


def _affinity() -> list[int] | None:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def torch_threads_env(threads: int) -> dict[str, str]:
    """Environment for a child process that runs torch with `threads` intra-op threads."""
    value = str(max(1, int(threads)))
    return {"OMP_NUM_THREADS": value, "MKL_NUM_THREADS": value, "OPENBLAS_NUM_THREADS": value}
