"""The work a run is about to do, before it does it: per arm, the requests it needs, how many the cache already
holds, and how long the rest takes at the speed this arm last ran on this machine (none: not measured yet).

Speeds are kept in `speeds.json` in the cache dir, one entry per arm configuration (backend, what makes its answers
its own, model and token budget), written at the end of every run that sent enough requests to measure."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from toxcmp.backends import AnswersKnownRows, Backend, identity
from toxcmp.domain.prompting import ChatRequest
from toxcmp.run.cache import ResponseCache
from toxcmp.run.requests import cache_keys

SPEEDS_FILE = "speeds.json"
MIN_MEASURED_CALLS = 4  # fewer sent requests than this measure start-up more than speed: not recorded
LONG_RUN_S = 600.0  # a terminal is asked before a run estimated at least this long …
LONG_UNMEASURED = 200  # … or before this many requests to arms whose speed is not known


@dataclass(frozen=True)
class ArmWork:
    label: str
    requests: int  # every repeat's
    cached: int
    seconds_per_request: float | None  # measured in an earlier run; None: not known
    measured_calls: int = 0
    replayed: bool = False  # a recording: nothing is computed

    @property
    def to_send(self) -> int:
        return self.requests - self.cached

    @property
    def estimate_s(self) -> float | None:
        if not self.to_send:
            return 0.0
        return None if self.seconds_per_request is None else self.to_send * self.seconds_per_request


@dataclass(frozen=True)
class PlannedWork:
    rows: int
    arms: tuple[ArmWork, ...]
    lanes: tuple[tuple[int, ...], ...]  # arms in one lane take turns; lanes run side by side

    @property
    def estimate_s(self) -> float | None:
        """The run's wall time: each lane's arms one after another, the lanes at once; None if an arm that has
        requests to send was never measured."""
        if any(a.estimate_s is None for a in self.arms):
            return None
        return max((sum(self.arms[k].estimate_s or 0.0 for k in lane) for lane in self.lanes), default=0.0)

    @property
    def unmeasured_requests(self) -> int:
        return sum(a.to_send for a in self.arms if a.estimate_s is None)

    @property
    def is_long(self) -> bool:
        estimate = self.estimate_s
        return (estimate is not None and estimate >= LONG_RUN_S) or self.unmeasured_requests >= LONG_UNMEASURED


def speed_key(engine: Backend, request: ChatRequest) -> str:
    what = {"backend": engine.name, "identity": identity(engine), "model": request.model.model_id,
            "max_new_tokens": request.generation.max_new_tokens,
            "reasoning_effort": request.generation.reasoning_effort}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:24]


def read_speeds(cache_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((Path(cache_dir) / SPEEDS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_speeds(cache_dir: Path, measured: dict[str, tuple[int, float]], when: str) -> None:
    """`measured`: speed key → (requests sent, busy seconds). Written atomically; a failure to write loses only
    the estimate, never the run."""
    speeds = read_speeds(cache_dir)
    for key, (calls, seconds) in measured.items():
        if calls >= MIN_MEASURED_CALLS and seconds > 0:
            speeds[key] = {"seconds_per_request": round(seconds / calls, 4), "calls": calls, "measured": when}
    path = Path(cache_dir) / SPEEDS_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(speeds, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


def plan_work(labels: Sequence[str], engines: Sequence[Backend], requests: Sequence[Sequence[ChatRequest | None]],
              repeats: int, cache: ResponseCache | None, lanes: Sequence[Sequence[int]], cache_dir: Path) -> PlannedWork:
    speeds = read_speeds(cache_dir)
    arms = []
    for label, engine, arm_requests in zip(labels, engines, requests):
        live = [r for r in arm_requests if r is not None]
        cached = 0
        if cache is not None and live:
            for repeat in range(repeats):
                cached += sum(cache.get(key) is not None for key in cache_keys(engine, live, repeat))
        if isinstance(engine, AnswersKnownRows):  # a recording: answers are read, not computed
            arms.append(ArmWork(label, len(live) * repeats, cached, 0.0, replayed=True))
            continue
        known = speeds.get(speed_key(engine, live[0])) if live else None
        arms.append(ArmWork(label, len(live) * repeats, cached,
                            known.get("seconds_per_request") if known else None,
                            known.get("calls", 0) if known else 0))
    rows = max((len(r) for r in requests), default=0)
    return PlannedWork(rows, tuple(arms), tuple(tuple(lane) for lane in lanes))


def duration_text(seconds: float) -> str:
    if seconds < 1:
        return "under a second"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _arm_line(arm: ArmWork) -> str:
    if arm.replayed:
        return f"  {arm.label}: {arm.requests} rows replayed from its recording (no model call)"
    if not arm.to_send:
        return f"  {arm.label}: {arm.requests} requests, all in the cache"
    head = f"  {arm.label}: {arm.requests} requests, {arm.cached} in the cache, {arm.to_send} to send"
    if arm.estimate_s is None:
        return f"{head}; speed not measured yet on this machine"
    return (f"{head}; ~{duration_text(arm.estimate_s)} at the pace of an earlier run "
            f"({arm.seconds_per_request:.2f} s of run time per request over {arm.measured_calls} requests)")


def plan_lines(work: PlannedWork) -> list[str]:
    """What the run is about to do, for a person about to wait for it."""
    estimate = work.estimate_s
    if estimate is None:
        total = (f"time unknown: {work.unmeasured_requests} requests go to arms never measured here "
                 "(the live view's ETA appears once rows arrive)")
    else:
        total = f"about {duration_text(estimate)} in all" if estimate >= 1 else "done in under a second"
    arms = f"{len(work.arms)} arm{'s' if len(work.arms) != 1 else ''}"
    return [f"plan: {work.rows} rows × {arms}; {total}", *(_arm_line(arm) for arm in work.arms)]
