"""`api` backend: any OpenAI-compatible chat server, reached one way whoever it is. Three routes, one HTTP client
(`toxcmp.backends.http.chat`, httpx) and one set of safeguards (`toxcmp.backends.http.resilience`):
- Hugging Face Inference Providers (no `--base-url`): the Hugging Face router's OpenAI-compatible endpoint
  (`toxcmp.backends.providers`);
- a user's server (`--base-url`: vLLM, TGI, llama.cpp, `transformers serve`, an Inference Endpoint);
- a server toxcmp starts for the run (`--api-server local|llamacpp`): `ApiBackend(options)` is then one of the
  small subclasses in `toxcmp.backends.spawned`, which stream, so a request given up on is closed and the server
  stops generating it.

Sends exactly the messages the local backend templates. Results in input order. What keeps a busy server from
being made busier is shared by the whole run (across chunks): in flight, what the server can serve at once (1 for a
spawned `transformers serve`), else 8, `--concurrency` wins; an adaptive per-request timeout (`--timeout` fixes
it); retries with backoff on 408/429/5xx, timeouts and connection errors, at most `max_retries` per request within
a budget for the run, 429s waiting within `rate_limit_wait_s` instead; a circuit breaker.
The token is read from `--token`/`HF_TOKEN` (HF_TOKEN goes to Hugging Face hosts only, never to a spawned server)
and never logged or stored.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from toxcmp.backends import OnResponse, providers
from toxcmp.backends.api_options import ApiOptions
from toxcmp.backends.http.chat import (Answer, ChatClient, HttpStatus, MalformedReply, StreamFailure,
                                       is_transport_error)
from toxcmp.backends.http.resilience import (OVERLOAD_STATUS, RETRYABLE_STATUS, AdaptiveTimeout, Breaker, Gate,
                                             RetryBudget, backoff_delay, retry_after_s)
from toxcmp.backends.providers import valid_providers
from toxcmp.domain.parsing import read_answer
from toxcmp.domain.prompting import ChatRequest
from toxcmp.domain.responses import ModelResponse
from toxcmp.errors import BackendError

DEFAULT_CONCURRENCY = 8  # a remote provider or a user's server: we cannot know what it serves at once
# What a request must carry, whatever a server says of it; any other parameter a 400/422 names is dropped and the
# request sent once more without it, the name recorded on the row (`rejected_parameters`), never silently.
ESSENTIAL_PARAMETERS = frozenset({"model", "messages", "max_tokens", "temperature", "stream"})
# toxcmp's own transport settings: refused, they are dropped and the request sent again like any optional parameter
# (in `reliability()`), but they change no answer, so a row answered without them is no refused-parameter finding
TRANSPORT_PARAMETERS = frozenset({"stream_options"})
REJECTION_STATUS = (400, 422)

__all__ = ["DEFAULT_CONCURRENCY", "ApiBackend", "redact", "valid_providers"]


def _is_hf_host(url: str) -> bool:
    from urllib.parse import urlparse

    host = (urlparse(url).hostname or "").lower()
    return host == "huggingface.co" or host.endswith((".huggingface.co", ".huggingface.cloud", ".hf.space"))


def redact(text: str, token: str | None) -> str:
    """Remove the token (and anything shaped like an HF token) from a message before it is shown or stored."""
    if token:
        text = text.replace(token, "***")
    return re.sub(r"hf_[A-Za-z0-9]{8,}", "hf_***", text)


def _options(config: Any) -> ApiOptions:
    config = config if isinstance(config, ApiOptions) else ApiOptions.build(config)
    if config.api_server in ("auto", "none", ""):
        config = replace(config, api_server=None)
    return config


def _user_token(config: ApiOptions) -> str | None:
    """`--token`, else HF_TOKEN; HF_TOKEN is for Hugging Face: a third-party --base-url gets only an explicit one."""
    if config.base_url and not config.token and not _is_hf_host(config.base_url):
        return None
    return config.token or os.environ.get("HF_TOKEN") or None


class ApiBackend:
    name = "api"
    Options = ApiOptions
    # what a subclass that starts its own server changes (toxcmp.backends.spawned)
    stream_default: ClassVar[bool] = False  # stream when `stream` is not set
    loopback: ClassVar[bool] = False  # a server on 127.0.0.1 that toxcmp started: no proxies
    require_finish_reason: ClassVar[bool] = False  # a stream without one was cut off
    uses_local_cache: ClassVar[bool] = False  # the revision may also be read from the local HF cache

    def __new__(cls, config: Any = None):
        """`ApiBackend(options)` with `api_server` naming a server to start is that server's backend (a subclass)."""
        if cls is ApiBackend:
            from toxcmp.backends.spawned import server_backend

            return super().__new__(server_backend(_options(config).api_server) or cls)
        return super().__new__(cls)

    def __init__(self, config: Any = None):
        """`config`: `ApiOptions`, or run-wide settings (a `BackendConfig`) to take them from."""
        self.config = config = self._settle(_options(config))
        self.provider, self._hub_token, self._token = self._route(config)
        self.base_url = config.base_url.rstrip("/") if config.base_url else None
        if self.base_url and not self.base_url.endswith("/v1"):
            self.base_url = f"{self.base_url}/v1"
        self.served_model = config.served_model
        self.stats = {"requests": 0, "retries": 0, "errors": 0, "timeouts": 0, "breaker_trips": 0,
                      "retry_budget_refused": 0}
        self.rejected: dict[str, str] = {}  # parameter → the server's refusal; no longer sent by this backend
        self.timeouts = AdaptiveTimeout(config.timeout_s)
        self.budget = RetryBudget()
        self.breaker: Breaker | None = None  # once the in-flight count is known (a spawned server: after start)
        self._concurrency_source = ""
        self._server_threads: int | None = None
        self._checked = False
        self._resolved: dict[Any, str] = {}
        self.options = self.config  # the identity is fixed here: a spawned server's URL changes, its label does not

    # -- hooks a subclass overrides ------------------------------------------------------------------------
    def _settle(self, config: ApiOptions) -> ApiOptions:
        """The options this backend's identity is built on."""
        return config

    def _route(self, config: ApiOptions) -> tuple[str | None, str | None, str | None]:
        """(the Inference Provider asked through the router, or None for a base URL; the token for the Hub;
        the token sent with every request)."""
        token = _user_token(config)
        if config.base_url:
            return None, token, token
        providers.check_provider(config.provider)
        token = providers.hub_token(token)
        return config.provider, token, token

    def _ensure_server(self, requests: Sequence[ChatRequest]) -> None:
        """A server to start before sending (none: the server is someone else's)."""

    def _sampling(self) -> dict[str, Any]:
        """Settings every request of this server gets on top of the request's own: what makes the engine behind
        a base URL decode greedily (toxcmp.backends.engines; nothing for a provider)."""
        from toxcmp.backends.engines import ENGINE_SAMPLING

        return dict(ENGINE_SAMPLING.get(self.config.engine or "", {}))

    # -- identity -----------------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return self.config.endpoint_label or self.base_url or f"hf-inference-providers:{self.config.provider}"

    @property
    def streams(self) -> bool:
        """Stream responses (and close a given-up one, which stops a `transformers serve` generating it)."""
        return self.config.stream if self.config.stream is not None else self.stream_default

    def resolved_revision(self, spec: Any) -> str:
        """The commit the Hub says `spec.revision` means now (online only; a spawned local server: also the local
        HF cache's; a bundled model or a llama.cpp server: the GGUF's sha256); the requested revision when that
        cannot be known. Asked once per backend and model. The token goes to the Hub only when it is a Hugging
        Face token."""
        from toxcmp.domain.models import resolved_revision

        if spec not in self._resolved:
            hf_token = self._hub_token if not self.config.base_url or _is_hf_host(self.config.base_url) else None
            self._resolved[spec] = resolved_revision(spec, token=hf_token, local_cache=self.uses_local_cache)
        return self._resolved[spec]

    # -- preflight ---------------------------------------------------------------------------------------
    def check_reachable(self, spec: Any) -> None:
        """A user's server: fail fast when it is down or does not serve the model (nothing to check before a
        spawned server starts, nor for a provider)."""
        self.preflight(self.served_model or spec.model_id)

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
                listed = ", ".join(str(s) for s in served[:10])
                raise BackendError(f"the API server at {self.base_url} does not serve model {model_id!r} "
                                   f"(it serves: {listed})",
                                   f"name the one to ask with --served-model {served[0]!r} (arm form: "
                                   f"api[served_model=…])" if len(served) == 1 else
                                   "name the one to ask with --served-model NAME (arm form: api[served_model=…])")
        self._checked = True

    # -- what the run is told ---------------------------------------------------------------------------
    def concurrency(self) -> tuple[int, str]:
        """Requests in flight at the start, and why."""
        if self.config.concurrency is not None:
            return self.config.concurrency, "--concurrency"
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
                "timeout": self.timeouts.describe(),
                "stream": self.streams,
                "server_threads": self._server_threads,
                "rejected_parameters": dict(self.rejected),
                "engine": self.config.engine, "engine_settings": self._sampling()}

    # -- generation --------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[ChatRequest], on_response: OnResponse | None = None) -> list[ModelResponse]:
        if not requests:
            return []
        if self.provider is not None:
            providers.check_online()
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
        if self.served_model:
            return self.served_model
        if self.provider is not None:
            return providers.router_model(request.model.model_id, self.provider)
        return request.model.model_id

    def _client(self) -> ChatClient:
        from toxcmp import __version__

        # who is billed goes to the router only: a base URL or a spawned server (provider None) never sees it
        headers = providers.router_headers(self.config.bill_to) if self.provider is not None else None
        return ChatClient(self.base_url or providers.ROUTER_URL, self._token, loopback=self.loopback,
                          user_agent=f"toxcmp/{__version__}", headers=headers)

    async def _run_all(self, requests: Sequence[ChatRequest], on_response: OnResponse | None) -> list[ModelResponse]:
        gate = Gate(self._ensure_breaker())
        results: list[ModelResponse | None] = [None] * len(requests)
        fatal: list[BaseException] = []

        async def one(i: int, request: ChatRequest) -> None:
            if fatal:
                return
            try:
                response = await self._request_with_retries(chat, gate, request, fatal)
            except BackendError as exc:
                fatal.append(exc)
                return
            if response is None:
                return
            results[i] = response
            if on_response:
                on_response(i, response)

        chat = self._client()
        try:
            await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
        finally:
            try:
                await chat.aclose()
            except Exception:  # noqa: BLE001 - closing must not mask the real outcome
                pass
        if fatal:
            raise fatal[0]
        return [r for r in results if r is not None]

    def _payload(self, request: ChatRequest) -> dict[str, Any]:
        """The request's settings (not its messages): `extra_body` holds what goes at the body's top level on top
        of them (template options, the server's sampling settings)."""
        gen = request.generation
        kwargs: dict[str, Any] = {"model": self._wire_model(request), "max_tokens": gen.max_new_tokens,
                                  "temperature": gen.temperature, "seed": gen.seed}
        if not gen.greedy:
            kwargs["top_p"] = gen.top_p
        if self.config.logprobs is not None:  # optional: a server that refuses them is asked again without
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = self.config.logprobs
        extra_body = {**request.template_options(), **self._sampling()}
        if extra_body:
            kwargs["extra_body"] = extra_body
        return kwargs

    async def _request_with_retries(self, chat: ChatClient, gate: Gate, request: ChatRequest,
                                    fatal: list[BaseException]) -> ModelResponse | None:
        clock = RequestClock()
        asked = _body(self._payload(request), request.chat_messages())
        if self.streams:  # OpenAI's rule: a stream carries usage only when asked (transformers serve 5.25 does too)
            asked.setdefault("stream_options", {"include_usage": True})
        body = {k: v for k, v in asked.items() if k not in self.rejected}
        max_new = request.generation.max_new_tokens
        breaker = gate.breaker
        self.budget.requests += 1
        attempt, last_error, waited, timeouts = 0, "no attempt made", 0.0, 0
        served: str | None = None  # who served the last attempt, when the router said so

        def failed(message: str) -> ModelResponse:
            return self._error(request, clock, attempt, message, timeouts, served, _dropped(asked, body))

        while True:
            retry_after: float | None = None
            rate_limited = False
            queued_at = time.monotonic()
            await gate.acquire()
            clock.queue_s += time.monotonic() - queued_at
            if fatal:
                gate.release()
                return None
            for name in [k for k in body if k in self.rejected]:  # refused since this request was built
                body.pop(name)
            limit_s = self.timeouts.seconds(max_new, timeouts)  # on the wire now: what is known at this moment
            sent_at = time.monotonic()
            self.stats["requests"] += 1
            served = None
            try:
                async with asyncio.timeout(limit_s):
                    answer = await chat.complete(body, stream=self.streams,
                                                 require_finish_reason=self.require_finish_reason)
                latency = clock.answered(sent_at)
                self.timeouts.observe(latency, answer.first_token_s, answer.completion_tokens, max_new)
                breaker.success(sent_at)
                return self._to_response(answer, request, clock, attempt, timeouts, _dropped(asked, body))
            except HttpStatus as exc:
                status, served = exc.status, exc.served_by
                names = rejected_parameters(status, exc.body, exc.param, body)
                if {"logprobs", "top_logprobs"} & set(names):  # one without the other is malformed: both go
                    names = sorted({*names, *({"logprobs", "top_logprobs"} & set(body))})
                if names:  # sent once more without them, at once: a refusal is not a failure to back off from
                    for name in names:
                        self.rejected.setdefault(name, redact(f"HTTP {status}: {exc.body}", self._token))
                        body.pop(name)
                    continue
                if status in (401, 403):
                    raise BackendError(f"authentication failed at {self.endpoint} (HTTP {status})",
                                       "set HF_TOKEN (or --token) to a valid token with inference access") from None
                if status == 404:
                    raise BackendError(f"{self.endpoint} does not serve model {body['model']!r} (HTTP 404)",
                                       "check --model / --provider") from None
                last_error = f"HTTP {status}: {exc.body}"
                if status not in RETRYABLE_STATUS:
                    return failed(last_error)
                retry_after = retry_after_s(exc.headers)
                rate_limited = status == 429
                if status in OVERLOAD_STATUS:
                    breaker.overload(sent_at, f"HTTP {status}", retry_after or 0.0)
                    self.stats["breaker_trips"] = breaker.trips
            except TimeoutError:
                timeouts += 1
                self.stats["timeouts"] += 1
                last_error = f"timed out after {limit_s:g}s"
                breaker.overload(sent_at, "requests timed out", limit_s / 4)
                self.stats["breaker_trips"] = breaker.trips
            except StreamFailure as exc:
                return failed(f"server error: {exc}")
            except MalformedReply as exc:
                return failed(f"malformed response: {exc}")
            except Exception as exc:  # connection errors and other transport failures
                if not is_transport_error(exc):
                    return failed(f"{type(exc).__name__}: {exc}")
                last_error = f"connection error: {type(exc).__name__}"
            finally:
                clock.wire(sent_at)
                gate.release()  # never held while backing off: a retry queues for a slot like everyone else
            # A rate limit is not a failure: keep waiting it out (Retry-After, else capped backoff) for up to
            # rate_limit_wait_s in total; other errors get max_retries attempts, within the run's retry budget.
            budget_left = self.config.rate_limit_wait_s - waited
            if rate_limited and budget_left > 0:
                delay = min(backoff_delay(min(attempt, 5), retry_after), budget_left)
            elif attempt >= self.config.max_retries:
                return failed(f"{last_error} (gave up after {attempt} retries)")
            elif not self.budget.allow():
                self.stats["retry_budget_refused"] += 1
                return failed(f"{last_error} (not retried: the run's retry budget is spent, {self.budget.spent} "
                              f"retries for {self.budget.requests} requests)")
            else:
                self.budget.spent += 1
                delay = backoff_delay(attempt, retry_after)
            await asyncio.sleep(delay)
            waited += delay
            clock.backoff_s += delay
            attempt += 1
            self.stats["retries"] += 1

    def _error(self, request: ChatRequest, clock: "RequestClock", retries: int, message: str,
               timeouts: int = 0, served_by: str | None = None, dropped: Sequence[str] = ()) -> ModelResponse:
        self.stats["errors"] += 1
        return ModelResponse(content="", reasoning="", raw_text="", backend=self.name, model=request.model.model_id,
                             latency_s=clock.wire_s, error=redact(message, self._token),
                             prompt_hash=request.prompt_hash, retries=retries, served_by=self._served(served_by),
                             extra={"timeouts": timeouts, "rejected_parameters": list(dropped), **clock.facts()})

    def _served(self, served_by: str | None = None) -> str:
        return served_by or self.base_url or self.config.provider

    def _to_response(self, answer: Answer, request: ChatRequest, clock: "RequestClock", retries: int,
                     timeouts: int = 0, dropped: Sequence[str] = ()) -> ModelResponse:
        # What arrived, as it arrived: raw_text is the content exactly as sent, the reasoning the one sent in its
        # own field (else split out of the content); rescore re-reads both (toxcmp.domain.parsing.read_answer).
        parts = read_answer(answer.content, answer.reasoning, answer.reasoning_field, harmony=request.model.harmony)
        return ModelResponse(content=parts.content, reasoning=parts.reasoning, raw_text=answer.content, backend=self.name,
                             model=request.model.model_id, latency_s=clock.latency_s,
                             served_by=self._served(answer.served_by), finish_reason=answer.finish_reason,
                             prompt_hash=request.prompt_hash, retries=retries,
                             extra={"prompt_tokens": answer.prompt_tokens,
                                    "completion_tokens": answer.completion_tokens,
                                    "response_model": answer.model,
                                    "system_fingerprint": answer.system_fingerprint,
                                    "timeouts": timeouts, "streamed": self.streams,
                                    "reasoning_source": parts.source,
                                    # asked for, refused by the server, not sent: this answer is without them
                                    "rejected_parameters": list(dropped),
                                    # token log-probabilities as sent (None: not asked, refused or not sent)
                                    "logprobs_asked": self.config.logprobs, "token_logprobs": answer.tokens,
                                    "first_token_s": answer.first_token_s, **clock.facts()})

    def close(self) -> None:
        """Nothing held between calls (each `generate` opens and closes its own connections)."""


def _body(kwargs: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON sent (but for `stream`): the settings without None values, `extra_body` merged at the top level."""
    body = {k: v for k, v in kwargs.items() if k != "extra_body" and v is not None}
    body["messages"] = messages
    body.update(kwargs.get("extra_body") or {})
    return body


@dataclass
class RequestClock:
    """Where one request's time went. `latency_s` is the request's own time: the answering attempt, from sending
    to the last byte. Waiting for an in-flight slot (`queue_s`), backing off between attempts (`backoff_s`) and
    failed attempts (the rest of `wire_s`) are reported beside it, never in it."""

    queue_s: float = 0.0
    backoff_s: float = 0.0
    wire_s: float = 0.0  # every attempt on the wire, the failed ones too
    latency_s: float = 0.0
    _counted: float | None = None

    def answered(self, sent_at: float) -> float:
        self.latency_s = time.monotonic() - sent_at
        self._counted = sent_at
        self.wire_s += self.latency_s
        return self.latency_s

    def wire(self, sent_at: float) -> None:
        if self._counted != sent_at:  # once per attempt (the answering one ends in `finally` too)
            self._counted = sent_at
            self.wire_s += time.monotonic() - sent_at

    def facts(self) -> dict[str, float]:
        return {"queue_s": round(self.queue_s, 6), "backoff_s": round(self.backoff_s, 6),
                "wire_s": round(self.wire_s, 6)}


def _dropped(asked: dict[str, Any], sent: dict[str, Any]) -> list[str]:
    """The answer-changing parameters a row was answered without (a refused transport setting is not one)."""
    return sorted(k for k in asked if k not in sent and k not in TRANSPORT_PARAMETERS)


def rejected_parameters(status: int, message: str, param: str | None, body: dict[str, Any]) -> list[str]:
    """The optional parameters of `body` that a 400/422 names as its cause: OpenAI's `error.param` (Groq's 400 on
    `logprobs`), else each name the message spells out as a word (`transformers serve`'s 422 "Unexpected fields in
    the request: {'model_identity'}"). Empty: a refusal of something else, an ordinary failed request."""
    if status not in REJECTION_STATUS:
        return []
    optional = [k for k in body if k not in ESSENTIAL_PARAMETERS]
    if param in optional:
        return [param]
    named = [k for k in optional if re.search(rf"(?<![\w-]){re.escape(k)}(?![\w-])", message or "")]
    if "stream_options" in optional and "stream_options" not in named and "include_usage" in (message or ""):
        named.append("stream_options")  # a refusal naming only the inner field
    return named
