"""Backend protocol, optional abilities and the registry.

A backend turns a batch of chat requests into responses. It knows nothing about policies, labels or datasets.
Each backend declares its options (`Options`, a `BackendOptions` subclass: types, defaults, which ones change
answers); the cache key and the run id are derived from that declaration. What only some backends can do is a
Protocol below, checked with `isinstance`, never by name. Built-in backends are lazy factories (torch and
transformers are imported only when `local` is used); third-party packages register more under the entry-point
group `toxcmp.backends` (`name = "module:Class"`). How to add one: `toxcmp/backends/HOWTO.md`.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from toxcmp.backends.options import BackendOptions
from toxcmp.domain.models import ModelSpec
from toxcmp.domain.prompting import ChatRequest
from toxcmp.domain.responses import ModelResponse
from toxcmp.errors import BackendError, UnknownNameError

ENTRY_POINT_GROUP = "toxcmp.backends"
OnResponse = Callable[[int, ModelResponse], None]

_BUILTIN: dict[str, str] = {
    "api": "toxcmp.backends.api:ApiBackend",
    "local": "toxcmp.backends.local:LocalBackend",
    "recorded": "toxcmp.backends.recorded:RecordedBackend",
}
_INSTALL_HINTS = {"toxcmp.backends.local": "pip install 'toxcmp[local]'"}


@dataclass(frozen=True)
class BackendConfig:
    """Run-wide settings: what the command line (or a library caller) sets for every arm. Each backend takes the
    keys its own `Options` declare and ignores the rest; an arm's spec overrides them for that arm."""

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
    logprobs: int | None = None  # ask for token log-probabilities with the top K alternatives; None: not asked
    # recorded
    recording: str | None = None  # a toxcmp run dir / results.parquet, or a study parquet
    side: str | None = None  # which side of a two-sided recording: a/b, a backend label, or api/local
    # shared
    cache_dir: Path | None = None
    threads: int | None = None  # torch threads of the local model / a spawned server; None: chosen from the cores


@runtime_checkable
class Backend(Protocol):
    name: str
    options: BackendOptions  # its declared `Options` (a class attribute; `BackendOptions` when it declares none)

    @property
    def endpoint(self) -> str:
        """Where answers come from (device, base URL or provider); part of the cache key."""

    def generate(self, requests: Sequence[ChatRequest], on_response: OnResponse | None = None) -> list[ModelResponse]:
        """One response per request, in input order; failures are responses with `error` set."""

    def close(self) -> None: ...


# -- optional abilities ------------------------------------------------------------------------------------
@runtime_checkable
class Preflight(Protocol):
    def check_reachable(self, spec: ModelSpec) -> None:
        """Fail fast (BackendError) when the answers cannot come: a dead server, a model it does not serve."""


@runtime_checkable
class ResolvesRevision(Protocol):
    def resolved_revision(self, spec: ModelSpec) -> str:
        """What `spec.revision` means now for this backend (a commit, a file hash): part of the cache key."""


@runtime_checkable
class ReportsReliability(Protocol):
    def reliability(self) -> dict[str, Any]:
        """Counters and choices of this run (retries, timeouts, breaker trips, concurrency) for provenance."""


@runtime_checkable
class AnswersKnownRows(Protocol):
    """Holds answers for some rows only (a recording): a run whose arms all are such, on the default dataset,
    takes the rows every one of them holds."""

    rows: int  # how many rows it holds

    def covers(self, example_id: str | None, text: str) -> bool: ...


@runtime_checkable
class SpawnsServer(Protocol):
    def start_server(self, requests: Sequence[ChatRequest]) -> None:
        """Start the server it answers from now (a benchmark keeps start-up out of its clock)."""


@runtime_checkable
class ScoresTokens(Protocol):
    """Holds the model in process: can score any text under it (label margins, token divergences)."""

    def load(self, spec: ModelSpec) -> Any: ...

    def prompt_for(self, loaded: Any, request: ChatRequest) -> str:
        """The exact text the model is given for `request`."""

    def continuation_logits(self, request: ChatRequest, ids: list[int]) -> Any:
        """The model's logits predicting each of `ids` after the exact prompt of `request` (len(ids) × vocab)."""


@dataclass(frozen=True)
class TokenScores:
    """Given tokens scored under a model: each one's log p after the prompt and what came before it, and the
    most likely token ids at its position, best first."""

    logprobs: list[float]
    top_ids: list[list[int]]


@runtime_checkable
class ScoresTokensInBatches(Protocol):
    """A `ScoresTokens` that scores many (request, ids) at once, in fewer forward passes than one each."""

    def continuation_scores_many(self, items: Sequence[tuple[ChatRequest, list[int]]], top_k: int,
                                 reuse: bool = True) -> list[TokenScores]:
        """Each item's `TokenScores` (`top_k` ids a position), in order; `reuse=False`: computed even where the
        backend already holds them (a benchmark's worst case)."""


# -- registry ----------------------------------------------------------------------------------------------
def _plugins() -> dict[str, str]:
    """Installed entry-point backends, scanned once per process: a scan reads every installed package's metadata
    (~8 ms here) and a run asks for a backend's class per row. Keyed by the scan function, so a test that swaps
    `entry_points` sees its own plugins."""
    return _scan(entry_points)


@functools.lru_cache(maxsize=1)
def _scan(scan: Callable[..., Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for ep in scan(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)  # the first of two with one name, as before
    return found


def registry() -> dict[str, str]:
    found = dict(_BUILTIN)
    for name, value in _plugins().items():
        found.setdefault(name, value)
    return found


def backend_names() -> list[str]:
    return sorted(registry())


def backend_class(name: str) -> type:
    """The class registered as `name` (imported, not instantiated)."""
    target = registry().get(name)
    if target is None:
        raise UnknownNameError("backend", name, backend_names())
    module_name, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise BackendError(f"backend {name!r} cannot be imported: {exc}",
                           _INSTALL_HINTS.get(module_name, "install its package")) from exc


def options_class(name: str) -> type[BackendOptions]:
    """What backend `name` declares it takes (`BackendOptions` for a backend that declares nothing more)."""
    return getattr(backend_class(name), "Options", BackendOptions)


def describe_options(name: str) -> dict[str, dict[str, Any]]:
    """Backend `name`'s declared options: default, whether it changes answers, what it is for."""
    declared = options_class(name).declared()
    return {key: {"default": None if f.metadata["secret"] else _plain_default(f), "changes_answer":
                  f.metadata["changes_answer"], "help": f.metadata["help"]}
            for key, f in sorted(declared.items()) if not f.metadata["secret"]}


def _plain_default(f: Any) -> Any:
    return str(f.default) if isinstance(f.default, Path) else f.default


def build_options(name: str, settings: Any = None, written: Mapping[str, str] | None = None,
                  where: str = "") -> BackendOptions:
    """Backend `name`'s options: run-wide `settings` for the keys it declares, then `written` (a spec's strings)."""
    return options_class(name).build(settings, written, where)


def get_backend(name: str, config: Any = None) -> Backend:
    """An instance of backend `name`, given its options or run-wide settings (a `BackendConfig`)."""
    cls = backend_class(name)
    options_cls = getattr(cls, "Options", BackendOptions)
    options = config if isinstance(config, options_cls) else options_cls.build(config)
    backend = cls(options)
    backend.name = name
    if not isinstance(getattr(backend, "options", None), BackendOptions):  # a backend may refine its own
        backend.options = options
    return backend


def identity(backend: Backend) -> dict[str, Any]:
    """What makes this backend's answers its own: where they come from and every option it declares as
    answer-changing. The cache key is built on it."""
    return {"endpoint": backend.endpoint, "options": backend.options.identity()}
