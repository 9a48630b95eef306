"""Spawn, health-check and stop an OpenAI-compatible server on 127.0.0.1: `transformers serve` (the same engine as
the local backend) or llama.cpp's (`llama-cpp-python`, quantized GGUF kernels: a genuinely different engine)."""

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

from toxcmp.errors import BackendError

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


PORT_ATTEMPTS = 3
_TCP_LISTEN = "0A"


def _listening_inodes(port: int) -> set[str]:
    """Inodes of the sockets listening on `port` (IPv4 and IPv6), from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == _TCP_LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(fields[9])
    return found


def _socket_owners(inodes: set[str]) -> list[int]:
    """The pids holding a file descriptor on one of these socket inodes (the processes we may look into)."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    owners = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:  # gone, or not ours to look into
            continue
        if any(_link(fd) in wanted for fd in fds):
            owners.append(int(proc.name))
    return owners


def _link(fd: Path) -> str | None:
    try:
        return os.readlink(fd)
    except OSError:  # closed since the listing (a health-check connection, the listing's own fd)
        return None


def _session_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[3])  # after "pid (comm)": state, ppid, pgrp, session


class _PortTaken(Exception):
    """The port chosen for the server was taken by another process before the server bound it."""


class SpawnedServer:
    """`with Server(...) as server: server.base_url` — loopback only, always stopped on exit, Ctrl-C and SIGTERM
    included. Subclasses say what to run and where its health is."""

    engine = "server"
    health_path = "/health"

    def __init__(self, model: str, port: int | None = None, startup_timeout_s: float = 180.0,
                 threads: int | None = None, offline: bool = True):
        from toxcmp.backends.threads import alone_threads

        self.model = model
        self.threads = threads or alone_threads()  # compute threads of the server process
        self.port = port or free_port()
        self._port_chosen = port is None  # a port we chose may be taken before the server binds it: choose again
        self._attempt_log_start = 0  # where this start attempt's output begins in the shared log
        self.startup_timeout_s = startup_timeout_s
        self.offline = offline
        self.process: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(prefix=f"toxcmp-{self.engine}-", suffix=".log", delete=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def served_model(self) -> str:
        return self.model

    @property
    def capacity(self) -> int:
        return 1

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        from toxcmp.backends.threads import torch_threads_env

        env = dict(os.environ, **torch_threads_env(self.threads))
        if self.offline:
            env["HF_HUB_OFFLINE"] = "1"
        return env

    def start(self) -> "SpawnedServer":
        _exit_on_sigterm()
        from toxcmp import phases

        for attempt in range(PORT_ATTEMPTS):
            phases.phase(f"starting {self.engine} ({self.threads} thread(s))")
            self._log.flush()
            self._attempt_log_start = os.fstat(self._log.fileno()).st_size
            self.process = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=self.environment(), start_new_session=True)
            _LIVE.add(self)
            try:
                self._wait_healthy()
                return self
            except _PortTaken:
                self.stop()
                if not self._port_chosen or attempt == PORT_ATTEMPTS - 1:
                    raise BackendError(f"port {self.port} is taken by another process",
                                       "choose another port" if not self._port_chosen else
                                       f"see its log: {self._log.name}") from None
                phases.phase(f"port {self.port} was taken by another process: {self.engine} tries another")
                self.port = free_port()
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _wait_healthy(self) -> None:
        import httpx

        from toxcmp import phases

        phases.phase(f"{self.engine} is loading the model")
        deadline = time.monotonic() + self.startup_timeout_s
        health = f"http://127.0.0.1:{self.port}{self.health_path}"
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = self.process.returncode if self.process is not None else None
                if self._log_says_port_taken():
                    raise _PortTaken()
                raise BackendError(f"{self.engine} exited during start-up (code {code})",
                                   f"see its log: {self._log.name}")
            try:
                answered = httpx.get(health, timeout=2.0).status_code == 200
            except httpx.HTTPError:
                answered = False
            if answered:
                if self._listens_itself():
                    return
                raise _PortTaken()  # someone else answers on the port: never send our requests there
            time.sleep(0.3)
        raise BackendError(f"{self.engine} did not answer within {self.startup_timeout_s:.0f}s",
                           f"see its log: {self._log.name}")

    def _listens_itself(self) -> bool:
        """Whether the socket listening on our port belongs to our server: its owner is in the session the server
        leads (it was started with a session of its own)."""
        inodes = _listening_inodes(self.port)
        if not inodes:  # no /proc, or a /proc that lists no sockets (WSL1, some sandboxes): trust the answer
            return True
        return any(_session_of(pid) == self.process.pid for pid in _socket_owners(inodes))

    def _log_says_port_taken(self) -> bool:
        try:
            with open(self._log.name, "rb") as fh:
                fh.seek(self._attempt_log_start)
                text = fh.read().decode("utf-8", errors="replace")[-4000:]
        except OSError:
            return False
        return "address already in use" in text.lower()  # this attempt's output only: the log is shared

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

    def __enter__(self) -> "SpawnedServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __hash__(self) -> int:
        return id(self)


class LocalServer(SpawnedServer):
    """`transformers serve` on a model directory (or Hub id): the same engine as the local backend."""

    engine = "transformers serve"

    def __init__(self, model: str, port: int | None = None, startup_timeout_s: float = 180.0,
                 continuous_batching: bool = False, offline: bool | None = None, threads: int | None = None):
        super().__init__(model, port, startup_timeout_s, threads, Path(model).is_dir() if offline is None else offline)
        self.continuous_batching = continuous_batching

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


LLAMACPP_HINT = "pip install 'toxcmp[llamacpp]' (builds llama.cpp from source: about 9 minutes on two cores)"
LLAMACPP_N_CTX = 8192  # SmolLM2's training context; a policy prompt plus a ToxicChat row fits with room to spare


def llamacpp_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        raise BackendError("llama.cpp's server (llama-cpp-python) is not installed", LLAMACPP_HINT) from None


class LlamaCppServer(SpawnedServer):
    """llama-cpp-python's OpenAI-compatible server on a GGUF file: llama.cpp's own kernels on the quantized
    weights (transformers dequantizes the same file to float), one request at a time (its server holds a lock
    around the model)."""

    engine = "llama.cpp server"
    health_path = "/v1/models"

    def __init__(self, gguf: str, alias: str, port: int | None = None, startup_timeout_s: float = 180.0,
                 threads: int | None = None, n_ctx: int = LLAMACPP_N_CTX):
        self.version = llamacpp_version()
        super().__init__(gguf, port, startup_timeout_s, threads)
        self.alias = alias
        self.n_ctx = n_ctx

    @property
    def served_model(self) -> str:
        return self.alias

    def command(self) -> list[str]:
        threads = str(self.threads)
        return [sys.executable, "-m", "llama_cpp.server", "--model", self.model, "--model_alias", self.alias,
                "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx),
                "--n_threads", threads, "--n_threads_batch", threads, "--verbose", "False",
                # by default a waiting request cuts off the one being streamed: queue it instead
                "--interrupt_requests", "False"]


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
    from toxcmp.domain.models import materialize

    return LocalServer(materialize(spec, cache_dir), continuous_batching=continuous_batching, threads=threads)


def gguf_of(spec) -> Path:
    """The GGUF file llama.cpp serves for a model: a bundled model's, or a `.gguf` path given as the model."""
    from toxcmp.domain.models import bundled_gguf_path

    if spec.is_bundled:
        return bundled_gguf_path(spec)
    if spec.gguf_path:
        return Path(spec.gguf_path)
    from toxcmp.errors import UsageError

    raise UsageError(f"--api-server llamacpp serves GGUF files; {spec.model_id!r} is not one",
                       "pass a bundled model (e.g. --model smollm2-135m) or a path to a .gguf file")


def llamacpp_api_server(spec, threads: int | None = None) -> LlamaCppServer:
    """A not-yet-started llama.cpp server on the model's GGUF, known to clients by the model's id."""
    return LlamaCppServer(str(gguf_of(spec)), alias=spec.model_id, threads=threads)
