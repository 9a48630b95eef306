"""Backend specs as written on the command line: `name` or `name[key=value;key=value]`.

The keys a spec may hold are the backend's own declared options (`toxcmp.backends.options`), plus what every
arm may override (`ARM_KEYS`: model, policy, reasoning effort, max new tokens) and `label`."""

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


def parse_backend_specs(text: str) -> list[BackendSpec]:
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
    if len(specs) < 2:
        raise UsageError(f"--backends needs at least two arms, got {len(specs)} ({text!r})",
                         "e.g. --backends api,local, or the same backend twice with different options: "
                         "'api[provider=together],api[provider=groq]'")
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
