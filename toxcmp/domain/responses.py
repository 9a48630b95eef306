"""Result types shared by backends, the cache and the public API."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class ModelResponse:
    """What one backend returned for one request. `error` is set (and content empty) when it failed."""

    content: str
    reasoning: str
    raw_text: str
    backend: str
    model: str
    latency_s: float
    cached: bool = False
    error: str | None = None
    served_by: str | None = None  # provider or server that actually answered
    finish_reason: str | None = None
    prompt_hash: str = ""
    retries: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelResponse":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def as_cached(self) -> "ModelResponse":
        return replace(self, cached=True)


@dataclass(frozen=True)
class ClassificationResult:
    """One text, one verdict."""

    binary_label: int | None
    fine_grain_label: str | None
    parse_ok: bool
    parse_error: str | None
    refusal: bool
    content: str
    reasoning: str
    backend: str
    model: str
    policy: str
    cached: bool
    latency_s: float
    prompt_hash: str
    served_by: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
