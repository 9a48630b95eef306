"""Policies are data: a markdown file with a TOML front matter that declares the label sets.

    +++
    name = "toxic_simple"
    output = "label"          # or "json"
    [categories]              # fine-grained label -> binary label (0 or 1)
    "0" = 0
    "1" = 1
    +++
    ## INSTRUCTIONS ... ## DEFINITIONS ... ## VIOLATES (1) ... ## SAFE (0) ... ## EXAMPLES ...

Nothing in a policy file is ever executed; it is parsed with `tomllib` and used as prompt text.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from toxcmp.config import configs_dir
from toxcmp.errors import PolicyError, UnknownNameError

REQUIRED_SECTIONS = ("INSTRUCTIONS", "DEFINITIONS", "VIOLATES", "SAFE", "EXAMPLES")
OUTPUT_KINDS = ("label", "json")
_FRONT_MATTER = re.compile(r"\A\+\+\+\s*\n(.*?)\n\+\+\+\s*\n", re.DOTALL)
_SECTION = re.compile(r"^#{1,3}\s*([A-Z][A-Z \-]*?)\s*(\(\s*[01]\s*\))?\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Policy:
    name: str
    text: str
    categories: tuple[tuple[str, int], ...]  # fine-grained label -> binary label, in file order
    output: str = "label"
    description: str = ""
    source: str = ""

    @property
    def binary_labels(self) -> tuple[int, int]:
        return (0, 1)

    @property
    def fine_grained_labels(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.categories)

    def binary_for(self, fine_label: str) -> int | None:
        for name, value in self.categories:
            if name.lower() == fine_label.lower():
                return value
        return None

    def canonical_fine(self, fine_label: str) -> str | None:
        for name, _ in self.categories:
            if name.lower() == fine_label.strip().lower():
                return name
        return None

    @property
    def sha256(self) -> str:
        payload = "\x00".join([self.text, repr(self.categories), self.output])
        return hashlib.sha256(payload.encode()).hexdigest()


def builtin_dir() -> Path:
    return configs_dir() / "policies"


def builtin_names() -> list[str]:
    return sorted(p.stem for p in builtin_dir().glob("*.md"))


def load_policy(name_or_path: str | Path) -> Policy:
    """A built-in policy name, or a path to the user's own policy file."""
    candidate = Path(name_or_path)
    builtin = builtin_dir() / f"{name_or_path}.md"
    if builtin.is_file() and candidate.name == str(name_or_path):
        return parse_policy_file(builtin)
    if candidate.suffix or candidate.exists() or "/" in str(name_or_path):
        if not candidate.exists():
            raise PolicyError(f"policy file not found: {candidate}", "pass a built-in name or an existing .md file")
        return parse_policy_file(candidate)
    raise UnknownNameError("policy", str(name_or_path), builtin_names(), "or pass a path to a policy .md file")


def parse_policy_file(path: Path) -> Policy:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc.strerror}", "check the path and permissions") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"policy file {path} is not UTF-8 (byte {exc.start})", "save it as UTF-8") from exc
    return parse_policy_text(text, source=str(path), default_name=path.stem)


def parse_policy_text(text: str, source: str = "<string>", default_name: str = "custom") -> Policy:
    text = text.replace("\r\n", "\n")
    match = _FRONT_MATTER.match(text)
    if not match:
        raise PolicyError(f"policy {source} has no '+++' TOML front matter", "start the file with +++ … +++ declaring [categories]")
    try:
        meta = tomllib.loads(match.group(1))
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"policy {source} front matter is not valid TOML: {exc}", "fix the +++ block") from exc
    body = text[match.end():].strip()
    found = {m.group(1).strip() for m in _SECTION.finditer(body)}
    missing = [s for s in REQUIRED_SECTIONS if s not in found]
    if missing:
        raise PolicyError(f"policy {source} is missing section(s): {', '.join(missing)}", "add a '## NAME' heading for each")
    categories = meta.get("categories")
    if not isinstance(categories, dict) or not categories:
        raise PolicyError(f"policy {source} declares no [categories]", "map each fine-grained label to 0 or 1")
    pairs = []
    for label, value in categories.items():
        if value not in (0, 1) or isinstance(value, bool):
            raise PolicyError(f"policy {source}: category {label!r} maps to {value!r}", "map every category to 0 or 1")
        pairs.append((str(label), int(value)))
    if {v for _, v in pairs} != {0, 1}:
        raise PolicyError(f"policy {source} needs at least one category for 0 and one for 1", "add both")
    output = meta.get("output", "label")
    if output not in OUTPUT_KINDS:
        raise PolicyError(f"policy {source}: output {output!r} is not one of {OUTPUT_KINDS}", "use label or json")
    name = str(meta.get("name") or default_name)
    return Policy(name=name, text=body, categories=tuple(pairs), output=output,
                  description=str(meta.get("description", "")), source=source)
