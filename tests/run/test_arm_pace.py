"""Arms proceed independently (issue 22 item 7): a slow stretch of one arm never holds another back; arms that
compute on this machine still take turns; Ctrl-C keeps every completed row and the rerun asks only for what is
missing. Asserted on the order of events and on in-flight counts the loopback servers record, never on wall time."""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path

import polars as pl
import pytest

import toxcmp.backends as backends
from toxcmp.backends import BackendConfig
from toxcmp.backends.options import BackendOptions
from toxcmp.run.config import CompareConfig, SilentObserver
from toxcmp.run.orchestrate import run_compare
from toxcmp.run.scheduler import plan_lanes, window_for
from toxcmp.testing.fake_server import FakeChatServer, Reply, completion

from tests.helpers.doubles import RuleBackend

MODEL = "org/fake-classifier"
N = 12
GATE_S = 10.0  # a gate that is never opened gives up after this long; the test then fails on the flag, not the clock


def _row(payload) -> int:
    return int(payload["messages"][-1]["content"].split()[1])


@pytest.fixture
def dataset(tmp_path) -> Path:
    path = tmp_path / "rows.csv"
    pl.DataFrame({"conv_id": [f"r{i:02d}" for i in range(N)], "user_input": [f"message {i} hello" for i in range(N)],
                  "toxicity": [0] * N}).write_csv(path)
    return path


class Events(SilentObserver):
    """Completed rows in the order the run handed them over."""

    def __init__(self, on_row=None):
        self.rows: list[tuple[int, str]] = []
        self.on_row = on_row

    def row(self, rows, done, stats):  # noqa: D102
        self.rows.append((done, next(iter(rows.values()))["example_id"]))
        if self.on_row:
            self.on_row(done)


def _cfg(dataset, out, url_a, url_b, **extra) -> CompareConfig:
    return CompareConfig(model=MODEL, dataset=str(dataset), output_dir=out, chunk_size=4, margins=False,
                         backends=f"api[base_url={url_a};label=A],api[base_url={url_b};label=B]",
                         backend=BackendConfig(concurrency=2), **extra)


@pytest.mark.serial  # in-flight peaks on a loopback server: a busy second worker can keep one arm at 1
def test_a_slow_stretch_of_one_arm_does_not_hold_the_other_back(dataset, tmp_path):
    """A is slow on the first rows, B on the last ones. A's first answers wait until B has been asked for row 7
    (two chunks past A), and B's slow rows wait until A has been asked for the last row: each gate opens only if
    the other arm was not held back. In lockstep chunks both gates would time out."""
    order: list[tuple[str, int]] = []  # (event, row) in the order the servers saw them
    lock = threading.Lock()
    b_past_a, a_at_end = threading.Event(), threading.Event()
    held: list[str] = []
    # rows 0-1 of A and 8-9 of B each meet at a barrier: both must be in flight at once (--concurrency 2)
    a_pair, b_pair = threading.Barrier(2, timeout=GATE_S), threading.Barrier(2, timeout=GATE_S)

    def meet(barrier: threading.Barrier, who: str) -> None:
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            held.append(f"{who} never had two requests in flight")

    def note(event: str, row: int) -> None:
        with lock:
            order.append((event, row))

    def a(payload) -> Reply:
        i = _row(payload)
        note("A asked", i)
        if i == N - 1:
            a_at_end.set()
        if i in (0, 1):
            meet(a_pair, "A")
        if i < 4 and not b_past_a.wait(GATE_S):
            held.append(f"B never reached row 7 while A was on row {i}")
        return Reply(body=completion("0", model=MODEL))

    def b(payload) -> Reply:
        i = _row(payload)
        note("B asked", i)
        if i == 7:
            b_past_a.set()
        if i in (8, 9):
            meet(b_pair, "B")
        if i >= 8 and not a_at_end.wait(GATE_S):
            held.append(f"A never reached the last row while B was on row {i}")
        note("B answered", i)
        return Reply(body=completion("0", model=MODEL))

    events = Events(on_row=lambda done: note("row done", done))
    with FakeChatServer(models=[MODEL], responder=a) as server_a, FakeChatServer(models=[MODEL], responder=b) as server_b:
        result = run_compare(_cfg(dataset, tmp_path / "out", server_a.base_url, server_b.base_url), events)
        in_flight = (server_a.max_in_flight, server_b.max_in_flight)
    assert held == []
    assert result.status == "complete" and result.summary["n_errors"] == 0
    assert order.index(("B asked", 7)) < order.index(("A asked", 4))  # B ran past A's stalled first window
    assert order.index(("A asked", N - 1)) < order.index(("B answered", 8))  # ... and A past B's slow rows
    assert order.index(("row done", 8)) < order.index(("B answered", 8))  # rows 0-7 shown while B was stuck
    assert in_flight == (2, 2)  # each arm gets its --concurrency, not less
    # the observer got every row exactly once, the moment it completed, counted 1..N
    assert [done for done, _ in events.rows] == list(range(1, N + 1))
    assert sorted(eid for _, eid in events.rows) == [f"r{i:02d}" for i in range(N)]
    assert result.summary["metadata"]["scheduling"]["lanes"] == [["A"], ["B"]]
    frame = pl.read_parquet(result.run_dir / "pairs.parquet")
    assert frame["example_id"].to_list() == [f"r{i:02d}" for i in range(N)]  # files in example order


def _lanes_done(timeout: float = GATE_S) -> None:
    """Wait for lanes a Ctrl-C left finishing their last window in the background (their answers land in the
    cache)."""
    for t in [t for t in threading.enumerate() if t.name.startswith("toxcmp-lane-")]:
        t.join(timeout)


def test_ctrl_c_with_independent_arms_keeps_completed_rows_and_the_rerun_asks_only_for_the_rest(dataset, tmp_path):
    """A answers at once, B slowly: A runs ahead. Ctrl-C (in the calling thread) arrives while B is on row 6:
    every completed row is written; A's answers past B are in the cache, so the rerun asks A only for what it had
    not answered, and B only for what B had not."""
    asked: dict[str, list[int]] = {"A": [], "B": []}
    fired: list[int] = []

    def a(payload) -> Reply:
        asked["A"].append(_row(payload))
        return Reply(body=completion("0", model=MODEL))

    def b(payload) -> Reply:
        i = _row(payload)
        asked["B"].append(i)
        if i == 6 and not fired:  # the first run only
            fired.append(i)
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # Ctrl-C, delivered to the run
        return Reply(body=completion("0", model=MODEL), delay_s=0.05)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # what a terminal's Ctrl-C raises
    out = tmp_path / "out"
    events = Events()
    with FakeChatServer(models=[MODEL], responder=a) as server_a, FakeChatServer(models=[MODEL], responder=b) as server_b:
        try:
            first = run_compare(_cfg(dataset, out, server_a.base_url, server_b.base_url), events)
        finally:
            signal.signal(signal.SIGINT, previous)
        _lanes_done()
        assert first.status == "interrupted" and first.exit_code == 130
        frame = pl.read_parquet(first.run_dir / "pairs.parquet")
        written = frame["example_id"].to_list()
        assert written == sorted(eid for _, eid in events.rows)  # every completed row, none other
        assert 0 < len(written) < N and frame["a_error"].is_null().all() and frame["b_error"].is_null().all()
        assert len(set(asked["A"])) > len(written)  # A was not held back at B's pace
        assert max(asked["B"]) < 8  # Ctrl-C stopped B at the end of the window it was in (rows 4-7)
        first_asked = {k: set(v) for k, v in asked.items()}
        assert all(len(v) == len(set(v)) for v in asked.values())  # nothing asked twice
        for v in asked.values():
            v.clear()
        again = run_compare(_cfg(dataset, out, server_a.base_url, server_b.base_url))
    assert again.status == "complete" and again.summary["n"] == N and again.summary["n_errors"] == 0
    for arm in ("A", "B"):  # only what was missing, each row once
        assert sorted(asked[arm]) == sorted(set(range(N)) - first_asked[arm]), arm
    assert pl.read_parquet(again.run_dir / "pairs.parquet").height == N


def test_a_failing_arm_lets_the_others_finish_the_rows_it_answered(dataset, tmp_path):
    """B dies on row 5 (a fatal error, not a per-row one): A still answers rows 0-4, so those five rows are kept
    even though A was behind; nothing A can no longer complete is asked for after that."""
    gate = threading.Event()
    asked_a: list[int] = []

    def a(payload) -> Reply:
        i = _row(payload)
        asked_a.append(i)
        gate.wait(GATE_S)  # A is held until B has failed, then slower than B
        return Reply(body=completion("0", model=MODEL), delay_s=0.05)

    def b(payload) -> Reply:
        if _row(payload) >= 5:
            gate.set()
            return Reply(status=401, body={"error": "token revoked"})
        return Reply(body=completion("0", model=MODEL))

    with FakeChatServer(models=[MODEL], responder=a) as server_a, FakeChatServer(models=[MODEL], responder=b) as server_b:
        result = run_compare(_cfg(dataset, tmp_path / "out", server_a.base_url, server_b.base_url))
    assert result.status == "failed" and "authentication failed" in result.reason
    frame = pl.read_parquet(result.run_dir / "pairs.parquet")
    assert frame["example_id"].to_list() == [f"r{i:02d}" for i in range(5)]
    assert max(asked_a) < 8  # A stopped with its window: it was not sent on through rows that cannot complete


# -- arms that compute here take turns -----------------------------------------------------------------------
@dataclass(frozen=True)
class HereOptions(BackendOptions):
    def computes_here(self) -> bool:
        return True


class Meter:
    lock = threading.Lock()
    now = {"here": 0, "remote": 0}
    most = {"here": 0, "both": 0}


class HereBackend(RuleBackend):
    """Computes on this machine: counts how many such calls run at once."""

    Options = HereOptions
    calls = 0
    delay_s = 0.01
    kind = "here"

    def generate(self, requests, on_response=None):
        with Meter.lock:
            Meter.now[self.kind] += 1
            Meter.most["here"] = max(Meter.most["here"], Meter.now["here"])
            Meter.most["both"] = max(Meter.most["both"], int(Meter.now["here"] > 0 and Meter.now["remote"] > 0))
        try:
            return super().generate(requests, on_response)
        finally:
            with Meter.lock:
                Meter.now[self.kind] -= 1


class RemoteBackend(HereBackend):
    Options = BackendOptions
    calls = 0
    kind = "remote"


@pytest.fixture
def here_backends(monkeypatch):
    eps = [EntryPoint(name=name, value=f"tests.run.test_arm_pace:{cls}", group=backends.ENTRY_POINT_GROUP)
           for name, cls in (("here", "HereBackend"), ("remote", "RemoteBackend"))]
    monkeypatch.setattr(backends, "entry_points", lambda group: eps if group == backends.ENTRY_POINT_GROUP else [])
    Meter.now = {"here": 0, "remote": 0}
    Meter.most = {"here": 0, "both": 0}


def test_arms_that_compute_here_take_turns_while_a_remote_arm_runs_beside_them(here_backends, dataset, tmp_path):
    cfg = CompareConfig(backends="here,here[label=here2],remote", dataset=str(dataset), output_dir=tmp_path,
                        chunk_size=2, margins=False)
    result = run_compare(cfg)
    assert result.status == "complete" and result.summary["n"] == N
    assert Meter.most["here"] == 1  # never two at once
    assert Meter.most["both"] == 1  # the remote arm did not wait for them
    scheduling = result.summary["metadata"]["scheduling"]
    assert scheduling["sides"] == "sequential" and scheduling["lanes"] == [["here", "here2"], ["remote"]]


def test_lane_plan_and_windows():
    assert plan_lanes([False, False, False], True) == [[0], [1], [2]]
    assert plan_lanes([True, False, True], True) == [[0, 2], [1]]
    assert plan_lanes([True, False], True) == [[0], [1]]  # one arm computing here competes with nobody
    assert plan_lanes([False, False], False) == [[0, 1]]  # --sequential-sides

    class Paced:
        def concurrency(self):
            return 8, "--concurrency"

    assert window_for(Paced(), 4, shared=False) == 16  # two rounds of its in-flight slots
    assert window_for(Paced(), 64, shared=False) == 64
    assert window_for(Paced(), 4, shared=True) == 4  # arms taking turns take chunk-size turns
    assert window_for(object(), 4, shared=False) == 4  # a backend that batches as it likes gets chunk_size
