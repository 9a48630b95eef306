"""`toxcmp classify -` reads the text from standard input (issue 23), in a real process."""

from __future__ import annotations

import json
import subprocess
import sys

from toxcmp.testing.fake_server import FakeChatServer, Reply, completion


def _classify(args, stdin: bytes, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "toxcmp", "classify", *args], input=stdin, env=env,
                          capture_output=True, timeout=120)


def test_a_dash_reads_standard_input_and_sends_it_as_the_text(tmp_path):
    with FakeChatServer(models=["org/m"], default=Reply(body=completion("1"))) as server:
        done = _classify(["-", "--backend", "api", "--model", "org/m", "--base-url", server.base_url, "--json",
                          "--cache-dir", str(tmp_path / "cache")], "you are an idiot\n".encode(), tmp_path)
        sent = server.requests[-1]["messages"][-1]["content"]
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout)["binary_label"] == 1
    assert "you are an idiot" in sent


def test_stdin_that_is_not_utf8_is_one_line(tmp_path):
    done = _classify(["-", "--backend", "api", "--model", "org/m", "--base-url", "http://127.0.0.1:9/v1"],
                     b"caf\xe9", tmp_path)
    lines = [line for line in done.stderr.decode().splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and "standard input is not UTF-8" in lines[0]
