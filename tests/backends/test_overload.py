"""A busy or overloaded server is never made busier (issue 12): in-flight count that fits the server, abandoned
requests closed (and, on a real `transformers serve`, no longer generated), timeouts that scale with the work, a
retry budget for the run, a circuit breaker, thread counts that never oversubscribe the machine.

Fast tests run against `toxcmp.testing.fake_server` (a real loopback HTTP server); the slow ones against a real
`transformers serve` and a real CPU hog. No assertion here is about speed: benchmarks (`toxcmp bench busy`,
`toxcmp bench sides`) measure that."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from toxcmp import phases
from toxcmp.backends import BackendConfig, get_backend
from toxcmp.backends.http import resilience as api_module
from toxcmp.backends.threads import plan_threads, torch_threads_env
from toxcmp.config import GenerationConfig
from toxcmp.testing.fake_server import FakeChatServer, Reply, completion
from toxcmp.domain.models import ModelSpec
from toxcmp.domain.policies import load_policy
from toxcmp.domain.prompting import build_request

# serial: timeouts, breaker pauses and CPU-seconds are measured against the clock; a real transformers serve and a
# CPU hog run here too
pytestmark = pytest.mark.serial

SPEC = ModelSpec(name="fake-model", model_id="fake-model", revision="test")
MODEL = "org/fake-classifier"


def _dataset(tmp_path, n=4) -> Path:
    path = tmp_path / "rows.csv"
    pl.DataFrame({"conv_id": [f"r{i}" for i in range(n)], "user_input": [f"text {i}" for i in range(n)],
                  "toxicity": [0] * n}).write_csv(path)
    return path


def _compare_args(tmp_path, a, b, n=4):
    return ["compare", "--model", MODEL, "--dataset", str(_dataset(tmp_path, n)), "--output-dir", str(tmp_path / "out"),
            "--backends", f"api[base_url={a.base_url}],api[base_url={b.base_url}]", "--json", "--no-cache",
            "--max-new-tokens", "1"]


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(api_module, "_RETRY_BASE_S", 0.01)


def _requests(n=1, max_new_tokens=16):
    policy = load_policy("toxic_simple")
    return [build_request(policy, f"text number {i}", SPEC, GenerationConfig(max_new_tokens=max_new_tokens))
            for i in range(n)]


class SpawnedStandIn:
    """What `local_api_server` returns, serving from a fake server: a spawned server that generates one at a time."""

    capacity = 1
    threads = 1

    def __init__(self, fake: FakeChatServer):
        self.fake = fake
        self.stopped = False

    base_url = property(lambda self: self.fake.base_url)
    served_model = "fake-model"

    def start(self):
        return self

    def stop(self):
        self.stopped = True


@pytest.fixture
def spawned(monkeypatch):
    """`api_server="local"` backends get a fake server in place of `transformers serve`."""
    from toxcmp.backends import server as server_module

    with FakeChatServer(models=["fake-model"], delay_s=0.05) as fake:
        stand_in = SpawnedStandIn(fake)
        monkeypatch.setattr(server_module, "local_api_server", lambda spec, cache_dir=None, threads=None: stand_in)
        yield fake


# -- 1. concurrency that fits the server ---------------------------------------------------------------------------

def test_a_spawned_server_gets_one_request_at_a_time_by_default(spawned):
    backend = get_backend("api", BackendConfig(api_server="local"))
    responses = backend.generate(_requests(6))
    assert all(r.ok for r in responses) and len(spawned.requests) == 6
    assert spawned.max_in_flight == 1
    assert backend.reliability()["concurrency"]["start"] == 1


def test_an_explicit_concurrency_still_wins_against_a_spawned_server(spawned):
    backend = get_backend("api", BackendConfig(api_server="local", concurrency=3))
    backend.generate(_requests(9))
    assert spawned.max_in_flight == 3
    assert backend.reliability()["concurrency"] == {"start": 3, "final": 3, "source": "--concurrency"}


def test_a_remote_server_keeps_eight_in_flight_by_default():
    with FakeChatServer(models=["fake-model"], delay_s=0.2) as server:
        backend = get_backend("api", BackendConfig(base_url=server.base_url))
        backend.generate(_requests(12))
    assert server.max_in_flight == 8


def test_the_cli_defaults_are_auto_not_numbers(cli, tmp_path, monkeypatch):
    """--concurrency, --timeout and --threads left out reach the backends as None (auto), so a backend can tell
    them from a user's explicit value."""
    from toxcmp.run import orchestrate as compare_module

    seen = []
    real = compare_module.run_compare
    monkeypatch.setattr(compare_module, "run_compare", lambda cfg, observer=None, **kw: seen.append(cfg) or real(cfg, observer, **kw))
    with FakeChatServer(models=[MODEL]) as a, FakeChatServer(models=[MODEL]) as b:
        for extra in ([], ["--concurrency", "8", "--timeout", "120", "--threads", "3"]):
            result = cli(*_compare_args(tmp_path, a, b), *extra)
            assert result.exit_code == 0, result.output
    auto, explicit = seen[0].backend, seen[1].backend
    assert (auto.concurrency, auto.timeout_s, auto.threads) == (None, None, None)
    assert (explicit.concurrency, explicit.timeout_s, explicit.threads) == (8, 120.0, 3)


# -- 2. no work for abandoned requests -------------------------------------------------------------------------------

def test_a_timed_out_stream_is_closed_so_the_server_stops_producing_it(spawned):
    """The client gives up mid-stream: the connection is closed and the server sees it (its next write fails)."""
    spawned.delay_s = 0.0
    spawned.script.append(Reply(body=completion(" ".join(["word"] * 40)), token_delay_s=0.1))
    backend = get_backend("api", BackendConfig(api_server="local", timeout_s=0.5, max_retries=0))
    [response] = backend.generate(_requests(1, max_new_tokens=40))
    assert not response.ok and "timed out" in response.error
    assert spawned.requests[-1]["stream"] is True
    deadline = time.monotonic() + 10
    while spawned.streams_abandoned == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert spawned.streams_abandoned == 1 and spawned.streams_finished == 0
    assert spawned.pieces_sent < 42  # it stopped well before the end of the answer


def test_a_streamed_answer_is_the_same_answer(spawned):
    spawned.script.append(Reply(body=completion("The verdict is 0 because it is fine.", reasoning="short thought")))
    backend = get_backend("api", BackendConfig(api_server="local"))
    [response] = backend.generate(_requests(1))
    assert response.ok and response.content == "The verdict is 0 because it is fine."
    assert response.reasoning == "short thought" and response.finish_reason == "stop"
    assert response.extra["streamed"] is True and response.extra["completion_tokens"] == 8


def test_a_stream_cut_off_without_a_finish_reason_is_an_error_not_an_answer(spawned):
    """What llama.cpp's server sends when it interrupts a request: the text so far, no finish reason, [DONE]."""
    body = completion("The verdict is")
    body["choices"][0]["finish_reason"] = None
    spawned.script.append(Reply(body=body))
    backend = get_backend("api", BackendConfig(api_server="local", max_retries=0))
    [response] = backend.generate(_requests(1))
    assert not response.ok and "without a finish reason" in response.error


# -- 3. timeouts and retries that cannot storm -----------------------------------------------------------------------

def test_adaptive_timeout_scales_with_max_new_tokens_and_has_a_floor():
    t = api_module.AdaptiveTimeout(None)
    assert t.seconds(64) == api_module.FIRST_TIMEOUT_S  # nothing measured yet: generous
    t.observe(latency_s=3.6, first_token_s=0.5, tokens=32, max_new_tokens=32)  # 0.1 s/token after the first
    assert t.seconds(64) == api_module.TIMEOUT_FLOOR_S  # 4 × (0.5 + 6.4) = 27.6 s, under the floor
    assert t.seconds(1000) == pytest.approx(4 * (0.5 + 1000 * 0.1))
    assert t.seconds(1000, timeouts_so_far=1) == pytest.approx(2 * 4 * (0.5 + 1000 * 0.1))
    assert api_module.AdaptiveTimeout(7.0).seconds(10_000) == 7.0  # a user's --timeout is used as is


def test_a_request_much_slower_than_measured_times_out_and_its_retry_gets_longer(monkeypatch):
    monkeypatch.setattr(api_module, "TIMEOUT_FLOOR_S", 0.5)
    with FakeChatServer(models=["fake-model"]) as server:
        backend = get_backend("api", BackendConfig(base_url=server.base_url))
        [first] = backend.generate(_requests(1, max_new_tokens=1))  # fast: measured
        assert first.ok and backend.timeouts.measured
        server.script.extend([Reply(body=completion("0"), delay_s=2.0), Reply(body=completion("0"), delay_s=0.5)])
        [slow] = backend.generate(_requests(1, max_new_tokens=1))
    # 2 s ran into the 0.5 s floor (the measured work is far less); the retry's limit doubled to 1 s, enough for 0.5 s
    assert slow.ok and slow.retries == 1 and slow.extra["timeouts"] == 1
    assert backend.stats["timeouts"] == 1 and backend.stats["breaker_trips"] == 0


def test_the_run_shares_one_retry_budget(monkeypatch):
    """Every request fails with a retryable 500: without a budget 20 requests × 4 retries = 100 sends."""
    with FakeChatServer(models=["fake-model"], default=Reply(status=500, body={"error": "boom"})) as server:
        backend = get_backend("api", BackendConfig(base_url=server.base_url, max_retries=4, concurrency=4))
        responses = backend.generate(_requests(20))
    allowed = api_module.RETRY_BUDGET_MIN + api_module.RETRY_BUDGET_RATIO * 20
    assert all(not r.ok for r in responses)
    assert len(server.requests) <= 20 + allowed
    assert backend.stats["retries"] <= allowed and backend.stats["retry_budget_refused"] > 0
    assert any("retry budget" in r.error for r in responses)


def test_piling_timeouts_trip_the_breaker_said_once_fewer_in_flight_and_quiet_pauses(monkeypatch):
    monkeypatch.setattr(api_module, "BREAKER_PAUSE_S", (0.5, 0.5))
    said: list[str] = []
    arrivals: list[float] = []

    def overloaded(payload):  # the first 8 requests hang (an overloaded server), then it recovers
        arrivals.append(time.monotonic())
        return Reply(body=completion("0"), delay_s=2.0 if len(arrivals) <= 8 else 0.0)

    with FakeChatServer(models=["fake-model"], responder=overloaded) as server, phases.handler(said.append):
        backend = get_backend("api", BackendConfig(base_url=server.base_url, concurrency=4, timeout_s=0.3))
        responses = backend.generate(_requests(8, max_new_tokens=1))
    breaker = backend.breaker
    assert breaker.trips >= 1 and backend.reliability()["breaker_trips"] == breaker.trips
    assert breaker.limit < 4 and backend.reliability()["concurrency"]["final"] < 4  # fewer in flight than at start
    assert len([m for m in said if "overloaded" in m]) == 1, said  # said once, however many trips
    for paused_from, paused_until in breaker.pauses:  # nothing new reached the server while the run paused
        assert not [t for t in arrivals if paused_from + 0.05 < t < paused_until]
    assert all(r.ok for r in responses)  # once the overload passed, every request was answered
    assert len(server.requests) <= 8 + api_module.RETRY_BUDGET_MIN + 8 * api_module.RETRY_BUDGET_RATIO


def test_timeouts_retries_and_trips_are_counted_in_the_summary(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(api_module, "TIMEOUT_FLOOR_S", 0.3)
    with FakeChatServer(models=[MODEL]) as a, FakeChatServer(models=[MODEL]) as b:
        a.script.extend([Reply(body=completion("0")), Reply(body=completion("0"), delay_s=1.5)])
        result = cli(*_compare_args(tmp_path, a, b), "--concurrency", "1")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    side_a, side_b = summary["backends"]["a"], summary["backends"]["b"]
    assert (side_a["timeouts"], side_a["retries"], side_a["breaker_trips"]) == (1, 1, 0)
    assert (side_b["timeouts"], side_b["retries"], side_b["breaker_trips"]) == (0, 0, 0)
    reliability = summary["metadata"]["reliability"]  # by side label
    assert reliability[side_a["label"]]["timeout"]["mode"] == "adaptive"
    assert reliability[side_b["label"]]["concurrency"] == {"start": 1, "final": 1, "source": "--concurrency"}


# -- 4. threads ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cores, computing, concurrent, expected", [
    (2, [True, True], False, (1, 1)),  # local + spawned server, one after the other: 1 thread, a core to spare
    (2, [True, True], True, (1, 1)),  # at the same time: 1 + 1
    (2, [False, True], True, (None, 1)),  # a remote side computes nothing here
    (1, [True, True], True, (1, 1)),
    (16, [True, False], False, (15, None)),
    (16, [True, True], True, (7, 7)),
    (16, [True, True], False, (15, 15)),
])
def test_thread_plan(cores, computing, concurrent, expected):
    plan = plan_threads(computing, concurrent, cores=cores)
    assert plan.per_side == expected and plan.source == "auto" and plan.record["usable_cores"] == cores


def test_thread_plan_never_oversubscribes_and_threads_override():
    for cores in range(1, 65):
        for computing in ([True], [True, True]):
            busy = [n for n in plan_threads(computing, True, cores=cores).per_side if n]
            assert sum(busy) <= max(len(busy), cores - 1)  # one core left over wherever there is one
    plan = plan_threads([True, False], False, override=3, cores=2)
    assert plan.per_side == (3, None) and plan.source == "--threads"


def test_the_local_backend_computes_with_its_threads():
    torch = pytest.importorskip("torch")
    from toxcmp.backends.local import LocalBackend

    before = torch.get_num_threads()
    try:
        for n in (1, 2):
            LocalBackend(BackendConfig(device="cpu", threads=n)).generate([])
            assert torch.get_num_threads() == n
    finally:
        torch.set_num_threads(before)


FAKE_SERVE = """
import http.server, json, os, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
with open(os.environ["FAKE_SERVE_OUT"], "w") as fh:
    json.dump({k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}, fh)
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


@pytest.mark.parametrize("threads", [1, 3])
def test_a_spawned_server_process_gets_its_thread_count(tmp_path, monkeypatch, threads):
    from toxcmp.backends import server as server_module

    script = tmp_path / "serve.py"
    script.write_text(FAKE_SERVE)
    monkeypatch.setattr(server_module, "_transformers_cli", lambda: [sys.executable, str(script)])
    monkeypatch.setenv("FAKE_SERVE_OUT", str(tmp_path / "env.json"))
    with server_module.LocalServer(str(tmp_path), threads=threads):
        pass
    seen = json.loads((tmp_path / "env.json").read_text())
    assert seen == {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    assert torch_threads_env(threads)["OMP_NUM_THREADS"] == str(threads)


def test_compare_plans_threads_for_the_sides_and_records_them(cli, tmp_path, monkeypatch):
    from toxcmp.backends import server as server_module
    from toxcmp.backends.threads import alone_threads, usable_cores

    got: list[int | None] = []
    with FakeChatServer(models=["fake-model"]) as fake, FakeChatServer(models=[MODEL]) as remote:
        monkeypatch.setattr(server_module, "local_api_server",
                            lambda spec, cache_dir=None, threads=None: got.append(threads) or SpawnedStandIn(fake))
        remote_side = f"api[base_url={remote.base_url}]"
        for spawned_side, extra, expected in (("api[api_server=local]", [], alone_threads()),
                                              ("api[api_server=local]", ["--threads", "3"], 3),
                                              ("api[api_server=local;threads=2]", ["--threads", "3"], 2)):
            args = _compare_args(tmp_path, fake, remote)
            args[args.index("--backends") + 1] = f"{spawned_side},{remote_side}"
            result = cli(*args, *extra)
            assert result.exit_code == 0, result.output
            meta = json.loads(result.stdout)["metadata"]["threads"]
            assert meta["sides"] == {spawned_side: expected, remote_side: None}
            assert meta["source"] == ("--threads" if extra else "auto") and meta["usable_cores"] == usable_cores()
    assert got == [alone_threads(), 3, 2]  # what the spawned server was started with: the arm's own option wins


# -- slow: a real transformers serve, a real CPU hog ----------------------------------------------------------------

def _cpu_seconds(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    total = sum(proc.cpu_times()[:2])
    for child in proc.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


@pytest.mark.slow
def test_an_abandoned_request_costs_the_real_server_no_more_cpu(models_dir):
    """A request the server would work on for minutes times out after 3 s: from then on `transformers serve`
    spends (next to) nothing, where generating cost it about a core."""
    from toxcmp.domain.models import resolve_model

    spec = resolve_model("smollm2-135m")
    policy = load_policy("toxic_simple")
    backend = get_backend("api", BackendConfig(api_server="local", timeout_s=3.0, max_retries=0, threads=1))
    try:
        [warm] = backend.generate([build_request(policy, "hello", spec, GenerationConfig(max_new_tokens=2))])
        assert warm.ok
        long = build_request(policy, "Write a very long story about a dragon.", spec,
                             GenerationConfig(max_new_tokens=2000))
        payload = backend._payload  # no EOS: the server would generate all 2000 tokens unless told to stop
        backend._payload = lambda r: dict(payload(r), extra_body={"generation_config": json.dumps({"do_sample": False})})
        pid = backend._server.process.pid
        before = _cpu_seconds(pid)
        [response] = backend.generate([long])
        during = _cpu_seconds(pid) - before
        time.sleep(0.5)  # the server notices the closed connection at its next token
        settled = _cpu_seconds(pid)
        time.sleep(3.0)
        after = _cpu_seconds(pid) - settled
    finally:
        backend.close()
    assert not response.ok and "timed out" in response.error
    assert during >= 1.0, f"the server was not generating ({during:.2f} CPU-s in the 3 s before the timeout)"
    assert after <= 0.1 * during, f"the server kept working: {after:.2f} CPU-s in 3 s after the client gave up"


@pytest.mark.slow
def test_a_cpu_hog_during_a_run_costs_no_timeout_no_retry_and_leaves_no_orphan(tmp_path, models_dir):
    """The issue's command, smaller for CI (8 rows, 32 new tokens), with a busy loop on one core the whole time."""
    import psutil

    from toxcmp.bench.busy import CpuHog

    from tests.conftest import TOXICCHAT_CSV, require_shared

    require_shared(TOXICCHAT_CSV)
    env = dict(os.environ, TOXCMP_CACHE_DIR=str(tmp_path / "cache"), TOXCMP_MODELS_DIR=str(models_dir),
               HF_HUB_OFFLINE="1")
    args = [sys.executable, "-m", "toxcmp", "compare", "--backends", "api,local", "--api-server", "local",
            "--model", "smollm2-135m", "--policy", "toxic_simple", "--dataset", str(TOXICCHAT_CSV),
            "--sample-size", "8", "--seed", "7", "--max-new-tokens", "32", "--output-dir", str(tmp_path / "out"),
            "--json"]
    children: set[int] = set()
    server_env: dict[str, str] = {}
    with CpuHog(cores=1, seconds=1200) as hog:
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 900  # a liveness bound, not a speed check: idle this run takes about a minute
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.terminate()
                proc.communicate(timeout=60)
                pytest.fail("the run had not finished after 15 minutes under a one-core hog (the issue's collapse)")
            for child in psutil.Process(proc.pid).children(recursive=True):
                children.add(child.pid)
                try:
                    if "serve" in child.cmdline() and not server_env:
                        server_env = child.environ()
                except psutil.NoSuchProcess:
                    pass
            time.sleep(0.5)
        out, err = proc.communicate()
        hog_ran_throughout = all(p.poll() is None for p in hog.procs)
    assert hog_ran_throughout
    assert proc.returncode == 3, err  # complete; SmolLM2 gives no labels: inconclusive
    summary = json.loads(out)
    assert summary["n"] == 8 and summary["n_errors"] == 0 and summary["status"] == "complete"
    api = summary["backends"]["a"]
    assert (api["timeouts"], api["retries"], api["breaker_trips"]) == (0, 0, 0)
    assert summary["metadata"]["reliability"]["api"]["requests"] == 8  # one send per row, nothing re-sent
    planned = summary["metadata"]["threads"]["sides"]
    assert server_env.get("OMP_NUM_THREADS") == str(planned["api"])
    time.sleep(1.0)
    alive = [pid for pid in children if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not alive, "a child of compare (its server) outlived the run"


def test_the_cpu_hog_stops_by_itself():
    from toxcmp.bench.busy import CpuHog

    with CpuHog(cores=1, seconds=0.5) as hog:
        assert all(p.poll() is None for p in hog.procs)  # busy
        hog.procs[0].wait(timeout=30)  # and done without being told
        assert hog.procs[0].returncode == 0
