"""Spawn, health-check and stop `transformers serve` on 127.0.0.1 (the offline stand-in for a provider)."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import BackendError

_LIVE: set["LocalServer"] = set()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _transformers_cli() -> list[str]:
    beside = Path(sys.executable).parent / "transformers"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("transformers")
    if found:
        return [found]
    raise BackendError("the `transformers` command is not installed", "pip install 'toxcmp[serve]'")


class LocalServer:
    """`with LocalServer(model_dir) as server: server.base_url` — always stopped on exit, Ctrl-C included."""

    def __init__(self, model: str, port: int | None = None, startup_timeout_s: float = 180.0,
                 continuous_batching: bool = False, offline: bool | None = None, threads: int | None = None):
        from .threads import alone_threads

        self.model = model
        self.threads = threads or alone_threads()  # torch intra-op threads of the server process
        self.port = port or free_port()
        self.startup_timeout_s = startup_timeout_s
        self.continuous_batching = continuous_batching
        self.offline = Path(model).is_dir() if offline is None else offline
        self.process: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="toxcmp-serve-", suffix=".log", delete=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def served_model(self) -> str:
        return self.model

    @property
    def capacity(self) -> int:
        """Requests it generates at once: plain `transformers serve` runs one `generate` at a time on a single
        inference thread (more in flight only queue there, each with its clock running); continuous batching
        interleaves several."""
        return 8 if self.continuous_batching else 1

    def command(self) -> list[str]:
        cmd = [*_transformers_cli(), "serve", self.model, "--host", "127.0.0.1", "--port", str(self.port)]
        if self.continuous_batching:
            cmd.append("--continuous-batching")
        return cmd

    def start(self) -> "LocalServer":
        _exit_on_sigterm()
        from .threads import torch_threads_env

        from .. import phases

        phases.phase(f"starting transformers serve ({self.threads} torch thread(s))")
        env = dict(os.environ, **torch_threads_env(self.threads))
        if self.offline:
            env["HF_HUB_OFFLINE"] = "1"
        self.process = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        _LIVE.add(self)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        import httpx

        from .. import phases

        phases.phase("transformers serve is loading the model")
        deadline = time.monotonic() + self.startup_timeout_s
        health = f"http://127.0.0.1:{self.port}/health"
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise BackendError(f"transformers serve exited during start-up (code {self.process.returncode})",
                                   f"see its log: {self._log.name}")
            try:
                if httpx.get(health, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise BackendError(f"transformers serve did not answer within {self.startup_timeout_s:.0f}s",
                           f"see its log: {self._log.name}")

    def stop(self) -> None:
        proc, self.process = self.process, None
        _LIVE.discard(self)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, PermissionError):
            pass
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __hash__(self) -> int:
        return id(self)


def _exit_on_sigterm() -> None:
    """SIGTERM normally kills Python without unwinding; turn it into SystemExit so `with` blocks stop servers."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        def handler(signum, frame):  # noqa: ARG001
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, handler)


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop()


def local_api_server(spec, cache_dir=None, continuous_batching: bool = False, threads: int | None = None) -> LocalServer:
    """A not-yet-started server for the same model the local backend would load."""
    from ..models import materialize

    return LocalServer(materialize(spec, cache_dir), continuous_batching=continuous_batching, threads=threads)
