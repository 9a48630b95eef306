"""Paths, defaults and the one generation config object."""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent


def configs_dir() -> Path:
    """`TOXCMP_CONFIG_DIR`, else the repo's `configs/` (editable install), else the copy in the wheel."""
    override = os.environ.get("TOXCMP_CONFIG_DIR")
    if override:
        return Path(override)
    repo_configs = PACKAGE_DIR.parent / "configs"
    if repo_configs.is_dir():
        return repo_configs
    return PACKAGE_DIR / "_configs"


def default_cache_dir() -> Path:
    override = os.environ.get("TOXCMP_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "toxcmp"


@lru_cache(maxsize=1)
def defaults() -> dict[str, Any]:
    path = configs_dir() / "defaults.toml"
    if not path.is_file():
        return {}
    with path.open("rb") as fh:
        return tomllib.load(fh)


def default(key: str, fallback: Any) -> Any:
    return defaults().get(key, fallback)


@dataclass(frozen=True)
class GenerationConfig:
    """Everything about decoding that can change a model's answer. Greedy by default."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = 0
    # gpt-oss chat-template options; ignored by templates that do not use them.
    reasoning_effort: str | None = "low"
    model_identity: str | None = None

    @classmethod
    def from_defaults(cls, **overrides: Any) -> "GenerationConfig":
        base = cls(
            max_new_tokens=int(default("max_new_tokens", cls.max_new_tokens)),
            temperature=float(default("temperature", cls.temperature)),
            top_p=float(default("top_p", cls.top_p)),
            seed=default("seed", cls.seed),
            reasoning_effort=default("reasoning_effort", cls.reasoning_effort),
        )
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def template_options(self) -> dict[str, str]:
        """Keyword arguments for `apply_chat_template` (and the API request body)."""
        opts: dict[str, str] = {}
        if self.reasoning_effort:
            opts["reasoning_effort"] = self.reasoning_effort
        if self.model_identity:
            opts["model_identity"] = self.model_identity
        return opts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def models_dir(cache_dir: Path | None = None) -> Path:
    """Where bundled models are converted to (TOXCMP_MODELS_DIR, else <cache>/models)."""
    override = os.environ.get("TOXCMP_MODELS_DIR")
    return Path(override).expanduser() if override else Path(cache_dir or default_cache_dir()) / "models"


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0
