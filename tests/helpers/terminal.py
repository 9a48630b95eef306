"""Run toxcmp in a real pseudo-terminal (what a user's terminal is to it): read everything it writes, answer its
prompts. The text comes back without its colours and cursor moves."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time


def run_in_terminal(args: list[str], env: dict[str, str], answers: dict[bytes, bytes] | None = None,
                    timeout_s: float = 120, columns: int = 120) -> tuple[int, str]:
    """`python -m toxcmp ARGS` with a pty as stdin/stdout/stderr; when the output so far ends a prompt in
    `answers` (e.g. b"[y/N]"), type its answer once. Returns the exit code and everything written."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "toxcmp", *args], stdin=follower, stdout=follower,
                            stderr=follower, env={**env, "COLUMNS": str(columns), "TERM": "xterm"}, close_fds=True)
    os.close(follower)
    pending = dict(answers or {})
    out = b""
    deadline = time.time() + timeout_s
    try:
        while time.time() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            for prompt in [p for p in pending if p in out]:
                os.write(leader, pending.pop(prompt))
        proc.wait(timeout=max(1.0, deadline - time.time()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
    return proc.returncode, plain(out.decode(errors="replace"))


def plain(text: str) -> str:
    """`text` without terminal control sequences (colours, cursor moves)."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", text)
