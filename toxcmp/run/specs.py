"""Backend specs as written on the command line: `name` or `name[key=value;key=value]`."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from toxcmp.analysis.arms import (
    ARM_KEYS,
)
from toxcmp.backends import BackendConfig
from toxcmp.errors import UsageError

SPEC_KEYS = {"provider", "base_url", "api_server", "device", "dtype", "batch_size", "strategy", "concurrency",
             "served_model", "recording", "side", "label", "threads", *ARM_KEYS}


SPEC_ALIASES = {"path": "recording", "file": "recording"}


@dataclass(frozen=True)
class BackendSpec:
    """`name` or `name[key=value;key=value]`, e.g. `api[provider=together]`, `api[api_server=local]` or
    `api[api_server=llamacpp]`."""

    text: str
    name: str
    options: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        """What reports call this side: `label=` when given; a recording by its side; else the spec as written."""
        options = dict(self.options)
        if "label" in options:
            return options["label"]
        if self.name == "recorded":
            return f"recorded:{options.get('side') or Path(options.get('recording') or '?').stem}"
        return self.text

    def config(self, base: BackendConfig) -> BackendConfig:
        values: dict[str, Any] = {k: v for k, v in self.options if k != "label" and k not in ARM_KEYS}
        for key in ("concurrency", "threads"):
            if key in values:
                values[key] = int(values[key])
        if self.name != "api":  # api-only options from the command line do not apply to other backends
            values["api_server"] = None
        return replace(base, **values)


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
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[(.*)\])?", text)
    if not match:
        raise UsageError(f"cannot read backend spec {text!r}", "write name or name[key=value;key=value]")
    options = []
    for item in filter(None, (s.strip() for s in (match.group(2) or "").split(";"))):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        key = SPEC_ALIASES.get(key, key)
        if not sep or key not in SPEC_KEYS:
            raise UsageError(f"bad option {item!r} in backend spec {text!r}",
                             f"options are key=value with key one of: {', '.join(sorted(SPEC_KEYS))}")
        options.append((key, value.strip()))
    return BackendSpec(text, match.group(1), tuple(options))
