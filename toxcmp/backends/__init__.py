"""Backend protocol and registry.

A backend turns a batch of chat requests into responses. It knows nothing about policies, labels or datasets.
Built-in backends are lazy factories (torch/transformers are imported only when `local` is used); third-party
packages register more under the entry-point group `toxcmp.backends` (`name = "module:Class"`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable, Protocol, Sequence, runtime_checkable

from toxcmp.errors import BackendError, UnknownNameError
from toxcmp.domain.prompting import ChatRequest
from toxcmp.domain.responses import ModelResponse

ENTRY_POINT_GROUP = "toxcmp.backends"
OnResponse = Callable[[int, ModelResponse], None]

_BUILTIN: dict[str, str] = {
    "api": "toxcmp.backends.api:ApiBackend",
    "local": "toxcmp.backends.local:LocalBackend",
    "recorded": "toxcmp.backends.recorded:RecordedBackend",
}


SPAWNED_SERVERS = ("local", "llamacpp")  # --api-server values that start a server on 127.0.0.1


@dataclass(frozen=True)
class BackendConfig:
    """Options for every backend; each reads the ones it understands."""

    # local
    device: str = "auto"
    dtype: str = "auto"
    batch_size: str = "auto"  # "auto" (memory-aware) or a number
    strategy: str = "prefix"  # "prefix" (batched + shared policy-prefix KV cache), "batched", or "naive" (reference)
    # api
    base_url: str | None = None
    provider: str = "auto"
    token: str | None = field(default=None, repr=False)  # never printed, logged or cached
    concurrency: int | None = None  # None: what the server can serve at once (1 for a spawned transformers serve), else 8
    timeout_s: float | None = None  # None: adaptive (max new tokens × measured s/token, with a floor); N: fixed seconds
    max_retries: int = 4  # per request, for 5xx, timeouts and connection errors; the run also has a shared budget
    rate_limit_wait_s: float = 300.0  # 429s are retried (honouring Retry-After) until this much waiting in total
    served_model: str | None = None  # the name the server knows the model by, when it differs from the id
    endpoint_label: str | None = None  # stable cache identity for a server whose URL changes (random port)
    api_server: str | None = None  # "local": start `transformers serve` for the model on first use
    stream: bool | None = None  # None: stream from a spawned server (a timed-out request is then cancelled there)
    # recorded
    recording: str | None = None  # a toxcmp run dir / results.parquet, or a study parquet
    side: str | None = None  # which side of a two-sided recording: a/b, a backend label, or api/local
    # shared
    cache_dir: Path | None = None
    threads: int | None = None  # torch threads of the local model / a spawned server; None: chosen from the cores


@runtime_checkable
class Backend(Protocol):
    name: str

    @property
    def endpoint(self) -> str:
        """Where answers come from (device, base URL or provider); part of the cache key."""

    def generate(self, requests: Sequence[ChatRequest], on_response: OnResponse | None = None) -> list[ModelResponse]:
        """One response per request, in input order; failures are responses with `error` set."""

    def close(self) -> None: ...


def registry() -> dict[str, str]:
    found = dict(_BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def backend_names() -> list[str]:
    return sorted(registry())


def get_backend(name: str, config: BackendConfig | None = None) -> Backend:
    target = registry().get(name)
    if target is None:
        raise UnknownNameError("backend", name, backend_names())
    module_name, _, attr = target.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        extra = {"local": "pip install 'toxcmp[local]'", "api": "pip install huggingface_hub"}.get(name, "")
        raise BackendError(f"backend {name!r} cannot be imported: {exc}", extra or "install its package") from exc
    backend = factory(config or BackendConfig())
    backend.name = name
    return backend
