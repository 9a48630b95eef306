"""A scriptable OpenAI-compatible chat server on 127.0.0.1, for benchmarks and for failure modes a real server
won't produce on demand (429 storms, 5xx, timeouts, malformed bodies, provider quirks). Never a model:
its answers are whatever the script says, or an echo of a fixed label.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict → JSON; str/bytes → sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    token_delay_s: float | None = None  # streaming: seconds between content pieces (None: the server's)


def completion(content: str = "0", reasoning: str | None = None, reasoning_key: str = "reasoning",
               model: str = "fake-model", finish_reason: str = "stop",
               logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A chat completion: `content` as the server sends it, `reasoning` (if any) in the message field
    `reasoning_key` (`reasoning`: Groq, Cerebras, Together, the HF router; `reasoning_content`: vLLM, SGLang,
    llama.cpp, Fireworks); `finish_reason="length"` for an answer the token budget cut off; `logprobs`: the
    choice's `logprobs.content` (OpenAI's shape: token, logprob, top_logprobs), sent in the last content event of
    a stream."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message[reasoning_key] = reasoning
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason,
                         **({"logprobs": {"content": logprobs}} if logprobs is not None else {})}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default backlog (5) resets connections under concurrency 16
    allow_reuse_address = True  # a test may restart a server on the port a killed one used


class FakeChatServer:
    """`with FakeChatServer(models=["m"], delay_s=0.1) as s: s.base_url` — scripted replies, then the default."""

    def __init__(self, models: list[str] | None = None, delay_s: float = 0.0, default: Reply | None = None,
                 responder: Any = None, port: int = 0, token_delay_s: float = 0.0,
                 latency: Callable[[float], float] | None = None, owned_by: str | None = None,
                 routes: dict[str, Any] | None = None):
        self.models = models or ["fake-model"]
        # what an engine says of itself: `owned_by` in /v1/models, JSON bodies of GET paths (/props, /version, …)
        self.owned_by = owned_by
        self.routes = routes or {}
        self.responder = responder  # payload -> Reply, when the script is empty (e.g. answers keyed on the text)
        self.delay_s = delay_s
        # time-varying delay: seconds since the clock started (the first request after `reset()`) -> seconds this
        # request waits; used when its reply sets no delay of its own (a rate-limit episode, a cold start)
        self.latency = latency
        self.clock_started: float | None = None
        self.token_delay_s = token_delay_s  # a `"stream": true` request gets its content piece by piece
        self.streams_finished = 0
        self.streams_abandoned = 0  # the client closed the connection before the stream's end
        self.pieces_sent = 0
        self.default = default or Reply(body=completion())
        self.script: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.headers_seen: list[dict[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> "FakeChatServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop answering and close the socket (idempotent; callable from a request thread)."""
        with self._lock:
            if getattr(self, "_stopped", False):
                return
            self._stopped = True
        self._server.shutdown()
        self._server.server_close()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def reset(self) -> None:
        """Forget what was asked and restart the latency clock (a benchmark's next run)."""
        with self._lock:
            self.requests.clear()
            self.headers_seen.clear()
            self.max_in_flight = 0
            self.clock_started = None

    def _handler(self):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, reply: Reply) -> None:
                body = reply.body
                data = json.dumps(body).encode() if isinstance(body, (dict, list)) else (
                    body.encode() if isinstance(body, str) else (body or b""))
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _stream(self, reply: Reply, include_usage: bool) -> None:
                """The completion as server-sent events, one word per event; stops when the client is gone. Usage
                comes, as OpenAI's API sends it, in a last chunk with no choices, only when the request asked
                (`stream_options.include_usage`)."""
                body = reply.body
                message = body["choices"][0]["message"]
                pieces = re.findall(r"\s*\S+", message.get("content") or "") or [""]
                base = {"id": body.get("id"), "object": "chat.completion.chunk", "created": 0, "model": body.get("model")}
                events = [dict(base, choices=[{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}])]
                key = next((k for k in ("reasoning", "reasoning_content") if message.get(k)), None)
                if key:  # streamed under the field the completion names, as the server would
                    events.append(dict(base, choices=[{"index": 0, "delta": {key: message[key]},
                                                       "finish_reason": None}]))
                events += [dict(base, choices=[{"index": 0, "delta": {"content": p}, "finish_reason": None}])
                           for p in pieces]
                if body["choices"][0].get("logprobs"):
                    events[-1]["choices"][0]["logprobs"] = body["choices"][0]["logprobs"]
                events.append(dict(base, choices=[{"index": 0, "delta": {}, "finish_reason":
                                                   body["choices"][0].get("finish_reason")}]))
                if include_usage:
                    events.append(dict(base, choices=[], usage=dict(body.get("usage") or {},
                                                                    completion_tokens=len(pieces))))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                pause = outer.token_delay_s if reply.token_delay_s is None else reply.token_delay_s
                try:
                    for k, event in enumerate(events):
                        if k > 1 and pause:
                            time.sleep(pause)
                        self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                        self.wfile.flush()
                        with outer._lock:
                            outer.pieces_sent += 1
                    with outer._lock:  # done before the client can read the end and send its next request
                        outer.in_flight -= 1
                        self.released = True
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    with outer._lock:
                        outer.streams_abandoned += 1
                    return
                with outer._lock:
                    outer.streams_finished += 1

            def do_GET(self) -> None:  # noqa: N802
                if self.path in outer.routes:
                    self._send(Reply(body=outer.routes[self.path]))
                elif self.path.rstrip("/").endswith("/models"):
                    owner = {"owned_by": outer.owned_by} if outer.owned_by else {}
                    self._send(Reply(body={"object": "list", "data": [{"id": m, "object": "model", **owner}
                                                                      for m in outer.models]}))
                elif self.path.startswith("/health"):
                    self._send(Reply(body={"status": "ok"}))
                else:
                    self._send(Reply(status=404, body={"error": "not found"}))

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"{}")
                outer.headers_seen.append(dict(self.headers))
                with outer._lock:
                    outer.requests.append(payload)
                    reply = outer.script.popleft() if outer.script else None
                    now = time.monotonic()
                    if outer.clock_started is None:
                        outer.clock_started = now
                    since = now - outer.clock_started
                    outer.in_flight += 1  # from its arrival: a responder that blocks is the server working on it
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                if reply is None:
                    try:
                        reply = outer.responder(payload) if outer.responder else outer.default
                    except BaseException:
                        with outer._lock:
                            outer.in_flight -= 1
                        raise
                wait = reply.delay_s or (outer.latency(since) if outer.latency else outer.delay_s)
                time.sleep(wait)
                streaming = bool(payload.get("stream")) and reply.status == 200 and isinstance(reply.body, dict) \
                    and "choices" in reply.body
                if not streaming:
                    with outer._lock:
                        outer.in_flight -= 1  # before replying: the client may send its next request at once
                    self._send(reply)
                    return
                self.released = False
                try:
                    self._stream(reply, bool((payload.get("stream_options") or {}).get("include_usage")))
                finally:
                    with outer._lock:
                        if not self.released:
                            outer.in_flight -= 1

        return Handler
