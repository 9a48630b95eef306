"""Hugging Face Inference Providers, reached through the Hugging Face router's OpenAI-compatible endpoint (the
same `/chat/completions` every other `api` route speaks): `model` for the router's own choice (`auto`, the
user's order in their settings), `model:provider` for a named one. huggingface_hub is used through its public
API only: the token (`get_token`) and, here, the names of the providers it knows."""

from __future__ import annotations

import typing
from functools import lru_cache

from toxcmp.errors import BackendError, UnknownNameError

ROUTER_URL = "https://router.huggingface.co/v1"
AUTO = "auto"


@lru_cache(maxsize=1)
def valid_providers() -> list[str]:
    """`auto` and every provider the installed huggingface_hub knows. huggingface_hub has no public list of them;
    its public `InferenceClient(provider=...)` parameter is typed with a `Literal` of exactly those names, so they
    are read from that signature (no private module). An empty list when a version types it otherwise: then any
    name is passed on, and the router's answer says whether it exists."""
    from huggingface_hub import InferenceClient

    try:
        hint = typing.get_type_hints(InferenceClient.__init__).get("provider")
    except Exception:  # noqa: BLE001 - an annotation this version cannot resolve: no list, not a crash
        return []
    names = [n for n in _literal_strings(hint) if n != AUTO]
    return [AUTO, *dict.fromkeys(names)] if names else []


def _literal_strings(hint: typing.Any) -> list[str]:
    if typing.get_origin(hint) is typing.Literal:
        return [a for a in typing.get_args(hint) if isinstance(a, str)]
    return [name for arg in typing.get_args(hint) for name in _literal_strings(arg)]


def check_provider(provider: str) -> None:
    known = valid_providers()
    if known and provider not in known:
        raise UnknownNameError("provider", provider, known)


def router_model(model_id: str, provider: str) -> str:
    """The model name the router is sent: the id for its own choice, `id:provider` to ask for one."""
    return model_id if provider == AUTO else f"{model_id}:{provider}"


def hub_token(given: str | None) -> str:
    """The token a provider request needs: the one given (`--token`/HF_TOKEN), else the one `hf auth login`
    stored."""
    from huggingface_hub import get_token

    token = given or get_token()
    if not token:
        raise BackendError("Inference Providers need a Hugging Face token",
                           "set HF_TOKEN, pass --token, or run `hf auth login`")
    return token


def check_online() -> None:
    """HF_HUB_OFFLINE (read now, as everywhere in toxcmp) forbids Hub traffic, the router included."""
    from toxcmp.domain.models import hub_offline

    if hub_offline():
        raise BackendError("HF_HUB_OFFLINE=1 blocks Inference Providers",
                           "unset HF_HUB_OFFLINE, or use --base-url / --api-server local")
