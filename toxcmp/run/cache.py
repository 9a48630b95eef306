"""On-disk response cache (diskcache, SQLite-backed, safe across processes).

Key = sha256 of backend name, the backend's identity (its endpoint and every option it declares as
answer-changing: provider, base URL, served model, server kind, strategy, dtype, …), model id + requested revision + resolved revision (the commit or
file hash the backend says the revision means now, so an updated model is not answered from the cache), the
rendered request (messages and template options), generation config and parser version. Values are JSON strings of `ModelResponse` fields;
anything that does not decode back to one is treated as corrupted: deleted and recomputed. Errors are never
stored. Tokens are never part of a key or a value.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toxcmp.domain.parsing import PARSER_VERSION
from toxcmp.domain.prompting import ChatRequest
from toxcmp.domain.responses import ModelResponse
from toxcmp.errors import UsageError

log = logging.getLogger(__name__)
_SCHEMA = 3  # 2: keyed on the resolved revision; 3: on the backend's declared identity


def cache_key(backend: str, identity: Any, request: ChatRequest, resolved_revision: str | None = None,
              repeat: int = 0) -> str:
    """`identity`: what makes the backend's answers its own (`toxcmp.backends.identity`; any JSON value).
    `resolved_revision`: what the backend says `request.model.revision` means now; the requested one if unknown.
    `repeat`: the k-th independent answer to the same request (`--repeats`); repeat 0 keeps the plain key."""
    payload = {"schema": _SCHEMA, "backend": backend, "identity": identity, "parser": PARSER_VERSION,
               "request": request.payload(), "resolved_revision": resolved_revision or request.model.revision}
    if repeat:
        payload["repeat"] = repeat
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class CacheGroup:
    backend: str
    model: str
    entries: int
    bytes: int


class ResponseCache:
    def __init__(self, directory: Path):
        import diskcache

        self.directory = Path(directory) / "responses"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._cache = diskcache.Cache(str(self.directory), timeout=60)
        except (sqlite3.DatabaseError, OSError) as exc:
            if isinstance(exc, OSError) and not isinstance(exc, sqlite3.DatabaseError):
                raise UsageError(f"cache dir {self.directory} is not usable: {exc.strerror or exc}",
                                  "pass --cache-dir to a writable folder or --no-cache") from exc
            aside = self.directory.with_name(f"responses.corrupt-{int(time.time())}")
            self.directory.rename(aside)
            log.warning("cache database was corrupted; moved it to %s and started a new one", aside)
            self.directory.mkdir(parents=True, exist_ok=True)
            self._cache = diskcache.Cache(str(self.directory), timeout=60)

    def get(self, key: str) -> ModelResponse | None:
        try:
            raw = self._cache.get(key)
        except Exception as exc:  # unreadable pickle/row: treat as a miss
            log.warning("cache entry %s unreadable (%s); recomputing", key[:12], exc)
            self._discard(key)
            return None
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            response = ModelResponse.from_dict(data["response"])
            if not isinstance(response.raw_text, str) or response.error is not None:
                raise ValueError("not a successful response")
        except Exception as exc:
            log.warning("cache entry %s corrupted (%s); recomputing", key[:12], exc)
            self._discard(key)
            return None
        return response.as_cached()

    def put(self, key: str, response: ModelResponse) -> None:
        if response.error is not None:
            return
        record = {"backend": response.backend, "model": response.model, "stored_at": time.time(),
                  "response": response.to_dict() | {"cached": False}}
        self._cache.set(key, json.dumps(record, ensure_ascii=False), tag=f"{response.backend}\x1f{response.model}")

    def _discard(self, key: str) -> None:
        try:
            self._cache.delete(key)
        except Exception:  # noqa: BLE001 - best effort
            pass

    def __len__(self) -> int:
        return len(self._cache)

    def info(self) -> list[CacheGroup]:
        groups: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        con = self._cache._sql  # one query beats iterating values
        for tag, size, raw in con("SELECT tag, size, value FROM Cache").fetchall():
            backend, _, model = (tag or "?\x1f?").partition("\x1f")
            group = groups[(backend, model)]
            group[0] += 1
            group[1] += size or (len(raw) if isinstance(raw, (str, bytes)) else 0)
        return [CacheGroup(b, m, n, s) for (b, m), (n, s) in sorted(groups.items())]

    def clear(self, backend: str | None = None, model: str | None = None) -> int:
        if backend is None and model is None:
            return self._cache.clear()
        removed = 0
        for group in self.info():
            if (backend is None or group.backend == backend) and (model is None or group.model == model):
                removed += self._cache.evict(f"{group.backend}\x1f{group.model}")
        return removed

    def close(self) -> None:
        self._cache.close()
