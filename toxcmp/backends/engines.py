"""Which engine serves an OpenAI-compatible URL, and what it must be sent so that greedy decoding is greedy.

Servers apply sampling defaults of their own, even at temperature 0: llama-cpp-python's `repeat_penalty` 1.1,
a model's `generation_config.json` under vLLM and SGLang. toxcmp asks the server what it is (where it tells) and
sends each engine the settings that neutralize them; the engine is part of the arm's identity (`api[engine=…]`),
so an answer is never cached against a server of another kind. A server that does not say is `unknown`, and the
run says which server-side defaults could explain its differences.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

NEUTRAL_PENALTIES = {"frequency_penalty": 0.0, "presence_penalty": 0.0}
# what each engine is sent on top of temperature 0 (its own names for "no repetition penalty")
ENGINE_SAMPLING: dict[str, dict[str, float]] = {
    "llama.cpp": {"repeat_penalty": 1.0, **NEUTRAL_PENALTIES},
    "llama-cpp-python": {"repeat_penalty": 1.0, **NEUTRAL_PENALTIES},
    "vllm": {"repetition_penalty": 1.0, **NEUTRAL_PENALTIES},
    "sglang": {"repetition_penalty": 1.0, **NEUTRAL_PENALTIES},
    "tgi": dict(NEUTRAL_PENALTIES),
    "ollama": dict(NEUTRAL_PENALTIES),
    "unknown": {},
    "generic": {},  # the user's choice: nothing engine-specific is sent
}
ENGINES = tuple(ENGINE_SAMPLING)
UNKNOWN_DEFAULTS = ("server-side sampling defaults could explain differences: llama-cpp-python applies "
                    "repeat_penalty 1.1 even to greedy decoding, vLLM and SGLang a model's generation_config.json "
                    "(repetition_penalty), Ollama its Modelfile's repeat_penalty; name the engine in compare with an arm "
                    "option, --backends 'api[engine=NAME]' "
                    f"({', '.join(e for e in ENGINES if e not in ('unknown', 'generic'))})")
PROBE_TIMEOUT_S = 3.0
# what /v1/models says in `owned_by` when the engine fills it in itself
OWNED_BY = {"me": "llama-cpp-python", "llamacpp": "llama.cpp", "vllm": "vllm", "sglang": "sglang",
            "library": "ollama"}


class Unreachable(Exception):
    """Nothing answers at the URL: the preflight says so, in its own words."""


def _json(get: Callable[[str], Any], url: str, first: bool = False) -> Any:
    try:
        reply = get(url)
    except Exception as exc:  # noqa: BLE001 - a probe that fails says nothing
        if first:
            raise Unreachable(str(exc)) from None
        return None
    if reply.status_code != 200:
        return None
    try:
        return reply.json()
    except ValueError:
        return None


def _from_models(data: Any) -> str | None:
    models = data.get("data") if isinstance(data, dict) else None
    owners = {m.get("owned_by") for m in models or [] if isinstance(m, dict)}
    return next((OWNED_BY[o] for o in owners if o in OWNED_BY), None)


# (path under the server's root, test of its JSON, engine): asked in order after /v1/models
PROBES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("/props", lambda d: isinstance(d, dict) and "default_generation_settings" in d, "llama.cpp"),
    ("/info", lambda d: isinstance(d, dict) and "model_id" in d and "max_input_tokens" in d, "tgi"),
    ("/get_server_info", lambda d: isinstance(d, dict) and "version" in d, "sglang"),
    ("/api/version", lambda d: isinstance(d, dict) and set(d) == {"version"}, "ollama"),
    ("/version", lambda d: isinstance(d, dict) and "version" in d, "vllm"),
)


def detect_engine(base_url: str, headers: dict[str, str] | None = None,
                  timeout_s: float = PROBE_TIMEOUT_S) -> tuple[str, str]:
    """(engine, the evidence) for the server at `base_url` (…/v1): `owned_by` in /v1/models, then the engines'
    own endpoints. ("unknown", why) when none tells; `Unreachable` when nothing answers at all."""
    import httpx

    root = base_url.rstrip("/").removesuffix("/v1")
    with httpx.Client(timeout=timeout_s, headers=headers or {}, trust_env=False) as client:
        found = _from_models(_json(client.get, f"{root}/v1/models", first=True))
        if found:
            return found, f"GET /v1/models: owned_by names {found}"
        for path, test, engine in PROBES:
            if test(_json(client.get, root + path)):
                return engine, f"GET {path} answers as {engine} does"
    return "unknown", "neither /v1/models nor /props, /info, /get_server_info, /api/version, /version tell"


def engine_note(where: str, engine: str, evidence: str) -> str:
    if engine == "unknown":
        return f"{where}: the engine is not known ({evidence}); {UNKNOWN_DEFAULTS}"
    sent = ENGINE_SAMPLING[engine]
    settings = ", ".join(f"{k}={v:g}" for k, v in sent.items()) or "nothing extra"
    return f"{where}: the engine is {engine} ({evidence}); toxcmp sends it {settings}"
