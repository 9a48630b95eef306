"""A spawned server's start-up: a port taken before the server binds it is chosen again; other failures are not
mistaken for that (the servers here are real processes that fail on cue, started as toxcmp starts any server)."""

from __future__ import annotations

import sys

import pytest

from toxcmp.backends.server import SpawnedServer
from toxcmp.errors import BackendError


class ScriptedServer(SpawnedServer):
    """Attempt k runs `scripts[k]`: Python that prints what a server would and exits."""

    engine = "scripted server"

    def __init__(self, scripts: list[str]):
        super().__init__("unused", startup_timeout_s=30, threads=1)
        self.scripts = scripts
        self.attempts = 0
        self.ports: list[int] = []

    def command(self) -> list[str]:
        script = self.scripts[min(self.attempts, len(self.scripts) - 1)]
        self.attempts += 1
        self.ports.append(self.port)
        return [sys.executable, "-c", script]


BIND_ERROR = "print('ERROR: [Errno 98] error while attempting to bind: address already in use'); raise SystemExit(1)"
OTHER_ERROR = "print('ValueError: not a GGUF file'); raise SystemExit(1)"


def test_a_port_taken_is_chosen_again_up_to_three_times():
    server = ScriptedServer([BIND_ERROR])
    with pytest.raises(BackendError, match="is taken by another process"):
        server.start()
    assert server.attempts == 3 and len(set(server.ports)) == 3


def test_a_later_attempt_failing_otherwise_is_not_read_as_the_port_taken_again():
    """The attempts share one log: the first attempt's bind error must not make the second's failure look like one."""
    server = ScriptedServer([BIND_ERROR, OTHER_ERROR])
    with pytest.raises(BackendError, match="exited during start-up") as failed:
        server.start()
    assert server.attempts == 2 and server.ports[0] != server.ports[1]
    assert "taken" not in str(failed.value)
