"""`toxcmp cache`: what it shows and what it deletes (issue 17)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time

from toxcmp.run.cache import ResponseCache, cache_key
from toxcmp.config import GenerationConfig
from toxcmp.domain.models import resolve_model
from toxcmp.domain.policies import load_policy
from toxcmp.domain.prompting import build_request
from toxcmp.domain.responses import ModelResponse


def _fill(cache_dir, n=3):
    cache = ResponseCache(cache_dir)
    spec = resolve_model("smollm2-135m")
    for i in range(n):
        request = build_request(load_policy("toxic_simple"), f"text {i}", spec, GenerationConfig())
        cache.put(cache_key("local", "x", request), ModelResponse("0", "", "0", "local", spec.model_id, 0.1))
    cache.close()


def test_unknown_backend_is_an_error_not_removed_0(cli, isolated_env):
    _fill(isolated_env)
    result = cli("cache", "clear", "--backend", "nosuch")
    assert result.exit_code == 2 and "unknown backend 'nosuch'" in result.output and "local" in result.output
    assert json.loads(cli("cache", "info", "--json").stdout)["entries"] == 3


def test_info_shows_converted_models(cli, isolated_env, tmp_path, monkeypatch):
    models = tmp_path / "models"
    (models / "smollm2-135m-x").mkdir(parents=True)
    (models / "smollm2-135m-x" / "model.safetensors").write_bytes(b"\0" * 1234)
    monkeypatch.setenv("TOXCMP_MODELS_DIR", str(models))
    info = json.loads(cli("cache", "info", "--json").stdout)
    assert info["converted_models"] == [{"model": "smollm2-135m-x", "path": str(models / "smollm2-135m-x"), "bytes": 1234}]


def _run_in_terminal(args, answer: bytes, env) -> tuple[int, str]:
    """Run toxcmp with a real pseudo-terminal as stdin/stdout and type `answer` at its prompt."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "toxcmp", *args], stdin=follower, stdout=follower,
                            stderr=follower, env=env, close_fds=True)
    os.close(follower)
    out = b""
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        out += chunk
        if b"[y/N]" in out:
            os.write(leader, answer)
            answer = b""
        if not chunk:
            break
    proc.wait(timeout=60)
    os.close(leader)
    return proc.returncode, out.decode(errors="replace")


def test_a_terminal_asks_before_deleting(isolated_env):
    _fill(isolated_env)
    env = dict(os.environ, TOXCMP_CACHE_DIR=str(isolated_env), COLUMNS="120")
    code, out = _run_in_terminal(["cache", "clear"], b"n\n", env)
    assert "delete 3 cached response(s)" in out and code == 0  # declined: nothing done, no failure
    cache = ResponseCache(isolated_env)
    assert len(cache) == 3
    cache.close()
    code, out = _run_in_terminal(["cache", "clear"], b"y\n", env)
    assert code == 0 and "removed 3" in out
    code, out = _run_in_terminal(["cache", "clear", "--yes"], b"", env)
    assert code == 0 and "[y/N]" not in out
