"""One OpenAI-compatible `/chat/completions` client over httpx, for every route the `api` backend takes: the
Hugging Face router (Inference Providers), a user's base URL and a server toxcmp spawned. Plain or streamed
(server-sent events); leaving a streamed call early (a timeout, a cancel) closes its connection, so a server that
watches for it (`transformers serve`) stops generating the request.

Failures come out as a few exception types the retry loop tells apart: `HttpStatus` (an error status, with the
server's message and headers), `StreamFailure` (the server said its generation failed), `MalformedReply` (a body
that is not a chat completion) and httpx's own `TransportError` (connection trouble, see `is_transport_error`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

PROVIDER_HEADER = "x-inference-provider"  # the Hugging Face router names who served a request


class HttpStatus(Exception):
    """An HTTP error status: its code, the server's message (short) and the response headers (Retry-After)."""

    def __init__(self, status: int, body: str, headers: Any = None, param: str | None = None):
        super().__init__(f"HTTP {status}: {body}")
        self.status, self.body, self.headers = status, body, headers
        self.param = param  # the parameter an OpenAI-style error names (`{"error": {"param": …}}`), if any

    @property
    def served_by(self) -> str | None:
        return self.headers.get(PROVIDER_HEADER) if self.headers is not None else None


class StreamFailure(Exception):
    """The server reported an error inside the stream (its generation failed), or cut the stream short."""


class MalformedReply(ValueError):
    """A 200 whose body is not a chat completion."""


@dataclass
class Answer:
    content: str
    reasoning: str | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    model: str | None
    system_fingerprint: str | None
    first_token_s: float | None = None  # streaming: seconds from send to the first generated text
    served_by: str | None = None  # the router's provider header, when there is one
    reasoning_field: str | None = None  # the message field the reasoning came in: "reasoning" or "reasoning_content"
    tokens: list[dict[str, Any]] | None = None  # token log-probabilities as sent (`token_logprobs`); None: none sent


def error_text(text: str, fallback: str = "") -> str:
    """The message of an error body (OpenAI's `{"error": {"message": …}}`, a bare `{"error": "…"}`, or text)."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            err = err.get("message") or json.dumps(err)[:200]
        return str(err)[:200]
    return text[:200] or fallback


def error_param(text: str) -> str | None:
    """The request parameter an OpenAI-style error body names (`{"error": {"param": "logprobs"}}`), if any."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    err = data.get("error") if isinstance(data, dict) else None
    param = err.get("param") if isinstance(err, dict) else None
    return param if isinstance(param, str) and param else None


def is_transport_error(exc: BaseException) -> bool:
    """Connection trouble worth a retry (refused, reset, cut off mid-body), as opposed to a bug."""
    return isinstance(exc, (httpx.TransportError, OSError))


class ChatClient:
    """`async with ChatClient(url, token) as chat: await chat.complete(body, stream=…)` — one connection pool for
    one `generate` call. No client-side read timeout: the caller's per-request deadline rules (connecting gets
    10 s). `loopback`: a server toxcmp started on 127.0.0.1, reached without proxies."""

    def __init__(self, base_url: str, token: str | None = None, *, loopback: bool = False,
                 user_agent: str | None = None, headers: dict[str, str] | None = None):
        self.url = f"{base_url.rstrip('/')}/chat/completions"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        if user_agent:
            self.headers["User-Agent"] = user_agent
        self.headers.update(headers or {})  # the route's own (the router's X-HF-Bill-To)
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10.0), trust_env=not loopback,
                                         follow_redirects=True)  # httpx drops Authorization on a cross-origin hop

    async def __aenter__(self) -> "ChatClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def complete(self, body: dict[str, Any], *, stream: bool = False,
                       require_finish_reason: bool = False) -> Answer:
        """One chat completion. `body`: the request as sent, without `stream` (set here). `require_finish_reason`:
        a stream that ends without one was cut off (llama.cpp's server does that to an interrupted request)."""
        body = {**body, "stream": stream}
        if not stream:
            reply = await self._client.post(self.url, json=body, headers=self.headers)
            if reply.status_code >= 400:
                raise HttpStatus(reply.status_code, error_text(reply.text, reply.reason_phrase), reply.headers,
                                 error_param(reply.text))
            try:
                answer = _parse_completion(json.loads(reply.content))
            except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
                raise MalformedReply(f"{type(exc).__name__}: {exc}") from None
            answer.served_by = reply.headers.get(PROVIDER_HEADER)
            return answer
        sent = time.monotonic()
        async with self._client.stream("POST", self.url, json=body, headers=self.headers) as reply:
            if reply.status_code >= 400:
                text = (await reply.aread()).decode("utf-8", "replace")
                raise HttpStatus(reply.status_code, error_text(text, reply.reason_phrase), reply.headers,
                                 error_param(text))
            try:
                answer = await _read_stream(reply, sent)
            except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
                raise MalformedReply(f"{type(exc).__name__}: {exc}") from None
            answer.served_by = reply.headers.get(PROVIDER_HEADER)
        if require_finish_reason and answer.finish_reason is None:
            raise StreamFailure("the stream ended without a finish reason (the server cut the answer off)")
        return answer


_REASONING_KEYS = ("reasoning", "reasoning_content")  # Groq, Cerebras, Together, HF router / vLLM, SGLang, llama.cpp


def _reasoning(message: dict[str, Any]) -> tuple[str | None, str | None]:
    """The reasoning a message (or a stream delta) sent in a field of its own, and that field's name."""
    for key in _REASONING_KEYS:
        value = message.get(key)
        if isinstance(value, str) and value:
            return value, key
    return None, None


_LOGPROB_PARTS = {"content": "content", "reasoning_content": "reasoning", "reasoning": "reasoning"}


def token_logprobs(logprobs: Any) -> list[dict[str, Any]]:
    """A choice's `logprobs` (OpenAI's shape: `{"content": [{"token", "logprob", "top_logprobs": [...]}, …]}`,
    and the reasoning's under `reasoning_content`/`reasoning` where a server sends them) as one list in the order
    sent: {"part": "content" | "reasoning", "token", "logprob", "top": [[token, logprob], …]}."""
    out: list[dict[str, Any]] = []
    if not isinstance(logprobs, dict):
        return out
    for key, part in _LOGPROB_PARTS.items():
        for item in logprobs.get(key) or []:
            if not isinstance(item, dict) or not isinstance(item.get("logprob"), (int, float)):
                continue
            top = [[t.get("token"), float(t["logprob"])] for t in item.get("top_logprobs") or []
                   if isinstance(t, dict) and isinstance(t.get("logprob"), (int, float))]
            out.append({"part": part, "token": item.get("token"), "logprob": float(item["logprob"]), "top": top})
    return out


def _parse_completion(data: dict[str, Any]) -> Answer:
    choice = data["choices"][0]
    message = choice.get("message") or {}
    usage = data.get("usage") or {}
    reasoning, field = _reasoning(message)
    sent = choice.get("logprobs")
    return Answer(content=message.get("content") or "", reasoning=reasoning, reasoning_field=field,
                  tokens=token_logprobs(sent) if sent else None,
                  finish_reason=choice.get("finish_reason"),
                  prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens"),
                  model=data.get("model"), system_fingerprint=data.get("system_fingerprint"))


async def _read_stream(reply: httpx.Response, sent: float) -> Answer:
    content: list[str] = []
    reasoning: list[str] = []
    answer = Answer("", None, None, None, None, None, None)
    chunks = 0
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
            raise StreamFailure(error.get("message") if isinstance(error, dict) else str(error))
        for choice in event.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            thought, field = _reasoning(delta)
            answer.reasoning_field = answer.reasoning_field or field
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
            if choice.get("logprobs"):
                answer.tokens = (answer.tokens or []) + token_logprobs(choice["logprobs"])
        usage = event.get("usage") or {}
        answer.prompt_tokens = usage.get("prompt_tokens", answer.prompt_tokens)
        answer.completion_tokens = usage.get("completion_tokens", answer.completion_tokens)
        answer.model = event.get("model") or answer.model
        answer.system_fingerprint = event.get("system_fingerprint") or answer.system_fingerprint
    answer.content = "".join(content)
    answer.reasoning = "".join(reasoning) or None
    if answer.completion_tokens is None:
        answer.completion_tokens = chunks or None  # a server that sends no usage: one token per chunk, roughly
    return answer
