"""`api` backends that answer from a server toxcmp starts on 127.0.0.1 for the run's one model
(`--api-server local|llamacpp`, `api[api_server=…]`): `ApiBackend(options)` is one of these when `api_server`
names a server. Each says which server to start, how many requests it generates at once, its cache identity (its
URL has a random port) and what every request to it must carry. They stream by default, so a request given up on
is closed and the server stops generating it; no token is ever sent to them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

from toxcmp.backends.api import ApiBackend, _user_token
from toxcmp.backends.api_options import ApiOptions
from toxcmp.domain.prompting import ChatRequest
from toxcmp.errors import BackendError

# llama.cpp's server applies repeat_penalty 1.1 by default, even to greedy decoding: ask for none (and record it)
LLAMACPP_SAMPLING = {"repeat_penalty": 1.0, "frequency_penalty": 0.0, "presence_penalty": 0.0}


class SpawnedServerBackend(ApiBackend):
    """The server is started on first use (or by `start_server`) and stopped by `close`."""

    api_server: ClassVar[str]  # the --api-server value that picks this class
    engine: ClassVar[str]  # what the server is called in messages
    stream_default = True
    loopback = True
    require_finish_reason = True  # a stream it ends without one was cut off (llama.cpp interrupts that way)
    uses_local_cache = True

    def __init__(self, config: Any = None):
        self._server: Any = None
        super().__init__(config)

    # -- what a subclass says -----------------------------------------------------------------------------
    @classmethod
    def endpoint_label(cls) -> str:
        """The cache identity: the engine and whatever changes its answers (the model is in the key already)."""
        raise NotImplementedError

    def new_server(self, spec: Any) -> Any:
        """A not-yet-started server (`toxcmp.backends.server`) for `spec`."""
        raise NotImplementedError

    # -- the ApiBackend hooks -----------------------------------------------------------------------------
    def _settle(self, config: ApiOptions) -> ApiOptions:
        # the URL (random port) is known only after start; the cache identity is not
        return replace(config, endpoint_label=config.endpoint_label or self.endpoint_label())

    def _route(self, config: ApiOptions) -> tuple[str | None, str | None, str | None]:
        # the token is for asking the Hub about revisions only: our own loopback server needs none (and a port is
        # briefly anyone's before it binds)
        return None, _user_token(config), None

    def _ensure_server(self, requests: Sequence[ChatRequest]) -> None:
        if self._server is not None:
            return
        specs = {r.model for r in requests}
        if len(specs) != 1:
            raise BackendError(f"--api-server {self.config.api_server} serves one model per run",
                               "run one model at a time")
        self._server = self.new_server(next(iter(specs))).start()
        self.base_url, self.served_model = self._server.base_url, self._server.served_model
        self._server_threads = self._server.threads

    def start_server(self, requests: Sequence[ChatRequest]) -> None:
        """Start the server now (a benchmark keeps start-up out of its clock); generate() does it anyway."""
        self._ensure_server(requests)

    def concurrency(self) -> tuple[int, str]:
        if self.config.concurrency is not None:
            return self.config.concurrency, "--concurrency"
        # plain `transformers serve` / llama.cpp's server: one request at a time
        return (self._server.capacity if self._server is not None else 1,
                f"what the spawned {self.engine} generates at once")

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()


class TransformersServeBackend(SpawnedServerBackend):
    """`transformers serve` on the model the local backend would load: the same engine, over HTTP."""

    api_server = "local"
    engine = "transformers serve"

    @classmethod
    def endpoint_label(cls) -> str:
        return "transformers-serve"

    def new_server(self, spec: Any) -> Any:
        from toxcmp.backends import server

        return server.local_api_server(spec, self.config.cache_dir, threads=self.config.threads)


class LlamaCppServerBackend(SpawnedServerBackend):
    """llama-cpp-python's server on the model's GGUF: llama.cpp's own kernels on the quantized weights."""

    api_server = "llamacpp"
    engine = "llama.cpp server"

    @classmethod
    def endpoint_label(cls) -> str:
        # the engine, its version and the settings that change answers; the GGUF's sha256 is the resolved revision
        from toxcmp.backends.server import LLAMACPP_N_CTX, llamacpp_version

        return (f"llamacpp-server:llama-cpp-python=={llamacpp_version()};n_ctx={LLAMACPP_N_CTX};"
                "interrupt_requests=False;" + ";".join(f"{k}={v}" for k, v in LLAMACPP_SAMPLING.items()))

    def new_server(self, spec: Any) -> Any:
        from toxcmp.backends import server

        return server.llamacpp_api_server(spec, threads=self.config.threads)

    def _sampling(self) -> dict[str, Any]:
        return dict(LLAMACPP_SAMPLING)


SERVER_BACKENDS: dict[str, type[SpawnedServerBackend]] = {
    cls.api_server: cls for cls in (TransformersServeBackend, LlamaCppServerBackend)}


def server_backend(api_server: str | None) -> type[SpawnedServerBackend] | None:
    """The backend class for `--api-server NAME`; None when no server is to be started."""
    return SERVER_BACKENDS.get(api_server or "")

