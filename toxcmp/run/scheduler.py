"""Every arm at its own pace (issue 22 item 7): each lane — one arm, or the arms that compete for this machine —
is a worker that feeds its backends the rows in order, window by window, the cache in front (`run_requests`),
never waiting for another lane. A row is complete when every slot (arm × repeat) has answered it; the observer
gets it at that moment, in completion order (no reorder buffer: a lane runs in example order, so completions
come nearly in order, and the run's files are written in example order).

- Window: a lane of one arm whose backend paces its own requests (`BoundsInFlight`: the api backend's
  `concurrency()`, which its breaker then lowers or raises) gets `max(chunk_size, WINDOW_WAVES × concurrency)`
  rows per call, so it keeps its in-flight slots full; any other backend gets `chunk_size` rows per call and
  batches them as it likes. The arms of a shared lane take turns, `chunk_size` rows each, as before.
- Failure or an interrupt raised in a lane: the other lanes still answer the rows that can complete (those the
  failed lane's slots answered), then stop; every completed row is kept. Ctrl-C in the calling thread stops every
  lane at its next window. Answers of rows left incomplete are already in the cache, so a rerun resumes them.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from toxcmp.backends import Backend
from toxcmp.domain.prompting import ChatRequest
from toxcmp.domain.responses import ModelResponse
from toxcmp.run.cache import ResponseCache
from toxcmp.run.requests import run_requests

# A self-pacing arm gets this many rounds of its in-flight slots per call: only a window's last wave can leave
# slots idle, and a request's recorded latency (which includes its wait for a slot) stays as short as a chunk's.
WINDOW_WAVES = 2


@runtime_checkable
class BoundsInFlight(Protocol):
    """A backend that keeps its own number of requests in flight (and says how many it starts with)."""

    def concurrency(self) -> tuple[int, str]: ...


def plan_lanes(computes_here: Sequence[bool], concurrent: bool) -> list[list[int]]:
    """Which arms share a worker. `concurrent` off (`--sequential-sides`): one lane, the arms take turns. Else
    every arm has its own lane, except those that compute on this machine when there are two or more: they share
    one lane, so they never compute at the same time."""
    everyone = list(range(len(computes_here)))
    if not concurrent:
        return [everyone]
    here = [k for k in everyone if computes_here[k]]
    if len(here) < 2:
        return [[k] for k in everyone]
    return [here] + [[k] for k in everyone if k not in here]


def window_for(engine: Backend, chunk_size: int, shared: bool) -> int:
    """Rows per call for an arm (see the module doc)."""
    if shared or not isinstance(engine, BoundsInFlight):
        return chunk_size
    try:
        limit = int(engine.concurrency()[0])
    except Exception:  # noqa: BLE001 - a backend that cannot say yet batches by chunk
        return chunk_size
    return max(chunk_size, WINDOW_WAVES * limit)


Record = tuple[list[dict[str, Any]], dict[str, Any]]


class ArmScheduler:
    """Runs every lane to the end (`run`), then `flush` hands over the completed rows in example order.

    Per arm k: `engines[k]`, `labels[k]`, `requests[k]` (None: an empty text, answered at once with
    `empty(k)`); `slots` is every (arm, repeat) in the order `make_record` takes their answers."""

    def __init__(self, engines: Sequence[Backend], labels: Sequence[str],
                 requests: Sequence[Sequence[ChatRequest | None]], n_rows: int, slots: Sequence[tuple[int, int]],
                 lanes: Sequence[Sequence[int]], chunk_size: int, cache: ResponseCache | None,
                 stats: dict[str, dict[str, Any]], observer: Any,
                 make_record: Callable[[int, Sequence[ModelResponse]], Record],
                 empty: Callable[[int], ModelResponse]):
        self.engines, self.labels, self.requests, self.n = engines, labels, requests, n_rows
        self.slots, self.lanes = list(slots), [list(lane) for lane in lanes]
        self.cache, self.stats, self.observer, self.make_record, self.empty = cache, stats, observer, make_record, empty
        self.slot_of = {slot: s for s, slot in enumerate(self.slots)}
        self.repeats = {k: [r for kk, r in self.slots if kk == k] for k in range(len(engines))}
        self.lane_of = {s: li for li, lane in enumerate(self.lanes) for s, (k, _) in enumerate(self.slots)
                        if k in lane}
        self.windows = [window_for(engines[lane[0]], chunk_size, len(lane) > 1) for lane in self.lanes]
        self.answers: list[dict[int, ModelResponse]] = [{} for _ in self.slots]
        self.records: dict[int, Record] = {}
        self.lock = threading.Lock()
        self.done = 0
        self.closed = False  # no more rows are taken (Ctrl-C, or the rows were handed over)
        self.errors: list[BaseException] = []
        self.failed: set[int] = set()  # lanes that raised
        self.owed: dict[int, set[tuple[int, int]]] | None = None  # after a failure: lane → (slot, row) still owed
        self.busy = {k: 0.0 for k in range(len(engines))}  # seconds of finished calls that sent something
        self.call: dict[int, tuple[float, bool]] = {}  # arm → (its current call's start, whether it sent anything)

    # -- the run -------------------------------------------------------------------------------------------
    def run(self) -> None:
        """Every lane to its end. One lane runs in the calling thread; several run in threads of their own while
        this one waits in short joins (so it can take Ctrl-C, which stops them all). Re-raises a lane's error
        once the other lanes have answered what can still complete."""
        for k, requests in enumerate(self.requests):  # empty texts are never sent: an error response at once
            for i, request in enumerate(requests):
                if request is None:
                    for r in self.repeats[k]:
                        self._answer(self.slot_of[(k, r)], i, self.empty(k), None)
        if len(self.lanes) == 1:
            try:
                self._lane(0)
            finally:
                self.close()
            return
        threads = [threading.Thread(target=self._guarded, args=(li,), daemon=True, name=f"toxcmp-lane-{li}")
                   for li in range(len(self.lanes))]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.1)
        finally:
            self.close()  # also on Ctrl-C here: every lane stops at its next window
        if self.errors:
            raise self.errors[0]

    def close(self) -> None:
        with self.lock:
            self.closed = True

    def flush(self, records: list[Record]) -> None:
        """The completed rows, in example order; nothing arriving later is taken."""
        with self.lock:
            self.closed = True
            records.extend(self.records[i] for i in sorted(self.records))
            self.records.clear()

    # -- a lane ----------------------------------------------------------------------------------------------
    def _guarded(self, li: int) -> None:
        try:
            self._lane(li)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread, which reports it
            with self.lock:
                self.errors.append(exc)
                self.failed.add(li)
                self._settle_owed()

    def _settle_owed(self) -> None:
        """After a failure: only rows every failed slot answered can still complete; each other lane owes the
        answers of its slots for those rows, and stops once it has given them."""
        dead = [s for s, li in self.lane_of.items() if li in self.failed]
        can_complete = [i for i in range(self.n) if all(i in self.answers[s] for s in dead)]
        self.owed = {li: {(s, i) for s in range(len(self.slots)) if self.lane_of[s] == li for i in can_complete
                          if i not in self.answers[s]} if li not in self.failed else set()
                     for li in range(len(self.lanes))}

    def _lane(self, li: int) -> None:
        lane, window = self.lanes[li], self.windows[li]
        for lo in range(0, self.n, window):
            rows = range(lo, min(lo + window, self.n))
            for k in lane:
                for r in self.repeats[k]:
                    s = self.slot_of[(k, r)]
                    with self.lock:
                        if self.closed or (self.owed is not None and not self.owed[li]):
                            return
                        items = [i for i in rows if self.requests[k][i] is not None and i not in self.answers[s]
                                 and (self.owed is None or (s, i) in self.owed[li])]
                    if items:
                        self._call(k, r, s, items)

    def _call(self, k: int, r: int, s: int, items: list[int]) -> None:
        label = self.labels[k]
        repeat = f" (repeat {r + 1})" if r else ""
        self.observer.phase(f"{label}: answering {len(items)} example(s){repeat}", detail=True)
        with self.lock:
            self.call[k] = (time.perf_counter(), False)
        try:
            run_requests(self.engines[k], [self.requests[k][i] for i in items], self.cache,
                         on_response=lambda j, response: self._answer(s, items[j], response, k), repeat=r)
        finally:
            with self.lock:
                started, sent = self.call.pop(k)
                if sent:
                    self.busy[k] += time.perf_counter() - started
                    self.stats[label]["seconds"] = self.busy[k]

    def _answer(self, s: int, i: int, response: ModelResponse, k: int | None) -> None:
        with self.lock:
            if self.closed:
                return  # cached already (run_requests stores first); the run has handed its rows over
            if k is not None:  # a sent or cached request (not an empty text): the arm's throughput
                stat = self.stats[self.labels[k]]
                if response.cached:
                    stat["cached"] += 1
                else:
                    stat["calls"] += 1
                    started, _ = self.call[k]
                    self.call[k] = (started, True)
                    stat["seconds"] = self.busy[k] + time.perf_counter() - started
            self.answers[s][i] = response
            if self.owed is not None:
                self.owed[self.lane_of[s]].discard((s, i))
            if not all(i in answers for answers in self.answers):
                return
            record = self.make_record(i, [answers[i] for answers in self.answers])
            self.records[i] = record
            self.done += 1
            self.observer.row(record[1], self.done, self.stats)
