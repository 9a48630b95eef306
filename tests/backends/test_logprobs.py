"""Issue 24, step 1: an api arm asked for token log-probabilities (`--logprobs K`, arm key `logprobs=K`) sends
`logprobs: true, top_logprobs: K`, stores every token it gets back in tokens.parquet (one row per example × arm ×
repeat × position) and in the cache; a server that refuses the parameter (Groq's 400) is asked once more without
it, the run completes, and the arm is marked "no log-probabilities" — never an error row, never a retry storm.

Real `compare` runs against the scripted loopback server; the expected tokens are the ones the server was scripted
to send, and the request bodies are the ones it received."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import polars as pl
import pytest

from toxcmp.testing.fake_server import FakeChatServer, Reply, completion

TEXTS = ["you are an idiot", "have a nice day", "idiots everywhere", "thanks a lot"]


def _tokens(label: str, k: int) -> list[dict]:
    """What the scripted server sends: the label token, then an end marker, each with its top-k."""
    alt = "0" if label == "1" else "1"
    first = [{"token": label, "logprob": -0.125}, {"token": alt, "logprob": -2.25}][:k]
    return [{"token": label, "logprob": -0.125, "bytes": None, "top_logprobs": first},
            {"token": ".", "logprob": -1.5, "bytes": None, "top_logprobs": [{"token": ".", "logprob": -1.5}][:k]}]


def _answer(payload) -> Reply:
    label = "1" if "idiot" in payload["messages"][-1]["content"] else "0"
    if payload.get("logprobs"):
        return Reply(body=completion(label, logprobs=_tokens(label, payload.get("top_logprobs") or 0)))
    return Reply(body=completion(label))


def _refuse(payload) -> Reply:
    if "logprobs" in payload or "top_logprobs" in payload:  # Groq's answer to logprobs on its chat completions
        return Reply(status=400, body={"error": {"message": "`logprobs` is not supported with this model",
                                                 "type": "invalid_request_error", "param": "logprobs"}})
    return Reply(body=completion("1" if "idiot" in payload["messages"][-1]["content"] else "0"))


def _dataset(tmp_path):
    path = tmp_path / "rows.csv"
    pl.DataFrame({"conv_id": [f"c{i}" for i in range(len(TEXTS))], "user_input": TEXTS,
                  "toxicity": [1, 0, 1, 0]}).write_csv(path)
    return path


def _compare(tmp_path, server, *extra, stream: bool = False):
    arm = f"api[stream={'true' if stream else 'false'};label=api]"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "toxcmp", "compare", "--backends", arm, "--model", "org/m",
                           "--base-url", server.base_url, "--dataset", str(_dataset(tmp_path)), "--concurrency", "1",
                           "--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), *extra],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1, 3), done.stderr
    run_dir = max((p for p in (tmp_path / "out").iterdir() if p.is_dir()),
                  key=lambda p: (p / "summary.json").stat().st_mtime)  # this run's (a test may run several)
    return done, run_dir


def _expected_rows(k: int) -> list[tuple]:
    rows = []
    for i, text in enumerate(TEXTS):
        label = "1" if "idiot" in text else "0"
        for position, t in enumerate(_tokens(label, k)):
            rows.append((f"c{i}", position, "content", t["token"], t["logprob"],
                         [x["token"] for x in t["top_logprobs"]], [x["logprob"] for x in t["top_logprobs"]]))
    return rows


def _read_tokens(run_dir) -> list[tuple]:
    frame = pl.read_parquet(run_dir / "tokens.parquet").sort("example_id", "position")
    assert set(frame["arm"]) == {"api"} and set(frame["repeat"]) == {0}
    return [(r["example_id"], r["position"], r["part"], r["token"], r["logprob"], r["top_tokens"], r["top_logprobs"])
            for r in frame.iter_rows(named=True)]


def test_asked_log_probabilities_are_sent_for_and_stored_per_token(tmp_path):
    with FakeChatServer(models=["org/m"], responder=_answer) as server:
        done, run_dir = _compare(tmp_path, server, "--logprobs", "2")
        bodies = [r for r in server.requests if "messages" in r]
    assert all(b["logprobs"] is True and b["top_logprobs"] == 2 for b in bodies) and len(bodies) == len(TEXTS)
    assert _read_tokens(run_dir) == _expected_rows(2)
    results = pl.read_parquet(run_dir / "results.parquet")
    assert results["logprob_tokens"].to_list() == [2] * len(TEXTS) and results["logprobs_asked"].to_list() == [2] * 4
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["logprobs"]["api"] == {"asked": 2, "answered": 4, "with_logprobs": 4, "tokens": 8,
                                          "refused": False, "state": "sent"}
    assert "log-probabilities, api: asked for the top 2; sent on 4/4 answers, 8 tokens" in done.stdout
    # the label is the answer's first token: p(violating) from its top 2, p(1) / (p(0) + p(1)), by hand
    high = math.exp(-0.125) / (math.exp(-0.125) + math.exp(-2.25))  # the server wrote 1 ("idiot" rows)
    low = math.exp(-2.25) / (math.exp(-0.125) + math.exp(-2.25))  # it wrote 0
    calibration = summary["label_probs"]["arms"]["api"]
    assert calibration["labelled"] == 4 and calibration["auroc"] == 1.0  # every toxic row scored above every safe one
    assert calibration["brier"] == pytest.approx(((1 - high) ** 2 + low ** 2 + (1 - high) ** 2 + low ** 2) / 4)
    assert "label probabilities, api (its own top-K at the label token): on 4 rows, 4 labelled; AUROC 1.000" in done.stdout


def test_a_streamed_answer_keeps_its_log_probabilities(tmp_path):
    with FakeChatServer(models=["org/m"], responder=_answer) as server:
        _, run_dir = _compare(tmp_path, server, "--logprobs", "1", stream=True)
        assert all(r.get("stream") for r in server.requests if "messages" in r)
    assert _read_tokens(run_dir) == _expected_rows(1)


def test_the_tokens_come_back_from_the_cache_and_asking_is_part_of_the_identity(tmp_path):
    with FakeChatServer(models=["org/m"], responder=_answer) as server:
        _compare(tmp_path, server)  # not asked: answers without log p are cached
        plain = len(server.requests)
        _, asked = _compare(tmp_path, server, "--logprobs", "2")
        sent_for_logprobs = len(server.requests) - plain
        _, again = _compare(tmp_path, server, "--logprobs", "2")
        sent_again = len(server.requests) - plain - sent_for_logprobs
    assert sent_for_logprobs >= len(TEXTS)  # the cached answers without log p did not stand in for them
    assert sent_again == 0 and _read_tokens(again) == _expected_rows(2)


def test_a_server_that_refuses_them_is_asked_again_without_and_the_arm_has_none(tmp_path):
    with FakeChatServer(models=["org/m"], responder=_refuse) as server:
        done, run_dir = _compare(tmp_path, server, "--logprobs", "5")
        bodies = [r for r in server.requests if "messages" in r]
    with_them = [b for b in bodies if "logprobs" in b or "top_logprobs" in b]
    assert len(with_them) == 1 and len(bodies) == len(TEXTS) + 1  # one refusal, then never asked again
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["n_errors"] == 0
    assert summary["logprobs"]["api"]["state"] == "refused" and summary["logprobs"]["api"]["with_logprobs"] == 0
    assert not (run_dir / "tokens.parquet").exists()
    assert "the server refused the parameter — no log-probabilities" in done.stdout
