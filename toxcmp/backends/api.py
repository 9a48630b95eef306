"""`api` backend: Hugging Face Inference Providers or any OpenAI-compatible server (vLLM, TGI, llama.cpp,
`transformers serve`) through `huggingface_hub.AsyncInferenceClient`.

Sends exactly the messages the local backend templates. Bounded concurrency, results in input order,
retries with exponential backoff + jitter on 408/429/5xx, timeouts and connection errors (honouring
Retry-After). The token is read from `--token`/`HF_TOKEN`, passed to the client, and never logged or stored.
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
from dataclasses import replace
from typing import Any, Sequence

from ..errors import BackendError, UnknownNameError
from ..parsing import split_output
from ..prompting import ChatRequest
from ..results import ModelResponse
from . import BackendConfig, OnResponse

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}
_RETRY_BASE_S = float(os.environ.get("TOXCMP_RETRY_BASE_S", "0.5"))
_RETRY_CAP_S = 30.0
_served_by: contextvars.ContextVar[str | None] = contextvars.ContextVar("toxcmp_served_by", default=None)


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


class ApiBackend:
    name = "api"

    def __init__(self, config: BackendConfig):
        self.config = config
        if config.api_server not in (None, "", "none", "local"):
            from ..errors import UsageError

            raise UsageError(f"unknown --api-server {config.api_server!r}", "use 'local' or 'none'")
        self._spawn_server = config.api_server == "local"
        self._server = None
        if self._spawn_server:  # the URL (random port) is known only after start; the cache identity is not
            self.config = config = replace(config, endpoint_label=config.endpoint_label or "transformers-serve")
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
        self.base_url = config.base_url.rstrip("/") if config.base_url else None
        if self.base_url and not self.base_url.endswith("/v1"):
            self.base_url = f"{self.base_url}/v1"
        if config.concurrency < 1:
            raise BackendError(f"concurrency must be ≥ 1, got {config.concurrency}", "pass --concurrency 1 or more")
        self.served_model = config.served_model
        self.stats = {"requests": 0, "retries": 0, "errors": 0}
        self._checked = False
        self._resolved: dict[Any, str] = {}

    @property
    def endpoint(self) -> str:
        return self.config.endpoint_label or self.base_url or f"hf-inference-providers:{self.config.provider}"

    def resolved_revision(self, spec: Any) -> str:
        """The commit the Hub says `spec.revision` means now (online only; a spawned local server: also the local
        HF cache's; a bundled model: its GGUF's sha256); the requested revision when that cannot be known. Asked
        once per backend and model. The token goes to the Hub only when it is a Hugging Face token."""
        from ..models import resolved_revision

        if spec not in self._resolved:
            hf_token = self._token if not self.config.base_url or _is_hf_host(self.config.base_url) else None
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
            reply = httpx.get(f"{self.base_url}/models", headers=headers, timeout=min(10.0, self.config.timeout_s))
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
        """`--api-server local`: start `transformers serve` for the model only when a request must be sent."""
        if not self._spawn_server or self._server is not None:
            return
        specs = {r.model for r in requests}
        if len(specs) != 1:
            raise BackendError("--api-server local serves one model per run", "run one model at a time")
        from .server import local_api_server

        self._server = local_api_server(next(iter(specs)), self.config.cache_dir).start()
        self.base_url, self.served_model = self._server.base_url, self._server.served_model

    def generate(self, requests: Sequence[ChatRequest], on_response: OnResponse | None = None) -> list[ModelResponse]:
        if not requests:
            return []
        self._ensure_server(requests)
        for model_id in {self._wire_model(r) for r in requests}:
            self.preflight(model_id)
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
        client = _make_client(self.base_url, self.config.provider, self._token, self.config.timeout_s)
        semaphore = asyncio.Semaphore(self.config.concurrency)
        results: list[ModelResponse | None] = [None] * len(requests)
        fatal: list[BaseException] = []

        async def one(i: int, request: ChatRequest) -> None:
            async with semaphore:
                if fatal:
                    return
                try:
                    response = await self._request_with_retries(client, request)
                except BackendError as exc:
                    fatal.append(exc)
                    return
            results[i] = response
            if on_response:
                on_response(i, response)

        try:
            await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
        finally:
            try:
                await client.close()
            except Exception:  # noqa: BLE001 - closing must not mask the real outcome
                pass
        if fatal:
            raise fatal[0]
        return [r for r in results if r is not None]

    async def _request_with_retries(self, client: Any, request: ChatRequest) -> ModelResponse:
        from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError

        started = time.perf_counter()
        gen = request.generation
        extra_body = dict(request.template_options()) or None
        kwargs: dict[str, Any] = {"model": self._wire_model(request), "max_tokens": gen.max_new_tokens,
                                  "temperature": gen.temperature, "seed": gen.seed}
        if not gen.greedy:
            kwargs["top_p"] = gen.top_p
        if extra_body:
            kwargs["extra_body"] = extra_body
        attempt, last_error, waited = 0, "no attempt made", 0.0
        while True:
            self.stats["requests"] += 1
            retry_after: float | None = None
            rate_limited = False
            try:
                _served_by.set(None)
                output = await client.chat_completion(request.chat_messages(), **kwargs)
                return self._to_response(output, request, started, attempt)
            except HfHubHTTPError as exc:
                status = exc.response.status_code if exc.response is not None else 0
                body = _error_body(exc)
                if status in (401, 403):
                    raise BackendError(f"authentication failed at {self.endpoint} (HTTP {status})",
                                       "set HF_TOKEN (or --token) to a valid token with inference access") from None
                if status == 404:
                    raise BackendError(f"{self.endpoint} does not serve model {kwargs['model']!r} (HTTP 404)",
                                       "check --model / --provider") from None
                last_error = f"HTTP {status}: {body}"
                if status not in RETRYABLE_STATUS:
                    return self._error(request, started, attempt, last_error)
                retry_after = _retry_after_s(exc.response.headers if exc.response is not None else None)
                rate_limited = status == 429
            except InferenceTimeoutError:
                last_error = f"timed out after {self.config.timeout_s:g}s"
            except (json.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
                return self._error(request, started, attempt, f"malformed response: {type(exc).__name__}: {exc}")
            except Exception as exc:  # connection errors and other transport failures
                if type(exc).__name__ == "OfflineModeIsEnabled":
                    raise BackendError("HF_HUB_OFFLINE=1 blocks Inference Providers",
                                       "unset HF_HUB_OFFLINE, or use --base-url / --api-server local") from None
                if not _is_transport_error(exc):
                    return self._error(request, started, attempt, f"{type(exc).__name__}: {exc}")
                last_error = f"connection error: {type(exc).__name__}"
            # A rate limit is not a failure: keep waiting it out (Retry-After, else capped backoff) for up to
            # rate_limit_wait_s in total; other errors get max_retries attempts.
            budget_left = self.config.rate_limit_wait_s - waited
            if rate_limited and budget_left > 0:
                delay = min(backoff_delay(min(attempt, 5), retry_after), budget_left)
            elif attempt >= self.config.max_retries:
                return self._error(request, started, attempt, f"{last_error} (gave up after {attempt} retries)")
            else:
                delay = backoff_delay(attempt, retry_after)
            await asyncio.sleep(delay)
            waited += delay
            attempt += 1
            self.stats["retries"] += 1

    def _error(self, request: ChatRequest, started: float, retries: int, message: str) -> ModelResponse:
        self.stats["errors"] += 1
        return ModelResponse(content="", reasoning="", raw_text="", backend=self.name, model=request.model.model_id,
                             latency_s=time.perf_counter() - started, error=redact(message, self._token),
                             prompt_hash=request.prompt_hash, retries=retries, served_by=self._served())

    def _served(self) -> str:
        return _served_by.get() or (self.base_url or self.config.provider)

    def _to_response(self, output: Any, request: ChatRequest, started: float, retries: int) -> ModelResponse:
        choice = output.choices[0]
        message = choice.message
        content = message.content or ""
        reasoning = getattr(message, "reasoning", None) or getattr(message, "reasoning_content", None)
        if reasoning is None and isinstance(message, dict):
            reasoning = message.get("reasoning") or message.get("reasoning_content")
        raw = content
        parts = split_output(content, harmony=request.model.harmony)
        if parts.format != "plain":  # the server leaked Harmony into content
            content, reasoning = parts.content, reasoning or parts.reasoning
        else:
            content = parts.content
        # Keep reasoning re-parseable from raw_text alone (rescore never calls a model), in Harmony token form.
        if reasoning and not raw.startswith(("<|channel|>", "analysis")):
            raw = f"<|channel|>analysis<|message|>{reasoning}<|end|><|start|>assistant<|channel|>final<|message|>{raw}"
        usage = getattr(output, "usage", None)
        return ModelResponse(content=content, reasoning=reasoning or "", raw_text=raw, backend=self.name,
                             model=request.model.model_id, latency_s=time.perf_counter() - started,
                             served_by=self._served(), finish_reason=getattr(choice, "finish_reason", None),
                             prompt_hash=request.prompt_hash, retries=retries,
                             extra={"prompt_tokens": getattr(usage, "prompt_tokens", None),
                                    "completion_tokens": getattr(usage, "completion_tokens", None),
                                    "response_model": getattr(output, "model", None),
                                    "system_fingerprint": getattr(output, "system_fingerprint", None)})

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
