"""Policy + text → the chat request every backend sends (same messages, same template options)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from toxcmp.config import GenerationConfig
from toxcmp.errors import UsageError
from toxcmp.domain.models import ModelSpec
from toxcmp.domain.policies import Policy


@dataclass(frozen=True)
class ChatRequest:
    """Everything that determines a model's answer. Its hash is the prompt hash and the core of the cache key."""

    model: ModelSpec
    messages: tuple[tuple[str, str], ...]  # (role, content)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    example_id: str | None = None  # bookkeeping only; not part of the hash
    # The day the chat template's clock reads (`strftime_now`; gpt-oss writes "Current date: …" into the system
    # message), YYYY-MM-DD. None: unpinned, the template's own clock; its key is then left out of the payload, so
    # the hashes of requests made before dates were pinned stay what they were.
    render_date: str | None = None

    def chat_messages(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]

    def template_options(self) -> dict[str, str]:
        # Non-Harmony templates ignore unknown kwargs, but we still send nothing they do not use.
        return self.generation.template_options() if self.model.harmony else {}

    def payload(self) -> dict[str, Any]:
        return {
            "model_id": self.model.model_id,
            "revision": self.model.revision,
            "messages": self.chat_messages(),
            "template_options": self.template_options(),
            "generation": self.generation.to_dict(),
        } | ({"render_date": self.render_date} if self.render_date else {})

    @property
    def prompt_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.payload(), sort_keys=True, ensure_ascii=False).encode()).hexdigest()


RENDER_DATE_FORMAT = "%Y-%m-%d"


def check_render_date(text: str) -> str:
    """A render date as given (`--render-date`): YYYY-MM-DD, a real calendar day."""
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError
        datetime.strptime(text, RENDER_DATE_FORMAT)
    except (TypeError, ValueError):
        raise UsageError(f"--render-date must be a day written YYYY-MM-DD (got {text!r})",
                         "e.g. --render-date 2025-08-05") from None
    return text


def today_utc() -> str:
    """Today in UTC, YYYY-MM-DD: the default render date (never the machine's time zone)."""
    return datetime.now(timezone.utc).strftime(RENDER_DATE_FORMAT)


def validate_text(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise UsageError("input text is empty", "pass a non-empty text to classify")
    if "\x00" in text:
        text = text.replace("\x00", "")  # NUL bytes break tokenizers and JSON bodies; nothing else uses them
    return text


def build_messages(policy: Policy, text: str) -> tuple[tuple[str, str], ...]:
    """The policy is the system (for gpt-oss: developer) message; the user text is the user message, verbatim."""
    return (("system", policy.text), ("user", validate_text(text)))


def build_request(policy: Policy, text: str, model: ModelSpec, generation: GenerationConfig,
                  example_id: str | None = None, render_date: str | None = None) -> ChatRequest:
    return ChatRequest(model=model, messages=build_messages(policy, text), generation=generation,
                       example_id=example_id, render_date=render_date)
