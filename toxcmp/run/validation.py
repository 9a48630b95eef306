"""Run-level option checks that happen before any data or model is loaded: one line each, with what to do next.
A backend's own options are checked by its declaration (`toxcmp.backends.options`)."""

from __future__ import annotations

from toxcmp.backends.options import choice
from toxcmp.config import GenerationConfig
from toxcmp.errors import UsageError

REASONING_EFFORTS = ("low", "medium", "high")


def check_generation(generation: GenerationConfig) -> None:
    if generation.reasoning_effort is not None:
        choice(generation.reasoning_effort, REASONING_EFFORTS, "--reasoning-effort")
    if generation.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be positive (got {generation.max_new_tokens})", "e.g. --max-new-tokens 64")
