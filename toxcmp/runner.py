"""Requests → responses through a backend, with the response cache in front of it."""

from __future__ import annotations

from typing import Sequence

from .backends import Backend, OnResponse
from .cache import ResponseCache, cache_key
from .prompting import ChatRequest
from .results import ModelResponse


def run_requests(backend: Backend, requests: Sequence[ChatRequest], cache: ResponseCache | None = None,
                 on_response: OnResponse | None = None) -> list[ModelResponse]:
    """Cached answers come back at once; only misses reach the backend. Responses keep input order."""
    results: list[ModelResponse | None] = [None] * len(requests)
    keys = [cache_key(backend.name, backend.endpoint, r) for r in requests] if cache is not None else []
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
