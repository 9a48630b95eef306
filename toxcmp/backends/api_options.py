"""What the `api` backend can be told: where answers come from (a provider, a base URL, a server toxcmp
starts), which model name is sent, and how hard to push the server. The first group changes answers and is
the backend's identity; the second does not."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from toxcmp.backends.options import BackendOptions, check_logprobs, option
from toxcmp.errors import UsageError

SPAWNED_SERVERS = ("local", "llamacpp")  # --api-server values that start a server on 127.0.0.1
API_SERVERS = (*SPAWNED_SERVERS, "auto", "none")


@dataclass(frozen=True)
class ApiOptions(BackendOptions):
    # who answers: part of the cache key and the run id
    base_url: str | None = option(None, changes_answer=True, help="any OpenAI-compatible server")
    provider: str = option("auto", changes_answer=True, help="an Inference Provider (no base URL)")
    served_model: str | None = option(None, changes_answer=True,
                                      help="the model name sent, when the server knows it by another name "
                                           "(a router suffix model:provider, a GGUF path)")
    endpoint_label: str | None = option(None, changes_answer=True,
                                        help="stable identity for a server whose URL changes (random port)")
    api_server: str | None = option(None, changes_answer=True,
                                    help="local: start transformers serve; llamacpp: start llama.cpp's server; "
                                         "auto: local for a bundled model; none: never start one")
    engine: str | None = option(None, changes_answer=True,
                                help="the engine behind base_url: llama.cpp, llama-cpp-python, vllm, sglang, tgi, "
                                     "ollama, unknown, or generic (send nothing engine-specific); None/auto: asked "
                                     "of the server. Picks what makes its greedy decoding greedy "
                                     "(toxcmp.backends.engines)")
    logprobs: int | None = option(None, changes_answer=True,
                                  help="ask for each generated token's log-probability and its top K alternatives "
                                       "(logprobs: true, top_logprobs: K; 0: the token's own only); a server that "
                                       "refuses them is asked again without, and the arm has none. None: not asked")
    # how hard to push it: never part of an identity
    token: str | None = field(default=None, repr=False, metadata={
        "changes_answer": False, "secret": True, "help": "--token / HF_TOKEN; never printed, logged or cached"})
    concurrency: int | None = option(None, changes_answer=False,
                                     help="requests in flight; None: what the server serves at once, else 8")
    timeout_s: float | None = option(None, changes_answer=False,
                                     help="per-request seconds; None: adaptive (tokens × measured s/token)")
    max_retries: int = option(4, changes_answer=False, help="per request, for 5xx, timeouts and connection errors")
    rate_limit_wait_s: float = option(300.0, changes_answer=False, help="total waiting on 429s before giving up")
    stream: bool | None = option(None, changes_answer=False,
                                 help="stream responses; None: from a spawned server (a given-up request is "
                                      "then cancelled there)")
    bill_to: str | None = option(None, changes_answer=False,
                                 help="Inference Providers: the organization billed (the router's X-HF-Bill-To "
                                      "header); never sent to a base URL or a spawned server")

    def check(self, suffix: str = "") -> None:
        super().check(suffix)
        if self.api_server not in (None, "", *API_SERVERS):
            raise UsageError(f"unknown --api-server {self.api_server!r}{suffix}", "use auto, local, llamacpp or none")
        from toxcmp.backends.engines import ENGINES

        check_logprobs(self.logprobs, suffix)
        if self.base_url and not self.base_url.lower().startswith(("http://", "https://")):
            raise UsageError(f"base URL {self.base_url!r} has no scheme{suffix}",
                             f"add http:// (e.g. http://{self.base_url})")

        if self.engine not in (None, "auto", *ENGINES):
            raise UsageError(f"unknown engine {self.engine!r}{suffix}", f"use one of: auto, {', '.join(ENGINES)}")
        if self.engine not in (None, "auto") and not self.base_url:
            raise UsageError(f"engine names the server behind a base URL{suffix}",
                             "add base_url=URL, or drop engine (a provider or a spawned server is known)")
        if self.concurrency is not None and self.concurrency < 1:
            raise UsageError(f"concurrency must be at least 1 (got {self.concurrency}){suffix}", "e.g. --concurrency 4")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise UsageError(f"timeout must be positive (got {self.timeout_s}){suffix}", "pass --timeout SECONDS")
        if self.bill_to is not None:
            from toxcmp.backends.providers import check_bill_to

            check_bill_to(self.bill_to, suffix)
            if self.base_url or self.spawns_server:
                raise UsageError(f"bill_to bills Inference Providers (the HF router); it is not sent to a base URL or a "
                                 f"spawned server{suffix}", "drop bill_to, or drop base_url/api_server")

    @property
    def spawns_server(self) -> bool:
        return self.api_server in SPAWNED_SERVERS

    def computes_here(self) -> bool:
        return self.spawns_server and not self.base_url

    def resolve(self, model: Any, hint: str = "for the api backend") -> tuple["ApiOptions", str | None]:
        """Decide `--api-server auto` and check the route: a bundled model exists only on this machine, so with no
        base URL the api side starts its own local server for it (and says so); an explicit `none` refuses."""
        if self.api_server == "llamacpp":
            if self.base_url:
                raise UsageError("--api-server llamacpp starts its own server; it does not go with --base-url",
                                 "drop --base-url, or use --api-server none to send to the server at that URL")
            from toxcmp.backends.server import gguf_of, llamacpp_version

            gguf_of(model)  # a GGUF to serve, and the package to serve it, before any data or model is loaded
            llamacpp_version()
            return self, None
        options = self
        if self.api_server == "auto":
            if model.only_here and not self.base_url:
                return replace(self, api_server="local"), (
                    f"{model.name} exists only on this machine: the api side starts a local transformers serve for "
                    "it (--api-server none to refuse)")
            options = replace(self, api_server=None)
        if options.api_server == "none" or options.api_server == "":
            options = replace(options, api_server=None)
        if model.only_here and not options.base_url and not options.spawns_server:
            raise UsageError(f"{model.name} is a bundled model that no Inference Provider serves",
                             f"add --api-server local (or --base-url URL), {hint}")
        if options.base_url and options.engine in (None, "auto"):
            return options.with_engine()
        return options, None

    def with_engine(self) -> tuple["ApiOptions", str | None]:
        """The engine behind the base URL, asked of the server (before any data or model is loaded)."""
        from toxcmp.backends.engines import Unreachable, detect_engine, engine_note

        url = self.base_url.rstrip("/")
        url = url if url.endswith("/v1") else f"{url}/v1"
        try:
            engine, evidence = detect_engine(url, {"Authorization": f"Bearer {self.token}"} if self.token else None)
        except Unreachable:  # nobody to ask: `unknown`, as a server that does not say (the preflight or the
            return replace(self, engine="unknown"), None  # cache speaks next)
        return replace(self, engine=engine), engine_note(self.base_url, engine, evidence)
