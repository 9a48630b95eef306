"""The public API: `classify` and `get_model_response`."""

from __future__ import annotations

from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Any, Callable

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
    check_generation(generation)
    options = build_options(backend, replace(config, api_server=None if api_server in (None, "", "none") else api_server))
    request = build_request(policy, text, spec, generation, render_date=render_date)
    options, note = options.resolve(spec, "or use --backend local")
    if note and notify:
        notify(note)
    engine = get_backend(backend, options)
    cache = ResponseCache(Path(config.cache_dir or default_cache_dir())) if use_cache else None
    try:
        return run_requests(engine, [request], cache)[0]
    finally:
        engine.close()
        if cache is not None:
            cache.close()


def get_model_response(text: str, policy: str | Policy = "toxic_simple", model: str | ModelSpec | None = None,
                       backend: InferenceBackend | str = InferenceBackend.API, **options: Any) -> ModelResponse:
    """Send one text under one policy to one backend; the raw response (content, reasoning, latency, cached)."""
    policy_obj = policy if isinstance(policy, Policy) else load_policy(policy)
    generation, config, rest = split_options(options)
    model = model or default("model", "smollm2-135m")
    spec = model if isinstance(model, ModelSpec) else resolve_model(model, rest.get("revision"))
    backend_name = backend.value if isinstance(backend, InferenceBackend) else str(backend)
    return respond(policy_obj, text, spec, backend_name, generation, config, rest.get("use_cache", True),
                   rest.get("api_server"))


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


def classify(text: str, policy: str | Policy = "toxic_simple", model: str | ModelSpec | None = None,
             backend: InferenceBackend | str = InferenceBackend.API, **options: Any) -> ClassificationResult:
    """Classify one text: binary label, fine-grained label, reasoning, content and parse status."""
    policy_obj = policy if isinstance(policy, Policy) else load_policy(policy)
    return verdict_result(get_model_response(text, policy_obj, model, backend, **options), policy_obj)
