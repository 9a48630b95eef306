"""The public API: `classify` and `get_model_response`."""

from __future__ import annotations

from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Sequence

from toxcmp.backends import BackendConfig, build_options, get_backend
from toxcmp.run.cache import ResponseCache
from toxcmp.config import GenerationConfig, default, default_cache_dir
from toxcmp.domain.models import ModelSpec, resolve_model
from toxcmp.domain.parsing import read_answer, verdict_of
from toxcmp.domain.policies import Policy, load_policy
from toxcmp.domain.prompting import build_request
from toxcmp.domain.responses import ClassificationResult, ModelResponse
from toxcmp.run.requests import run_requests
from toxcmp.run.validation import check_generation


# how the CLI's flags read as the library's keyword arguments, in a message a library call raises
_PLACEHOLDER = r"(?:[A-Z][A-Z_]*|\d[\w.:-]*|[a-z][\w.:-]*)"
_NOT_VALUES = {"or", "and", "to", "with", "for", "the", "a", "an", "in", "is", "it", "on", "of", "first", "again",
               "must", "are", "was", "has", "have", "needs", "takes", "expects", "accepts", "cannot", "can", "should",
               "only", "also", "alone", "given", "goes", "does", "not", "says", "sets", "starts", "picks", "at"}
_BOOLEAN_FLAGS = {"--no-cache": "use_cache=False"}


def flags_as_keywords(text: str | None) -> str | None:
    """`add --api-server local (or --base-url URL)` → `add api_server='local' (or base_url=URL)`: a library caller
    is told the keyword arguments it can pass, never CLI flags."""
    import re

    if not text:
        return text

    def one(m: re.Match) -> str:
        flag, value = m.group(1), m.group(2)
        if flag in _BOOLEAN_FLAGS:
            return _BOOLEAN_FLAGS[flag] + (m.group(0)[len(flag):] if value is None else f" {value}")
        name = flag[2:].replace("-", "_")
        if value is None or value in _NOT_VALUES:
            return f"{name}=…" + ("" if value is None else f" {value}")
        bare = value.isupper() or re.fullmatch(r"\d+(\.\d+)?", value)  # a placeholder (URL, N) or a number
        return f"{name}={value}" if bare else f"{name}={value!r}"

    return re.sub(rf"(--[a-z][a-z0-9-]*)(?: ({_PLACEHOLDER}))?", one, text)


def _library_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    import functools

    from toxcmp.errors import ToxcmpError

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ToxcmpError as exc:
            exc.message, exc.hint = flags_as_keywords(exc.message), flags_as_keywords(exc.hint)
            exc.args = (exc.message,)
            raise

    return wrapper


class InferenceBackend(str, Enum):
    API = "api"
    LOCAL = "local"


_GENERATION_KEYS = set(GenerationConfig.__dataclass_fields__)
_BACKEND_KEYS = set(BackendConfig.__dataclass_fields__)
_OTHER_KEYS = {"use_cache", "revision", "api_server"}


def split_options(options: dict[str, Any]) -> tuple[GenerationConfig, BackendConfig, dict[str, Any]]:
    unknown = set(options) - _GENERATION_KEYS - _BACKEND_KEYS - _OTHER_KEYS
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    generation = GenerationConfig.from_defaults(**{k: v for k, v in options.items() if k in _GENERATION_KEYS})
    backend_config = BackendConfig(**{k: v for k, v in options.items() if k in _BACKEND_KEYS})
    return generation, backend_config, {k: options[k] for k in _OTHER_KEYS if k in options}


def respond(policy: Policy, text: str, spec: ModelSpec, backend: str, generation: GenerationConfig,
            config: BackendConfig, use_cache: bool = True, api_server: str | None = "auto",
            notify: Callable[[str], None] | None = None, render_date: str | None = None) -> ModelResponse:
    """One request through one backend, the cache in front; a spawned API server is stopped on every exit.
    `render_date`: YYYY-MM-DD the chat template's clock reads (None: the template's own clock)."""
    return respond_many(policy, [text], spec, backend, generation, config, use_cache, api_server, notify,
                        render_date)[0]


def respond_many(policy: Policy, texts: Sequence[str], spec: ModelSpec, backend: str, generation: GenerationConfig,
                 config: BackendConfig, use_cache: bool = True, api_server: str | None = "auto",
                 notify: Callable[[str], None] | None = None, render_date: str | None = None,
                 on_response: Callable[[int, ModelResponse], None] | None = None) -> list[ModelResponse]:
    """`texts` through one backend (one server for all of them), the cache in front; responses in input order,
    each stored in the cache as it arrives; `on_response(i, response)` as each one is known (cached ones first)."""
    check_generation(generation)
    options = build_options(backend, replace(config, api_server=None if api_server in (None, "", "none") else api_server))
    requests = [build_request(policy, text, spec, generation, render_date=render_date) for text in texts]
    options, note = options.resolve(spec, "or use --backend local")
    if note and notify:
        notify(note)
    engine = get_backend(backend, options)
    cache = ResponseCache(Path(config.cache_dir or default_cache_dir())) if use_cache else None
    try:
        return run_requests(engine, requests, cache, on_response=on_response)
    finally:
        engine.close()
        if cache is not None:
            cache.close()


@_library_errors
def get_model_response(text: str, policy: str | Policy = "toxic_simple", model: str | ModelSpec | None = None,
                       backend: InferenceBackend | str = InferenceBackend.API, **options: Any) -> ModelResponse:
    """Send one text under one policy to one backend; the raw response (content, reasoning, latency, cached)."""
    policy_obj = policy if isinstance(policy, Policy) else load_policy(policy)
    generation, config, rest = split_options(options)
    model = model or default("model", "smollm2-135m")
    spec = model if isinstance(model, ModelSpec) else resolve_model(model, rest.get("revision"))
    backend_name = backend.value if isinstance(backend, InferenceBackend) else str(backend)
    # the CLI's defaults: `api_server="auto"` starts a local server for a bundled model, as `toxcmp classify` does
    return respond(policy_obj, text, spec, backend_name, generation, config, rest.get("use_cache", True),
                   rest.get("api_server", "auto"))


def verdict_result(response: ModelResponse, policy: Policy) -> ClassificationResult:
    # the answer as it arrived, read the one way every path reads it (a cut-off answer is `truncated`)
    parts = read_answer(response.content, response.reasoning, split=False)
    verdict = verdict_of(parts, policy, response.finish_reason) if response.ok else None
    parse_error = verdict.parse_error if verdict else f"backend error: {response.error}"
    return ClassificationResult(
        binary_label=verdict.binary_label if verdict else None,
        fine_grain_label=verdict.fine_grain_label if verdict else None,
        parse_ok=bool(verdict and verdict.parse_ok), parse_error=parse_error,
        refusal=bool(verdict and verdict.refusal), content=response.content, reasoning=response.reasoning,
        backend=response.backend, model=response.model, policy=policy.name, cached=response.cached,
        latency_s=response.latency_s, prompt_hash=response.prompt_hash, served_by=response.served_by,
        error=response.error)


@_library_errors
def classify(text: str, policy: str | Policy = "toxic_simple", model: str | ModelSpec | None = None,
             backend: InferenceBackend | str = InferenceBackend.API, **options: Any) -> ClassificationResult:
    """Classify one text: binary label, fine-grained label, reasoning, content and parse status."""
    policy_obj = policy if isinstance(policy, Policy) else load_policy(policy)
    return verdict_result(get_model_response(text, policy_obj, model, backend, **options), policy_obj)
