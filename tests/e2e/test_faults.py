"""Faults during a run: nothing finished is lost, partial runs say so, reruns recover from the cache.

The API side runs against `toxcmp.testing.fake_server` (a real loopback HTTP server with scripted failures: a real
`transformers serve` cannot be made to rate-limit or die on cue); Ctrl-C is tested on the real server (slow)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from toxcmp.run.cache import ResponseCache
from toxcmp.testing.fake_server import FakeChatServer, Reply, completion

# Two tests are serial: they restart a server on the port it had, which another worker could take meanwhile. The
# rest runs in the parallel pass: the storm's clock checks are lower bounds (it lasts at least 30 s, ~one retry a
# second), and the Ctrl-C and SIGKILL checks look only at the processes below the compare they started.

MODEL = "org/fake-classifier"
TEXTS = [f"message {i}" + (" you idiot" if i % 3 == 0 else " hello") for i in range(12)]


def label_for(payload) -> Reply:
    text = payload["messages"][-1]["content"]
    return Reply(body=completion("1" if "idiot" in text else "0", model=MODEL))


@pytest.fixture
def dataset(tmp_path) -> Path:
    path = tmp_path / "rows.csv"
    pl.DataFrame({"conv_id": [f"r{i:02d}" for i in range(len(TEXTS))], "user_input": TEXTS,
                  "toxicity": [1 if "idiot" in t else 0 for t in TEXTS]}).write_csv(path)
    return path


def _compare(dataset, out, url_a, url_b, *extra):
    return ["compare", "--model", MODEL, "--dataset", str(dataset), "--output-dir", str(out), "--chunk-size", "4",
            "--backends", f"api[base_url={url_a}],api[base_url={url_b}]", "--concurrency", "2", *extra]


def _rows(out: Path) -> pl.DataFrame:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return pl.read_parquet(run_dir / "pairs.parquet")


@pytest.mark.serial  # restarts a server on the port it had
def test_api_server_killed_mid_run_keeps_rows_marks_errors_and_rerun_resumes(cli, dataset, tmp_path):
    out = tmp_path / "out"
    served = []

    with FakeChatServer(models=[MODEL], responder=label_for) as b:
        a = FakeChatServer(models=[MODEL])

        def dying(payload):
            served.append(1)
            if len(served) == 6:
                threading.Thread(target=a.stop).start()  # the server dies after its sixth answer
            return label_for(payload)

        a.responder = dying
        port = a.port
        with a:
            first = cli(*_compare(dataset, out, a.base_url, b.base_url, "--max-retries", "1"))
        assert first.exit_code == 4, first.output
        assert "partial run" in first.output and "rerun the same command" in first.output
        rows = _rows(out)
        assert rows.height == 12  # every row is there: finished ones with answers, the rest with errors
        finished = rows.filter(pl.col("a_error").is_null())
        # up to two more may be answered while the server shuts down (two in flight, a 50 ms accept window)
        assert 4 <= finished.height <= 8 and finished["binary_match"].all()
        assert rows.filter(pl.col("a_error").is_not_null())["cause"].unique().to_list() == ["error"]
        assert "connection error" in rows.filter(pl.col("a_error").is_not_null())["a_error"][0]
        # the server comes back on the same address: only the failed rows are asked again
        with FakeChatServer(models=[MODEL], responder=label_for, port=port) as again:
            second = cli(*_compare(dataset, out, again.base_url, b.base_url, "--json"))
            assert second.exit_code == 0, second.output
            assert len(again.requests) == 12 - finished.height
        assert len(b.requests) == 12  # B's answers all came from the cache the second time
    rows = _rows(out)
    assert rows.height == 12 and rows["a_error"].is_null().all() and rows["example_id"].n_unique() == 12


@pytest.mark.serial  # restarts a server on the port it had
def test_timeouts_become_row_errors_then_resume(cli, dataset, tmp_path):
    out = tmp_path / "out"
    with FakeChatServer(models=[MODEL], responder=label_for) as b:
        slow = FakeChatServer(models=[MODEL], responder=lambda p: Reply(body=completion("0"), delay_s=3.0))
        port = slow.port
        with slow:
            first = cli(*_compare(dataset, out, slow.base_url, b.base_url, "--timeout", "0.3", "--max-retries", "1",
                                  "--sample-size", "4"))
        assert first.exit_code == 4
        rows = _rows(out)
        assert rows.height == 4 and rows["a_error"].str.contains("timed out").all()
        with FakeChatServer(models=[MODEL], responder=label_for, port=port) as fast:
            second = cli(*_compare(dataset, out, fast.base_url, b.base_url, "--timeout", "0.3", "--sample-size", "4"))
        assert second.exit_code == 0 and _rows(out)["a_error"].is_null().all()


@pytest.mark.slow
def test_a_30_second_429_storm_slows_the_run_and_loses_nothing(cli, dataset, tmp_path):
    storm_until: list[float] = []

    def storming(payload):
        if not storm_until:
            storm_until.append(time.monotonic() + 30)
        if time.monotonic() < storm_until[0]:
            return Reply(status=429, body={"error": "rate limited"}, headers={"Retry-After": "1"})
        return label_for(payload)

    with FakeChatServer(models=[MODEL], responder=storming) as a, FakeChatServer(models=[MODEL], responder=label_for) as b:
        started = time.monotonic()
        result = cli(*_compare(dataset, tmp_path / "out", a.base_url, b.base_url, "--json"))
        elapsed = time.monotonic() - started
    summary = json.loads(result.stdout)
    assert result.exit_code == 0, result.output
    assert elapsed >= 29 and summary["n"] == 12 and summary["n_errors"] == 0
    # two requests in flight, ~one retry a second each (~60); a busy second worker may stretch a cycle a little
    assert summary["backends"]["a"]["retries"] >= 2 * 20
    assert summary["binary_agreement"]["value"] == 1.0


@pytest.mark.parametrize("code, message", [(errno.ENOSPC, "No space left on device"),
                                           (errno.EROFS, "Read-only file system")])
def test_disk_full_or_read_only_at_write_is_clear_and_the_rerun_recovers(cli, dataset, tmp_path, monkeypatch,
                                                                         code, message):
    out = tmp_path / "out"

    def full(self, *args, **kwargs):
        raise OSError(code, message)

    with FakeChatServer(models=[MODEL], responder=label_for) as a, FakeChatServer(models=[MODEL], responder=label_for) as b:
        with monkeypatch.context() as m:
            m.setattr(pl.DataFrame, "write_parquet", full)
            first = cli(*_compare(dataset, out, a.base_url, b.base_url))
        assert first.exit_code == 4 and message in first.output
        assert "rerun the same command" in first.output and "Traceback" not in first.output
        (run_dir,) = list(out.iterdir())
        assert not (run_dir / "results.parquet").exists() and not list(run_dir.glob(".*tmp*"))
        calls = len(a.requests) + len(b.requests)
        second = cli(*_compare(dataset, out, a.base_url, b.base_url))
        assert second.exit_code == 0
        assert len(a.requests) + len(b.requests) == calls  # everything came from the cache
    assert _rows(out).height == 12


def test_two_compare_processes_sharing_one_cache(dataset, tmp_path):
    """Two real `toxcmp compare` processes, same cache dir, same rows, at the same time."""
    cache_dir = tmp_path / "shared-cache"
    env = dict(os.environ, TOXCMP_CACHE_DIR=str(cache_dir), HF_HUB_OFFLINE="1")
    big = tmp_path / "big.csv"
    pl.DataFrame({"conv_id": [f"x{i:03d}" for i in range(60)],
                  "user_input": [f"text {i}" + (" idiot" if i % 4 == 0 else "") for i in range(60)],
                  "toxicity": [int(i % 4 == 0) for i in range(60)]}).write_csv(big)
    with FakeChatServer(models=[MODEL], responder=label_for, delay_s=0.01) as a, \
            FakeChatServer(models=[MODEL], responder=label_for, delay_s=0.01) as b:
        procs = [subprocess.Popen([sys.executable, "-m", "toxcmp", *_compare(big, tmp_path / f"out{k}", a.base_url,
                                                                               b.base_url, "--quiet", "--concurrency", "4")],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for k in range(2)]
        outputs = [p.communicate(timeout=180)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        cache = ResponseCache(cache_dir)
        try:
            groups = cache.info()
            assert sum(g.entries for g in groups) == 120  # 60 rows × 2 endpoints, no duplicates, none lost
        finally:
            cache.close()
        before = len(a.requests) + len(b.requests)
        third = subprocess.run([sys.executable, "-m", "toxcmp", *_compare(big, tmp_path / "out3", a.base_url,
                                                                             b.base_url, "--quiet")],
                               env=env, capture_output=True, text=True, timeout=120)
        assert third.returncode == 0, third.stdout + third.stderr
        assert len(a.requests) + len(b.requests) == before
    for k in range(2):
        assert _rows(tmp_path / f"out{k}").height == 60


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("when", ["model-load", "mid-run"])
def test_ctrl_c_leaves_no_orphan_server_and_a_consistent_cache(tmp_path, when, models_dir):
    from toxcmp.config import configs_dir

    cache_dir = tmp_path / "cache"
    env = dict(os.environ, TOXCMP_CACHE_DIR=str(cache_dir), TOXCMP_MODELS_DIR=str(models_dir), HF_HUB_OFFLINE="1")
    sample = configs_dir() / "samples" / "toxicchat0124_test_sample.csv"
    args = [sys.executable, "-m", "toxcmp", "compare", "--model", "smollm2-135m", "--api-server", "local",
            "--dataset", str(sample), "--max-new-tokens", "8", "--chunk-size", "4", "--output-dir", str(tmp_path / "out")]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    servers: set[int] = set()
    children: set[int] = set()
    moment = False
    deadline = time.time() + 150
    while time.time() < deadline and proc.poll() is None:
        children.update(_descendants(proc.pid))
        serving = _serve_processes(proc.pid)
        servers.update(serving)
        if when == "model-load" and serving:
            # the server process exists and does not answer yet: it is loading the model
            moment = not any(_answers(port) for port in serving.values())
            if moment:
                break
        if when == "mid-run" and serving and list((tmp_path / "out").glob("*/results.parquet")) == [] and \
                cache_dir.exists() and _cache_entries(cache_dir) >= 2:
            moment = True
            break
        time.sleep(0.1)
    assert moment and proc.poll() is None, f"never caught the {when} moment: {proc.poll()=} {servers=}"
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, output  # Ctrl-C is exit 130 in both phases
    time.sleep(1.0)
    assert servers, "the run never spawned its transformers serve"
    assert not [p for p in children | servers if _alive(p)], "a child of compare (its server) outlived Ctrl-C"
    summary = json.loads(next((tmp_path / "out").glob("*/summary.json")).read_text())
    assert summary["metadata"]["status"] == "interrupted"
    if when == "model-load":
        assert summary["n"] == 0  # interrupted before the server answered anything
    if cache_dir.exists():
        cache = ResponseCache(cache_dir)
        try:
            for key in list(cache._cache.iterkeys()):  # every stored entry decodes
                assert cache.get(key) is not None
        finally:
            cache.close()


def _serve_processes(pid: int) -> dict[int, int]:
    """pid → port of every `transformers serve` below `pid`."""
    import psutil

    found = {}
    for child in _descendants(pid):
        try:
            cmd = psutil.Process(child).cmdline()
        except psutil.NoSuchProcess:
            continue
        if "serve" in cmd and "--port" in cmd:
            found[child] = int(cmd[cmd.index("--port") + 1])
    return found


def _answers(port: int) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _cache_entries(cache_dir: Path) -> int:
    try:
        cache = ResponseCache(cache_dir)
    except Exception:  # noqa: BLE001 - created concurrently by the child
        return 0
    try:
        return sum(g.entries for g in cache.info())
    finally:
        cache.close()


@pytest.mark.slow
def test_real_transformers_serve_killed_mid_run(tmp_path, models_dir):
    """SIGKILL the spawned `transformers serve` mid-run: finished rows kept, the rest are errors, exit 2;
    the rerun starts a new server and asks it only for what is missing."""
    import psutil

    from toxcmp.config import configs_dir

    cache_dir = tmp_path / "cache"
    env = dict(os.environ, TOXCMP_CACHE_DIR=str(cache_dir), TOXCMP_MODELS_DIR=str(models_dir), HF_HUB_OFFLINE="1")
    sample = configs_dir() / "samples" / "toxicchat0124_test_sample.csv"
    args = [sys.executable, "-m", "toxcmp", "compare", "--model", "smollm2-135m", "--api-server", "local",
            "--dataset", str(sample), "--sample-size", "10", "--max-new-tokens", "8", "--chunk-size", "10",
            "--concurrency", "1", "--max-retries", "1", "--output-dir", str(tmp_path / "out"), "--json"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and killed is None:
        if cache_dir.exists() and _cache_entries(cache_dir) >= 3:
            for child in psutil.Process(proc.pid).children(recursive=True):
                if "serve" in " ".join(child.cmdline()):
                    child.kill()
                    killed = child.pid
        time.sleep(0.2)
    out, err = proc.communicate(timeout=240)
    assert killed, "never saw the server answer"
    assert proc.returncode == 4, err
    summary = json.loads(out)
    assert summary["n"] == 10 and 3 <= summary["n"] - summary["n_errors"] < 10
    assert summary["causes"]["error"] == summary["n_errors"] and "partial run" in err
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 3, again.stderr  # complete; SmolLM2 gives no labels: inconclusive, never PASS
    resumed = json.loads(again.stdout)
    assert resumed["n_errors"] == 0 and resumed["binary_agreement"]["value"] == 1.0
    assert resumed["metadata"]["throughput"]["api"]["calls"] == summary["n_errors"]  # only what was missing
    assert resumed["metadata"]["throughput"]["local"]["calls"] == 0
