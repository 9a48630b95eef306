"""The public API: `classify` and `get_model_response`."""

from __future__ import annotations

from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Any, Callable

from toxcmp.backends import SPAWNED_SERVERS, BackendConfig, get_backend
from toxcmp.run.cache import ResponseCache
from toxcmp.config import GenerationConfig, default, default_cache_dir
from toxcmp.errors import UsageError
from toxcmp.domain.models import ModelSpec, resolve_model
from toxcmp.domain.parsing import NO_FINAL_ANSWER, parse_verdict
from toxcmp.domain.policies import Policy, load_policy
from toxcmp.domain.prompting import build_request
from toxcmp.domain.responses import ClassificationResult, ModelResponse
from toxcmp.run.requests import run_requests
from toxcmp.run.validation import check_backend_config, check_generation


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


def resolve_api_route(spec: ModelSpec, config: BackendConfig, alternative: str) -> tuple[BackendConfig, str | None]:
    """Decide `--api-server auto` and check the route: a bundled model exists only on this machine, so with no
    base URL the api side starts its own local server for it (and says so); an explicit `none` refuses."""
    if config.api_server not in (None, "auto", *SPAWNED_SERVERS):
        raise UsageError(f"unknown --api-server {config.api_server!r}", "use auto, local, llamacpp or none")
    if config.api_server == "llamacpp":
        if config.base_url:
            raise UsageError("--api-server llamacpp starts its own server; it does not go with --base-url",
                             "drop --base-url, or use --api-server none to send to the server at that URL")
        from toxcmp.backends.server import gguf_of, llamacpp_version

        gguf_of(spec)  # a GGUF to serve, and the package to serve it, before any data or model is loaded
        llamacpp_version()
        return config, None
    if config.api_server == "auto":
        if spec.only_here and not config.base_url:
            return replace(config, api_server="local"), (
                f"{spec.name} exists only on this machine: the api side starts a local transformers serve for it "
                "(--api-server none to refuse)")
        config = replace(config, api_server=None)
    if spec.only_here and not config.base_url and config.api_server not in SPAWNED_SERVERS:
        raise UsageError(f"{spec.name} is a bundled model that no Inference Provider serves",
                         f"add --api-server local (or --base-url URL), {alternative}")
    return config, None


def respond(policy: Policy, text: str, spec: ModelSpec, backend: str, generation: GenerationConfig,
            config: BackendConfig, use_cache: bool = True, api_server: str | None = "auto",
            notify: Callable[[str], None] | None = None) -> ModelResponse:
    """One request through one backend, the cache in front; a spawned API server is stopped on every exit."""
    check_generation(generation)
    check_backend_config(config)
    request = build_request(policy, text, spec, generation)
    config = replace(config, api_server=None if api_server in (None, "", "none") else api_server)
    if backend == InferenceBackend.API.value:
        config, note = resolve_api_route(spec, config, "or use --backend local")
        if note and notify:
            notify(note)
    else:
        config = replace(config, api_server=None)
    engine = get_backend(backend, config)
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
    verdict = parse_verdict(response.content, policy, response.finish_reason) if response.ok else None
    if response.ok and not response.content and response.reasoning:
        parse_error = NO_FINAL_ANSWER
    else:
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
