"""Backend specs as written on the command line: `name` or `name[key=value;key=value]`.

The keys a spec may hold are the backend's own declared options (`toxcmp.backends.options`), plus what every
arm may override (`ARM_KEYS`: model, policy, reasoning effort, max new tokens) and `label`. A spec whose
provider is `*` (`api[provider=*]`) stands for one arm per live Inference Provider of its model
(`expand_every_provider`), settled here, before any data or model is loaded."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from toxcmp.analysis.arms import ARM_KEYS
from toxcmp.backends import BackendOptions, options_class
from toxcmp.errors import UsageError

ARM_ONLY_KEYS = ("label", *ARM_KEYS)  # an arm's own settings, not its backend's


@dataclass(frozen=True)
class BackendSpec:
    """`name` or `name[key=value;key=value]`, e.g. `api[provider=together]`, `api[api_server=local]` or
    `api[api_server=llamacpp]`. `options` are as written, keys in their declared spelling."""

    text: str
    name: str
    options: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        """What reports call this arm: `label=` when given, else what its backend calls it (the spec as written;
        a recording by its side)."""
        options = dict(self.options)
        if "label" in options:
            return options["label"]
        return options_class(self.name).default_label(self.text, self.backend_options)

    @property
    def backend_options(self) -> dict[str, str]:
        """The options written for the backend itself (not the arm's model/policy/label overrides)."""
        return {k: v for k, v in self.options if k not in ARM_ONLY_KEYS}

    def build(self, settings: Any) -> BackendOptions:
        """This arm's backend options: the run-wide `settings`, overridden by what the spec writes; checked."""
        return options_class(self.name).build(settings, self.backend_options, where=repr(self.text))


def parse_backend_specs(text: str, model: str | None = None, settings: Any = None,
                        notes: list[str] | None = None) -> list[BackendSpec]:
    """The arms of `--backends`. `model` (the run's, unless a spec says `model=`) and `settings` (run-wide options)
    let `provider=*` expand to one arm per live provider; what the expansion did is added to `notes`."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    specs = [parse_backend_spec(p.strip()) for p in parts if p.strip()]
    specs = expand_every_provider(specs, model, settings, notes)
    if not specs:  # one arm is an evaluation against the human labels; two or more, a comparison
        raise UsageError(f"--backends needs at least one arm ({text!r})",
                         "e.g. --backends api (one arm, scored against the human labels), --backends api,local, or "
                         "the same backend twice with different options: 'api[provider=together],api[provider=groq]'")
    texts, labels = [s.text for s in specs], [s.label for s in specs]
    for seen, kind in ((texts, "written"), (labels, "labelled")):
        dupes = sorted({x for x in seen if seen.count(x) > 1})
        if dupes:
            raise UsageError(f"two arms are {kind} {dupes[0]!r}", "give each arm different options or a label=NAME")
    return specs


def parse_backend_spec(text: str) -> BackendSpec:
    """A spec whose keys are checked against what its backend declares (an unknown backend is an error too)."""
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[(.*)\])?", text)
    if not match:
        raise UsageError(f"cannot read backend spec {text!r}", "write name or name[key=value;key=value]")
    declared = options_class(match.group(1))
    keys = sorted({*declared.keys(), *ARM_ONLY_KEYS})
    options = []
    for item in filter(None, (s.strip() for s in (match.group(2) or "").split(";"))):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        key = declared.aliases.get(key, key)
        if not sep or key not in keys:
            raise UsageError(f"bad option {item!r} in backend spec {text!r}",
                             f"options of {match.group(1)} are key=value with key one of: {', '.join(keys)}")
        options.append((key, value.strip()))
    return BackendSpec(text, match.group(1), tuple(options))


PROVIDER_KEY = "provider"  # a backend that declares it routes through Inference Providers


def expand_every_provider(specs: list[BackendSpec], model: str | None = None, settings: Any = None,
                          notes: list[str] | None = None) -> list[BackendSpec]:
    """Each spec whose provider is `*` (written, or run-wide in `settings`) becomes one arm per LIVE provider the
    Hub maps its model to, sorted by name (a stable run id), labelled `NAME:provider` (`LABEL:provider` under a
    written label), every other option kept; staging providers are skipped, in one note. A provider the installed
    huggingface_hub does not know is an error listing the providers that serve the model, when the Hub can say.
    Offline or unreachable: a one-line error."""
    from toxcmp.backends import providers
    from toxcmp.domain.models import resolve_model

    out: list[BackendSpec] = []
    fetched: dict[str, list[providers.ProviderRoute]] = {}
    for spec in specs:
        declared = options_class(spec.name).declared()
        written = dict(spec.options)
        if PROVIDER_KEY not in declared or written.get("base_url") or (
                "base_url" not in written and getattr(settings, "base_url", None)):
            if written.get(PROVIDER_KEY) == providers.EVERY:
                raise UsageError(f"provider=* picks Inference Providers; it does not go with a base URL ({spec.text!r})",
                                 "drop base_url (or --base-url), or name the arms one by one")
            out.append(spec)
            continue
        provider = written.get(PROVIDER_KEY, getattr(settings, PROVIDER_KEY, None))
        if provider is None:
            out.append(spec)
            continue
        model_name = written.get("model") or model
        if provider != providers.EVERY:
            if model_name and provider not in (providers.valid_providers() or [provider]):
                hub_model = resolve_model(model_name)
                if hub_model.only_here or hub_model.local_path:  # no provider serves it: the installed list
                    providers.check_provider(provider)
                providers.check_provider_for(provider, hub_model.model_id, getattr(settings, "token", None))
            out.append(spec)
            continue
        if not model_name:
            raise UsageError(f"provider=* needs a model to ask the Hub about ({spec.text!r})",
                             "pass --model, or write model=NAME in the spec")
        model_id = providers.serving_model(resolve_model(model_name))
        if model_id not in fetched:
            fetched[model_id] = providers.provider_routes(model_id, getattr(settings, "token", None))
        routes = fetched[model_id]
        live = sorted({r.provider for r in routes if r.status == "live"})
        others = [f"{r.provider} ({r.status})" for r in routes if r.status != "live"]
        if not live:
            if not routes:
                raise providers.no_provider(model_id)
            raise UsageError(f"no Inference Provider serves {model_id} live ({spec.text!r}): {', '.join(others)}",
                             "name one with provider=NAME if you may use it, or pick another model")
        out += [_with_provider(spec, name) for name in live]
        if notes is not None:
            skipped = f"; skipped, not live: {', '.join(others)}" if others else ""
            notes.append(f"{spec.text}: one arm per live provider of {model_id}: {', '.join(live)}{skipped}")
    return out


def _with_provider(spec: BackendSpec, provider: str) -> BackendSpec:
    """`spec` for one named provider: `api[provider=groq;…]` (the other options as written), labelled
    `api:groq`, or `LABEL:groq` under a written label."""
    written = [(k, v) for k, v in spec.options if k != PROVIDER_KEY]
    label = dict(written).get("label")
    shown = [(PROVIDER_KEY, provider)] + [(k, f"{v}:{provider}" if k == "label" else v) for k, v in written]
    text = f"{spec.name}[{';'.join(f'{k}={v}' for k, v in shown)}]"
    options = tuple(shown) if label is not None else (*shown, ("label", f"{spec.name}:{provider}"))
    return BackendSpec(text, spec.name, options)
