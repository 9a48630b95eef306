"""A loopback stand-in for the Hugging Face Hub's model API, reached through the REAL huggingface_hub client
(`HF_ENDPOINT=http://127.0.0.1:PORT`): `GET /api/models/{owner}/{name}?expand=inferenceProviderMapping` answers
what the Hub answers for it — the model's `id` and `inferenceProviderMapping`, an object keyed by provider name
(`{"groq": {"status": "live", "providerId": …, "task": "conversational", …}}`; huggingface_hub 0.33 and 2.x both
parse it, and a list of objects that carry their own `provider`) — and an unknown model is a 404 with the Hub's
`X-Error-Code: RepoNotFound`. Every request is recorded (path, query, headers)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

# What the Hub answers for openai/gpt-oss-20b, in its shape: three live providers and one in staging.
GPT_OSS_20B = "openai/gpt-oss-20b"
MAPPING = {
    "groq": {"status": "live", "providerId": "openai/gpt-oss-20b", "task": "conversational", "isModelAuthor": False},
    "novita": {"status": "staging", "providerId": "openai/gpt-oss-20b-staging", "task": "conversational",
               "isModelAuthor": False},
    "fireworks-ai": {"status": "live", "providerId": "accounts/fireworks/models/gpt-oss-20b", "task": "conversational",
                     "isModelAuthor": False},
    "together": {"status": "live", "providerId": "OpenAI/gpt-oss-20B", "task": "conversational", "isModelAuthor": False},
}
UNSERVED = "someone/unserved-model"  # on the Hub, served by no provider


class FakeHub:
    """`with FakeHub({model_id: mapping}) as hub: hub.url` — `status` forces every answer's HTTP status."""

    def __init__(self, models: dict[str, Any] | None = None, status: int | None = None):
        self.models = {GPT_OSS_20B: MAPPING, UNSERVED: {}} if models is None else models
        self.status = status
        self.requests: list[dict[str, Any]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                url = urlparse(self.path)
                outer.requests.append({"path": unquote(url.path), "query": parse_qs(url.query),
                                       "headers": {k.lower(): v for k, v in self.headers.items()}})
                if outer.status is not None:
                    self._send(outer.status, {"error": "scripted failure"})
                    return
                model_id = unquote(url.path).removeprefix("/api/models/")
                if model_id not in outer.models:
                    self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    return
                self._send(200, {"_id": "0123456789abcdef01234567", "id": model_id,
                                 "inferenceProviderMapping": outer.models[model_id]})

        return Handler


def client_online(monkeypatch: Any, url: str) -> None:
    """Point toxcmp (HF_ENDPOINT, read at call time) at `url` and let the real huggingface_hub client send: the
    tests start under HF_HUB_OFFLINE=1, which huggingface_hub read once at import (its `constants`), and 0.33
    also froze into the sessions it made. Undone with `monkeypatch` (call `reset_sessions` after the test)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    reset_sessions()


def reset_sessions() -> None:
    """Drop huggingface_hub's cached HTTP sessions (0.33: `reset_sessions`; 2.x: `close_session`)."""
    from huggingface_hub import utils

    reset = getattr(utils, "reset_sessions", None) or utils.close_session
    reset()
