"""Hugging Face Inference Providers, reached through the Hugging Face router's OpenAI-compatible endpoint (the
same `/chat/completions` every other `api` route speaks): `model` for the router's own choice (`auto`, the
user's order in their settings), `model:provider` for a named one. huggingface_hub is used through its public
API only: the token (`get_token`), the names of the providers it knows, and which of them serve a model (the
Hub's provider mapping, `HfApi().model_info(..., expand=["inferenceProviderMapping"])`)."""

from __future__ import annotations

import os
import re
import typing
from dataclasses import dataclass
from functools import lru_cache

from toxcmp.errors import BackendError, UnknownNameError, UsageError

ROUTER_URL = "https://router.huggingface.co/v1"
AUTO = "auto"
EVERY = "*"  # `api[provider=*]`: one arm per live provider of the model
BILL_TO_HEADER = "X-HF-Bill-To"  # what huggingface_hub's InferenceClient(bill_to=...) sends; the router only
HUB_TIMEOUT_S = 10.0  # one mapping request; the Hub is first probed for 2 s (`toxcmp.domain.data.hub_reachable`)
_ORG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


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


def router_headers(bill_to: str | None) -> dict[str, str]:
    """Headers for requests to the router (never to a base URL or a spawned server): who is billed, when asked."""
    return {BILL_TO_HEADER: bill_to} if bill_to else {}


def check_bill_to(bill_to: str | None, suffix: str = "") -> None:
    if bill_to is not None and not _ORG.fullmatch(bill_to):
        raise UsageError(f"bill_to must be an organization name (got {bill_to!r}){suffix}", "e.g. bill_to=my-org")


# -- which providers serve a model (the Hub's provider mapping) ---------------------------------------------


@dataclass(frozen=True)
class ProviderRoute:
    """One row of a model's provider mapping: who serves it, whether for everyone (`live`) or only the provider's
    own members (`staging`; `error` when the Hub's checks fail), the provider's own model id, and the task."""

    provider: str
    status: str
    provider_id: str
    task: str

    def to_dict(self) -> dict[str, str]:
        return {"provider": self.provider, "status": self.status, "provider_id": self.provider_id, "task": self.task}


def hub_endpoint() -> str:
    """HF_ENDPOINT as set now (huggingface_hub read it once, at import), else the public Hub."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def provider_routes(model_id: str, token: str | None = None, timeout_s: float = HUB_TIMEOUT_S) -> list[ProviderRoute]:
    """Every provider the Hub maps `model_id` to, in the Hub's order (the user's provider order when a token is
    sent); [] when none serves it. Offline or unreachable: a `BackendError` at once (one 2-second TCP probe,
    then one request, never retried). An unknown model: a `UsageError`. The token is sent to the Hub only."""
    from toxcmp.domain.data import hub_reachable
    from toxcmp.domain.models import hub_offline

    endpoint = hub_endpoint()
    if hub_offline():
        raise BackendError("the Hugging Face Hub cannot be reached: HF_HUB_OFFLINE=1 is set",
                           "unset HF_HUB_OFFLINE to ask which providers serve the model, or name one: provider=NAME")
    if not hub_reachable():
        raise BackendError(f"the Hugging Face Hub cannot be reached at {endpoint}",
                           "check the network (or HF_ENDPOINT), or name a provider: provider=NAME")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    try:
        info = HfApi(endpoint=endpoint).model_info(model_id, expand=["inferenceProviderMapping"],
                                                   token=token or None, timeout=timeout_s)
    except RepositoryNotFoundError:
        raise UsageError(f"the Hugging Face Hub has no model {model_id!r}",
                         "check the id (owner/name); a private or gated model needs HF_TOKEN") from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        raise BackendError(f"the Hugging Face Hub did not list the providers of {model_id} (HTTP {status})",
                           "try again later") from None
    except Exception as exc:  # noqa: BLE001 - connection refused, timed out, offline: one line, never a trace
        raise BackendError(f"the Hugging Face Hub cannot be reached at {endpoint} ({type(exc).__name__})",
                           "check the network (or HF_ENDPOINT), or name a provider: provider=NAME") from None
    return [ProviderRoute(str(m.provider), str(m.status), str(m.provider_id), str(m.task))
            for m in (info.inference_provider_mapping or [])]


def serving_model(model: typing.Any) -> str:
    """The Hub id a provider would serve for a resolved model (`ModelSpec`); a model that exists only on this
    machine (bundled, a GGUF file, a local directory) is served by none."""
    if model.only_here or model.local_path:
        raise UsageError(f"{model.name} exists only on this machine: no Inference Provider serves it",
                         "pass a Hub model (e.g. gpt-oss-20b or owner/name), or use --base-url / --api-server local")
    return model.model_id


def no_provider(model_id: str) -> UsageError:
    return UsageError(f"no Inference Provider serves {model_id}",
                      "pick another model (toxcmp providers MODEL lists who serves one), or use --base-url URL")


def check_provider_for(provider: str, model_id: str, token: str | None = None) -> None:
    """`check_provider`, whose error lists the providers that serve `model_id` when the Hub can say (live ones,
    and `auto`), else every provider huggingface_hub knows."""
    known = valid_providers()
    if not known or provider in known:
        return
    try:
        live = [r.provider for r in provider_routes(model_id, token) if r.status == "live"]
    except (BackendError, UsageError):  # the Hub cannot say: the installed list
        live = []
    if live:
        raise UnknownNameError("provider", provider, [AUTO, *live], f"those are the ones serving {model_id}, per the Hub")
    raise UnknownNameError("provider", provider, known)
