"""`api` backend: Hugging Face Inference Providers or any OpenAI-compatible server (vLLM, TGI, llama.cpp,
`transformers serve`) through `huggingface_hub.AsyncInferenceClient`; a spawned `transformers serve` is streamed
from with plain httpx, so a request given up on is closed and the server stops generating it.

Sends exactly the messages the local backend templates. Results in input order. What keeps a busy server from
being made busier (shared by the whole run, across chunks):
- in flight: what the server can serve at once (1 for a spawned `transformers serve`), else 8; `--concurrency` wins;
- per-request timeout: max new tokens × measured seconds per token (plus time to first token) × a safety factor,
  with a floor; a generous one until the first answer is measured; `--timeout` fixes it;
- retries: exponential backoff + jitter on 408/429/5xx, timeouts and connection errors (honouring Retry-After), at
  most `max_retries` per request and a budget for the run (a floor plus a share of the requests sent); 429s wait
  within `rate_limit_wait_s` instead;
- a circuit breaker: overload (timeouts, 5xx) piling up pauses new requests, halves the in-flight count and doubles
  the timeouts, said once in the live view; the in-flight count creeps back (one at a time) after a run of
  successes, never above where it started.
The token is read from `--token`/`HF_TOKEN`, passed to the client, and never logged or stored.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import json
import os
import random
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Sequence

from toxcmp import phases
from toxcmp.errors import BackendError, UnknownNameError
from toxcmp.domain.parsing import split_output
from toxcmp.domain.prompting import ChatRequest
from toxcmp.domain.responses import ModelResponse
from toxcmp.backends import SPAWNED_SERVERS, BackendConfig, OnResponse

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}
_RETRY_BASE_S = float(os.environ.get("TOXCMP_RETRY_BASE_S", "0.5"))
_RETRY_CAP_S = 30.0
DEFAULT_CONCURRENCY = 8  # a remote provider or a user's server: we cannot know what it serves at once
OVERLOAD_STATUS = {408, 502, 503, 504, 520, 522, 524, 529}  # the server (or its proxy) could not keep up
FIRST_TIMEOUT_S = 300.0  # until one answer has been measured (the first one also pays warm-up)
TIMEOUT_FLOOR_S = 60.0
TIMEOUT_SAFETY = 4.0  # × the slowest recent measurement
TIMEOUT_CAP_S = 1800.0
RETRY_BUDGET_MIN = 10  # retries the run may always spend ...
RETRY_BUDGET_RATIO = 0.2  # ... plus this share of the requests it has sent
BREAKER_WINDOW = 10  # recent outcomes the breaker looks at
BREAKER_PAUSE_S = (1.0, 15.0)  # first pause (a quarter of the timeout that expired, a 5xx's Retry-After) within
BREAKER_PAUSE_CAP_S = 60.0  # these bounds; it doubles with every trip, up to this
LLAMACPP_SAMPLING = {"repeat_penalty": 1.0, "frequency_penalty": 0.0, "presence_penalty": 0.0}
_served_by: contextvars.ContextVar[str | None] = contextvars.ContextVar("toxcmp_served_by", default=None)


def spawned_endpoint_label(api_server: str) -> str:
    """The cache identity of a spawned server (its URL has a random port): the engine, its version and the
    settings that change answers; the model file's sha256 is the resolved revision."""
    if api_server == "llamacpp":
        from toxcmp.backends.server import LLAMACPP_N_CTX, llamacpp_version

        return (f"llamacpp-server:llama-cpp-python=={llamacpp_version()};n_ctx={LLAMACPP_N_CTX};"
                "interrupt_requests=False;" + ";".join(f"{k}={v}" for k, v in LLAMACPP_SAMPLING.items()))
    return "transformers-serve"


def valid_providers() -> list[str]:
    from huggingface_hub.inference._providers import PROVIDERS

    return ["auto", *PROVIDERS]


def _is_hf_host(url: str) -> bool:
    from urllib.parse import urlparse

    host = (urlparse(url).hostname or "").lower()
    return host == "huggingface.co" or host.endswith((".huggingface.co", ".huggingface.cloud", ".hf.space"))


def redact(text: str, token: str | None) -> str:
    """Remove the token (and anything shaped like an HF token) from a message before it is shown or stored."""
    if token:
        text = text.replace(token, "***")
    return re.sub(r"hf_[A-Za-z0-9]{8,}", "hf_***", text)


def _retry_after_s(headers: Any) -> float | None:
    value = headers.get("retry-after") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def backoff_delay(attempt: int, retry_after: float | None, base: float | None = None) -> float:
    """Retry-After when the server sent one (capped at 2 min), else exponential backoff with jitter."""
    if retry_after is not None:
        return min(retry_after, 120.0)
    base = _RETRY_BASE_S if base is None else base
    return min(_RETRY_CAP_S, base * 2**attempt) * (0.5 + random.random() / 2)


async def _record_served_by(response: Any) -> None:
    provider = response.headers.get("x-inference-provider")
    if provider:
        _served_by.set(provider)


def _make_client(base_url: str | None, provider: str, token: str | None, timeout: float):
    from huggingface_hub import AsyncInferenceClient

    class RecordingClient(AsyncInferenceClient):
        """Adds a response hook that notes which provider served each request (HF router header)."""

        async def _get_async_client(self):  # noqa: D401 - private hook in huggingface_hub
            if base_url and getattr(self, "_async_client", "missing") is None:
                # Our own server: a plain client, so HF_HUB_OFFLINE (which blocks Hub traffic) does not block it.
                import httpx2

                self._async_client = await self.exit_stack.enter_async_context(
                    httpx2.AsyncClient(follow_redirects=True, timeout=None))
            client = await super()._get_async_client()
            hooks = client.event_hooks["response"]
            if _record_served_by not in hooks:
                hooks.append(_record_served_by)
            return client

    if base_url:
        return RecordingClient(base_url=base_url, api_key=token or "-", timeout=timeout)
    return RecordingClient(provider=provider, token=token, timeout=timeout)


class AdaptiveTimeout:
    """Per-request timeout that scales with the work asked for: TIMEOUT_SAFETY × (time to first token + max new
    tokens × seconds per token), both the slowest of the last 8 answers, never under TIMEOUT_FLOOR_S; until an
    answer is measured, FIRST_TIMEOUT_S. Each timeout of the same request doubles its next attempt's limit, each
    breaker trip doubles every limit (`stretch`). A fixed (user) timeout is used as is."""

    def __init__(self, fixed: float | None):
        self.fixed = fixed
        self.first_token_s: deque[float] = deque(maxlen=8)
        self.per_token_s: deque[float] = deque(maxlen=8)
        self.stretch = 1.0
        self.last_s: float | None = None

    @property
    def measured(self) -> bool:
        return bool(self.per_token_s)

    def seconds(self, max_new_tokens: int, timeouts_so_far: int = 0) -> float:
        if self.fixed is not None:
            value = self.fixed
        elif not self.measured:
            value = FIRST_TIMEOUT_S * self.stretch * 2**timeouts_so_far
        else:
            work = max(self.first_token_s, default=0.0) + max_new_tokens * max(self.per_token_s)
            value = max(TIMEOUT_FLOOR_S, TIMEOUT_SAFETY * work) * self.stretch * 2**timeouts_so_far
            value = min(TIMEOUT_CAP_S, value)
        self.last_s = value
        return value

    def observe(self, latency_s: float, first_token_s: float | None, tokens: int | None, max_new_tokens: int) -> None:
        """One answered request: its wall time, when its first token came (streaming only) and how many tokens."""
        if first_token_s is not None and tokens and tokens >= 2:
            self.first_token_s.append(first_token_s)
            self.per_token_s.append(max(0.0, latency_s - first_token_s) / (tokens - 1))
        else:  # no split known: all of it counts as per-token time, which only makes the limit more generous
            self.per_token_s.append(latency_s / max(1, tokens or max_new_tokens))


class RetryBudget:
    """Retries the whole run may spend: RETRY_BUDGET_MIN plus RETRY_BUDGET_RATIO of the requests sent, so a
    failing server gets at most ~1.2× the traffic of a healthy one, not (1 + max_retries)×."""

    def __init__(self, minimum: int = RETRY_BUDGET_MIN, ratio: float = RETRY_BUDGET_RATIO):
        self.minimum, self.ratio = minimum, ratio
        self.requests = 0
        self.spent = 0
        self.refused = 0

    def allow(self) -> bool:
        if self.spent < self.minimum + self.ratio * self.requests:
            return True
        self.refused += 1
        return False


class Breaker:
    """Overload detector shared by the run. An outcome counts only for requests sent after the last trip (those
    sent before were already judged). Trips when the last two outcomes, or 3 of the last BREAKER_WINDOW, were
    overload (a timeout or a 5xx): pause new sends, halve the in-flight limit, double timeouts."""

    def __init__(self, limit: int, label: str, timeouts: AdaptiveTimeout):
        self.configured = self.limit = limit
        self.label, self.timeouts = label, timeouts
        self.paused_until = 0.0
        self.last_trip = float("-inf")
        self.trips = 0
        self.recent: deque[bool] = deque(maxlen=BREAKER_WINDOW)
        self.successes = 0
        self.said = False
        self.pauses: list[tuple[float, float]] = []  # (from, until) on the monotonic clock, one per trip

    def success(self, sent_at: float) -> None:
        if sent_at < self.last_trip:
            return
        self.recent.append(False)
        self.successes += 1
        if self.limit < self.configured and self.successes >= 4 * self.limit:
            self.limit += 1  # additive increase, never above where the run started
            self.successes = 0

    def overload(self, sent_at: float, what: str, pause_s: float) -> None:
        """`pause_s`: how long the server needs, by this failure (a quarter of the timeout that expired; a 5xx's
        Retry-After); kept within BREAKER_PAUSE_S, doubled per trip."""
        if sent_at < self.last_trip:
            return
        self.recent.append(True)
        recent = list(self.recent)
        if recent[-2:] != [True, True] and sum(recent) < 3:
            return
        old = self.limit
        self.limit = max(1, self.limit // 2)
        self.trips += 1
        self.successes = 0
        self.recent.clear()
        self.timeouts.stretch *= 2
        low, high = BREAKER_PAUSE_S
        cooldown = min(BREAKER_PAUSE_CAP_S, min(high, max(low, pause_s)) * 2 ** (self.trips - 1))
        self.last_trip = time.monotonic()
        self.paused_until = self.last_trip + cooldown
        self.pauses.append((self.last_trip, self.paused_until))
        if not self.said:  # once per run: the live view's "now" line keeps it until something else happens
            self.said = True
            phases.phase(f"{self.label}: the server is overloaded ({what}); backing off {cooldown:.0f}s, "
                         f"{old}→{self.limit} in flight, longer timeouts")


class _Gate:
    """In-flight slots for one `generate` call: at most `breaker.limit` requests on the wire, none while paused."""

    def __init__(self, breaker: Breaker):
        self.breaker = breaker
        self.in_flight = 0
        self.freed = asyncio.Event()

    async def acquire(self) -> None:
        while True:
            wait = self.breaker.paused_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            if self.in_flight < self.breaker.limit:
                self.in_flight += 1
                return
            self.freed.clear()
            await self.freed.wait()

    def release(self) -> None:
        self.in_flight -= 1
        self.freed.set()


class _Status(Exception):
    """An HTTP error status from either transport."""

    def __init__(self, status: int, body: str, headers: Any = None):
        super().__init__(f"HTTP {status}: {body}")
        self.status, self.body, self.headers = status, body, headers


class _StreamFailure(Exception):
    """The server reported an error inside the stream (its generation failed): not retried."""


@dataclass
class _Answer:
    content: str
    reasoning: str | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    model: str | None
    system_fingerprint: str | None
    first_token_s: float | None = None  # streaming: seconds from send to the first generated text


class ApiBackend:
    name = "api"

    def __init__(self, config: BackendConfig):
        self.config = config
        if config.api_server not in (None, "", "none", *SPAWNED_SERVERS):
            from toxcmp.errors import UsageError

            raise UsageError(f"unknown --api-server {config.api_server!r}", "use " + ", ".join(
                repr(name) for name in (*SPAWNED_SERVERS, "none")))
        self._spawn_server = config.api_server in SPAWNED_SERVERS
        self._llamacpp = config.api_server == "llamacpp"
        self._server = None
        if self._spawn_server:  # the URL (random port) is known only after start; the cache identity is not
            self.config = config = replace(config, endpoint_label=config.endpoint_label or spawned_endpoint_label(
                config.api_server))
        uses_providers = not config.base_url and not self._spawn_server
        if uses_providers and config.provider not in valid_providers():
            raise UnknownNameError("provider", config.provider, valid_providers())
        self._token = config.token or os.environ.get("HF_TOKEN") or None
        if config.base_url and not config.token and not _is_hf_host(config.base_url):
            self._token = None  # HF_TOKEN is for Hugging Face; a third-party --base-url gets only an explicit --token
        if uses_providers and not self._token:
            from huggingface_hub import get_token

            self._token = get_token()  # `hf auth login` stores one
            if not self._token:
                raise BackendError("Inference Providers need a Hugging Face token",
                                   "set HF_TOKEN, pass --token, or run `hf auth login`")
        self._hub_token = self._token  # for asking the Hub which commit a revision means
        if self._spawn_server:
            self._token = None  # our own loopback server needs none (and a port is briefly anyone's before it binds)
        self.base_url = config.base_url.rstrip("/") if config.base_url else None
        if self.base_url and not self.base_url.endswith("/v1"):
            self.base_url = f"{self.base_url}/v1"
        if config.concurrency is not None and config.concurrency < 1:
            raise BackendError(f"concurrency must be ≥ 1, got {config.concurrency}", "pass --concurrency 1 or more")
        if config.timeout_s is not None and config.timeout_s <= 0:
            raise BackendError(f"timeout must be positive, got {config.timeout_s}", "pass --timeout SECONDS")
        self.served_model = config.served_model
        self.stats = {"requests": 0, "retries": 0, "errors": 0, "timeouts": 0, "breaker_trips": 0,
                      "retry_budget_refused": 0}
        self.timeouts = AdaptiveTimeout(config.timeout_s)
        self.budget = RetryBudget()
        self.breaker: Breaker | None = None  # once the in-flight count is known (a spawned server: after start)
        self._concurrency_source = ""
        self._server_threads: int | None = None
        self._checked = False
        self._resolved: dict[Any, str] = {}

    @property
    def endpoint(self) -> str:
        return self.config.endpoint_label or self.base_url or f"hf-inference-providers:{self.config.provider}"

    @property
    def streams(self) -> bool:
        """Stream responses (and close a given-up one, which stops a `transformers serve` generating it)."""
        return self.config.stream if self.config.stream is not None else self._spawn_server

    def resolved_revision(self, spec: Any) -> str:
        """The commit the Hub says `spec.revision` means now (online only; a spawned local server: also the local
        HF cache's; a bundled model or a llama.cpp server: the GGUF's sha256); the requested revision when that
        cannot be known. Asked once per backend and model. The token goes to the Hub only when it is a Hugging
        Face token."""
        from toxcmp.domain.models import resolved_revision

        if spec not in self._resolved:
            hf_token = self._hub_token if not self.config.base_url or _is_hf_host(self.config.base_url) else None
            self._resolved[spec] = resolved_revision(spec, token=hf_token, local_cache=self._spawn_server)
        return self._resolved[spec]

    # -- preflight ---------------------------------------------------------------------------------------
    def preflight(self, model_id: str) -> None:
        """For a base URL: fail fast on an unreachable server or a model it does not serve."""
        if not self.base_url or self._checked:
            return
        import httpx

        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        try:
            reply = httpx.get(f"{self.base_url}/models", headers=headers, timeout=min(10.0, self.config.timeout_s or 10.0))
        except httpx.HTTPError as exc:
            raise BackendError(f"cannot reach the API server at {self.base_url} ({type(exc).__name__})",
                               "start the server, fix --base-url, or use --api-server local") from None
        if reply.status_code in (401, 403):
            raise BackendError(f"the API server at {self.base_url} refused the credentials (HTTP {reply.status_code})",
                               "set HF_TOKEN (or --token) to a valid token")
        if reply.status_code == 200:
            try:
                served = [m.get("id") for m in reply.json().get("data", [])]
            except (ValueError, AttributeError):
                served = []
            if served and model_id not in served:
                raise BackendError(f"the API server at {self.base_url} does not serve model {model_id!r}",
                                   f"it serves: {', '.join(str(s) for s in served[:10])}")
        self._checked = True

    # -- generation --------------------------------------------------------------------------------------
    def _ensure_server(self, requests: Sequence[ChatRequest]) -> None:
        """`--api-server local|llamacpp`: start the server for the model only when a request must be sent."""
        if not self._spawn_server or self._server is not None:
            return
        specs = {r.model for r in requests}
        if len(specs) != 1:
            raise BackendError(f"--api-server {self.config.api_server} serves one model per run",
                               "run one model at a time")
        from toxcmp.backends.server import llamacpp_api_server, local_api_server

        spec = next(iter(specs))
        self._server = (llamacpp_api_server(spec, threads=self.config.threads) if self._llamacpp else
                        local_api_server(spec, self.config.cache_dir, threads=self.config.threads)).start()
        self.base_url, self.served_model = self._server.base_url, self._server.served_model
        self._server_threads = self._server.threads

    def start_server(self, requests: Sequence[ChatRequest]) -> None:
        """Start the spawned server now (a benchmark keeps start-up out of its clock); generate() does it anyway."""
        self._ensure_server(requests)

    def concurrency(self) -> tuple[int, str]:
        """Requests in flight at the start, and why."""
        if self.config.concurrency is not None:
            return self.config.concurrency, "--concurrency"
        if self._spawn_server:  # plain `transformers serve` / llama.cpp's server: one request at a time
            return (self._server.capacity if self._server is not None else 1,
                    f"what the spawned {'llama.cpp server' if self._llamacpp else 'transformers serve'} "
                    "generates at once")
        return DEFAULT_CONCURRENCY, "default for a remote server"

    def _ensure_breaker(self) -> Breaker:
        if self.breaker is None:
            limit, self._concurrency_source = self.concurrency()
            self.breaker = Breaker(limit, self.name, self.timeouts)
        return self.breaker

    def reliability(self) -> dict[str, Any]:
        """This backend's counters and choices so far (provenance and the summary)."""
        limit, source = (self.breaker.configured, self._concurrency_source) if self.breaker else self.concurrency()
        return {**self.stats, "retry_budget_spent": self.budget.spent,
                "concurrency": {"start": limit, "final": self.breaker.limit if self.breaker else limit,
                                "source": source},
                "timeout": {"mode": "fixed" if self.config.timeout_s is not None else "adaptive",
                            "last_s": round(self.timeouts.last_s, 3) if self.timeouts.last_s else None,
                            "first_s": FIRST_TIMEOUT_S, "floor_s": TIMEOUT_FLOOR_S, "safety": TIMEOUT_SAFETY},
                "stream": self.streams,
                "server_threads": self._server_threads}

    def generate(self, requests: Sequence[ChatRequest], on_response: OnResponse | None = None) -> list[ModelResponse]:
        if not requests:
            return []
        self._ensure_server(requests)
        for model_id in {self._wire_model(r) for r in requests}:
            self.preflight(model_id)
        self._ensure_breaker()
        coro = self._run_all(requests, on_response)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro)
        # Called from inside an event loop (a notebook): run ours on a thread.
        box: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: box.setdefault("r", asyncio.run(coro)))
        thread.start()
        thread.join()
        return box["r"]

    def _wire_model(self, request: ChatRequest) -> str:
        return self.served_model or request.model.model_id

    async def _run_all(self, requests: Sequence[ChatRequest], on_response: OnResponse | None) -> list[ModelResponse]:
        if self.streams:
            import httpx

            # our own loopback server: no proxies; no client-side read timeout (the per-request deadline rules)
            client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10.0), trust_env=not self._spawn_server)
        else:
            client = _make_client(self.base_url, self.config.provider, self._token, None)
        gate = _Gate(self._ensure_breaker())
        results: list[ModelResponse | None] = [None] * len(requests)
        fatal: list[BaseException] = []

        async def one(i: int, request: ChatRequest) -> None:
            if fatal:
                return
            try:
                response = await self._request_with_retries(client, gate, request, fatal)
            except BackendError as exc:
                fatal.append(exc)
                return
            if response is None:
                return
            results[i] = response
            if on_response:
                on_response(i, response)

        try:
            await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
        finally:
            try:
                await (client.aclose() if self.streams else client.close())
            except Exception:  # noqa: BLE001 - closing must not mask the real outcome
                pass
        if fatal:
            raise fatal[0]
        return [r for r in results if r is not None]

    def _payload(self, request: ChatRequest) -> dict[str, Any]:
        gen = request.generation
        kwargs: dict[str, Any] = {"model": self._wire_model(request), "max_tokens": gen.max_new_tokens,
                                  "temperature": gen.temperature, "seed": gen.seed}
        if not gen.greedy:
            kwargs["top_p"] = gen.top_p
        extra_body = dict(request.template_options()) or None
        if self._llamacpp:  # its default repeat_penalty is 1.1, applied even to greedy decoding: ask for none
            extra_body = {**(extra_body or {}), **LLAMACPP_SAMPLING}
        if extra_body:
            kwargs["extra_body"] = extra_body
        return kwargs

    async def _request_with_retries(self, client: Any, gate: _Gate, request: ChatRequest,
                                    fatal: list[BaseException]) -> ModelResponse | None:
        from huggingface_hub.errors import InferenceTimeoutError

        started = time.perf_counter()
        kwargs = self._payload(request)
        max_new = request.generation.max_new_tokens
        breaker = gate.breaker
        self.budget.requests += 1
        attempt, last_error, waited, timeouts = 0, "no attempt made", 0.0, 0
        while True:
            retry_after: float | None = None
            rate_limited = False
            await gate.acquire()
            if fatal:
                gate.release()
                return None
            limit_s = self.timeouts.seconds(max_new, timeouts)  # on the wire now: what is known at this moment
            sent_at = time.monotonic()
            self.stats["requests"] += 1
            try:
                _served_by.set(None)
                async with asyncio.timeout(limit_s):
                    answer = await (self._stream_once(client, request, kwargs) if self.streams
                                    else self._call_once(client, request, kwargs))
                latency = time.monotonic() - sent_at
                self.timeouts.observe(latency, answer.first_token_s, answer.completion_tokens, max_new)
                breaker.success(sent_at)
                return self._to_response(answer, request, started, attempt, timeouts)
            except _Status as exc:
                status = exc.status
                if status in (401, 403):
                    raise BackendError(f"authentication failed at {self.endpoint} (HTTP {status})",
                                       "set HF_TOKEN (or --token) to a valid token with inference access") from None
                if status == 404:
                    raise BackendError(f"{self.endpoint} does not serve model {kwargs['model']!r} (HTTP 404)",
                                       "check --model / --provider") from None
                last_error = f"HTTP {status}: {exc.body}"
                if status not in RETRYABLE_STATUS:
                    return self._error(request, started, attempt, last_error, timeouts)
                retry_after = _retry_after_s(exc.headers)
                rate_limited = status == 429
                if status in OVERLOAD_STATUS:
                    breaker.overload(sent_at, f"HTTP {status}", retry_after or 0.0)
                    self.stats["breaker_trips"] = breaker.trips
            except (TimeoutError, InferenceTimeoutError):
                timeouts += 1
                self.stats["timeouts"] += 1
                last_error = f"timed out after {limit_s:g}s"
                breaker.overload(sent_at, "requests timed out", limit_s / 4)
                self.stats["breaker_trips"] = breaker.trips
            except _StreamFailure as exc:
                return self._error(request, started, attempt, f"server error: {exc}", timeouts)
            except (json.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
                return self._error(request, started, attempt, f"malformed response: {type(exc).__name__}: {exc}",
                                   timeouts)
            except Exception as exc:  # connection errors and other transport failures
                if type(exc).__name__ == "OfflineModeIsEnabled":
                    raise BackendError("HF_HUB_OFFLINE=1 blocks Inference Providers",
                                       "unset HF_HUB_OFFLINE, or use --base-url / --api-server local") from None
                if not _is_transport_error(exc):
                    return self._error(request, started, attempt, f"{type(exc).__name__}: {exc}", timeouts)
                last_error = f"connection error: {type(exc).__name__}"
            finally:
                gate.release()  # never held while backing off: a retry queues for a slot like everyone else
            # A rate limit is not a failure: keep waiting it out (Retry-After, else capped backoff) for up to
            # rate_limit_wait_s in total; other errors get max_retries attempts, within the run's retry budget.
            budget_left = self.config.rate_limit_wait_s - waited
            if rate_limited and budget_left > 0:
                delay = min(backoff_delay(min(attempt, 5), retry_after), budget_left)
            elif attempt >= self.config.max_retries:
                return self._error(request, started, attempt, f"{last_error} (gave up after {attempt} retries)",
                                   timeouts)
            elif not self.budget.allow():
                self.stats["retry_budget_refused"] += 1
                return self._error(request, started, attempt,
                                   f"{last_error} (not retried: the run's retry budget is spent, {self.budget.spent} "
                                   f"retries for {self.budget.requests} requests)", timeouts)
            else:
                self.budget.spent += 1
                delay = backoff_delay(attempt, retry_after)
            await asyncio.sleep(delay)
            waited += delay
            attempt += 1
            self.stats["retries"] += 1

    async def _call_once(self, client: Any, request: ChatRequest, kwargs: dict[str, Any]) -> _Answer:
        """One non-streaming call through huggingface_hub."""
        from huggingface_hub.errors import HfHubHTTPError

        try:
            output = await client.chat_completion(request.chat_messages(), **kwargs)
        except HfHubHTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            raise _Status(status, _error_body(exc), exc.response.headers if exc.response is not None else None) from None
        choice = output.choices[0]
        message = choice.message
        reasoning = getattr(message, "reasoning", None) or getattr(message, "reasoning_content", None)
        if reasoning is None and isinstance(message, dict):
            reasoning = message.get("reasoning") or message.get("reasoning_content")
        usage = getattr(output, "usage", None)
        return _Answer(content=message.content or "", reasoning=reasoning,
                       finish_reason=getattr(choice, "finish_reason", None),
                       prompt_tokens=getattr(usage, "prompt_tokens", None),
                       completion_tokens=getattr(usage, "completion_tokens", None),
                       model=getattr(output, "model", None), system_fingerprint=getattr(output, "system_fingerprint", None))

    async def _stream_once(self, client: Any, request: ChatRequest, kwargs: dict[str, Any]) -> _Answer:
        """One streaming call (server-sent events). Leaving this coroutine early (timeout, cancel) closes the
        connection, and `transformers serve` then stops generating the request (its streamer is cancelled)."""
        body = {k: v for k, v in kwargs.items() if k != "extra_body" and v is not None}
        body.update(kwargs.get("extra_body") or {})
        body.update(messages=request.chat_messages(), stream=True)
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        sent = time.monotonic()
        content: list[str] = []
        reasoning: list[str] = []
        answer = _Answer("", None, None, None, None, None, None)
        chunks = 0
        async with client.stream("POST", f"{self.base_url}/chat/completions", json=body, headers=headers) as reply:
            if reply.status_code >= 400:
                text = (await reply.aread()).decode("utf-8", "replace")
                try:
                    err = json.loads(text)
                    err = err.get("error", err) if isinstance(err, dict) else err
                    if isinstance(err, dict):
                        err = err.get("message") or json.dumps(err)
                    text = str(err)
                except ValueError:
                    pass
                raise _Status(reply.status_code, text[:200], reply.headers)
            async for line in reply.aiter_lines():
                line = line.strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if event.get("error") is not None:
                    error = event["error"]
                    raise _StreamFailure(error.get("message") if isinstance(error, dict) else str(error))
                for choice in event.get("choices") or []:
                    delta = choice.get("delta") or {}
                    text = delta.get("content")
                    thought = delta.get("reasoning_content") or delta.get("reasoning")
                    if (text or thought) and answer.first_token_s is None:
                        answer.first_token_s = time.monotonic() - sent
                    if text:
                        content.append(text)
                        chunks += 1
                    if thought:
                        reasoning.append(thought)
                        chunks += 1
                    if choice.get("finish_reason"):
                        answer.finish_reason = choice["finish_reason"]
                usage = event.get("usage") or {}
                answer.prompt_tokens = usage.get("prompt_tokens", answer.prompt_tokens)
                answer.completion_tokens = usage.get("completion_tokens", answer.completion_tokens)
                answer.model = event.get("model") or answer.model
                answer.system_fingerprint = event.get("system_fingerprint") or answer.system_fingerprint
        if self._spawn_server and answer.finish_reason is None:
            raise _StreamFailure("the stream ended without a finish reason (the server cut the answer off)")
        answer.content = "".join(content)
        answer.reasoning = "".join(reasoning) or None
        if answer.completion_tokens is None:
            answer.completion_tokens = chunks or None  # a server that sends no usage: one token per chunk, roughly
        return answer

    def _error(self, request: ChatRequest, started: float, retries: int, message: str,
               timeouts: int = 0) -> ModelResponse:
        self.stats["errors"] += 1
        return ModelResponse(content="", reasoning="", raw_text="", backend=self.name, model=request.model.model_id,
                             latency_s=time.perf_counter() - started, error=redact(message, self._token),
                             prompt_hash=request.prompt_hash, retries=retries, served_by=self._served(),
                             extra={"timeouts": timeouts})

    def _served(self) -> str:
        return _served_by.get() or (self.base_url or self.config.provider)

    def _to_response(self, answer: _Answer, request: ChatRequest, started: float, retries: int,
                     timeouts: int = 0) -> ModelResponse:
        content, reasoning = answer.content, answer.reasoning
        raw = content
        parts = split_output(content, harmony=request.model.harmony)
        if parts.format != "plain":  # the server leaked Harmony into content
            content, reasoning = parts.content, reasoning or parts.reasoning
        else:
            content = parts.content
        # Keep reasoning re-parseable from raw_text alone (rescore never calls a model), in Harmony token form.
        if reasoning and not raw.startswith(("<|channel|>", "analysis")):
            raw = f"<|channel|>analysis<|message|>{reasoning}<|end|><|start|>assistant<|channel|>final<|message|>{raw}"
        return ModelResponse(content=content, reasoning=reasoning or "", raw_text=raw, backend=self.name,
                             model=request.model.model_id, latency_s=time.perf_counter() - started,
                             served_by=self._served(), finish_reason=answer.finish_reason,
                             prompt_hash=request.prompt_hash, retries=retries,
                             extra={"prompt_tokens": answer.prompt_tokens,
                                    "completion_tokens": answer.completion_tokens,
                                    "response_model": answer.model,
                                    "system_fingerprint": answer.system_fingerprint,
                                    "timeouts": timeouts, "streamed": self.streams})

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()

def _error_body(exc: Any) -> str:
    try:
        data = exc.response.json()
        if isinstance(data, dict):
            err = data.get("error", data)
            if isinstance(err, dict):
                err = err.get("message") or json.dumps(err)[:200]
            return str(err)[:200]
    except Exception:  # noqa: BLE001
        pass
    try:
        return (exc.response.text or "")[:200] or str(exc).splitlines()[0]
    except Exception:  # noqa: BLE001
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _is_transport_error(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"TransportError", "ConnectError", "NetworkError", "RemoteProtocolError", "ReadError",
                         "ConnectionError", "TimeoutException", "OSError"})
