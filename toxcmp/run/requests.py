"""Requests → responses through a backend, with the response cache in front of it."""

from __future__ import annotations

from typing import Sequence

from toxcmp.backends import Backend, OnResponse, ResolvesRevision, identity
from toxcmp.domain.models import ModelSpec
from toxcmp.domain.prompting import ChatRequest
from toxcmp.domain.responses import ModelResponse
from toxcmp.run.cache import ResponseCache, cache_key


def resolved_revision(backend: Backend, spec: ModelSpec) -> str | None:
    """What the backend says `spec.revision` means now (a commit, a file hash); None when it cannot say."""
    return backend.resolved_revision(spec) if isinstance(backend, ResolvesRevision) else None


def model_identity(backend: Backend, spec: ModelSpec) -> dict[str, str | None]:
    """Provenance of the weights one backend answers with: the revision asked for and what it resolved to."""
    return {"requested_revision": spec.revision, "resolved_revision": resolved_revision(backend, spec)}


def cache_keys(backend: Backend, requests: Sequence[ChatRequest], repeat: int = 0) -> list[str]:
    """One key per request; each distinct model is resolved once."""
    resolved: dict[ModelSpec, str | None] = {}
    for request in requests:
        if request.model not in resolved:
            resolved[request.model] = resolved_revision(backend, request.model)
    who = identity(backend)
    return [cache_key(backend.name, who, r, resolved[r.model], repeat) for r in requests]


def run_requests(backend: Backend, requests: Sequence[ChatRequest], cache: ResponseCache | None = None,
                 on_response: OnResponse | None = None, repeat: int = 0) -> list[ModelResponse]:
    """Cached answers come back at once; only misses reach the backend. Responses keep input order."""
    results: list[ModelResponse | None] = [None] * len(requests)
    keys = cache_keys(backend, requests, repeat) if cache is not None else []
    misses: list[int] = []
    for i, request in enumerate(requests):
        hit = cache.get(keys[i]) if cache is not None else None
        if hit is not None:
            results[i] = hit
            if on_response:
                on_response(i, hit)
        else:
            misses.append(i)
    if misses:
        def store(j: int, response: ModelResponse) -> None:
            i = misses[j]
            results[i] = response
            if cache is not None:
                cache.put(keys[i], response)  # stored as soon as it arrives: an interrupted run loses nothing
            if on_response:
                on_response(i, response)

        backend.generate([requests[i] for i in misses], on_response=store)
    return [r for r in results if r is not None]
