"""Option checks that run before any data or model is loaded: one line each, with what to do next."""

from __future__ import annotations

import difflib
import re

from toxcmp.backends import BackendConfig
from toxcmp.config import GenerationConfig
from toxcmp.errors import UsageError

DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
STRATEGIES = ("prefix", "batched", "naive")
REASONING_EFFORTS = ("low", "medium", "high")


def did_you_mean(name: str, valid: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def check_backend_config(config: BackendConfig, where: str = "") -> None:
    suffix = f" {where}" if where else ""
    if config.dtype not in DTYPES:
        raise UsageError(f"unknown dtype {config.dtype!r}{suffix}", f"{did_you_mean(config.dtype, DTYPES)}use one of: {', '.join(DTYPES)}")
    if not DEVICE.match(config.device or ""):
        raise UsageError(f"unknown device {config.device!r}{suffix}", "use auto, cpu, mps, cuda or cuda:N")
    if config.strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {config.strategy!r}{suffix}",
                         f"{did_you_mean(config.strategy, STRATEGIES)}use one of: {', '.join(STRATEGIES)}")
    if config.batch_size != "auto" and not (str(config.batch_size).isdigit() and int(config.batch_size) > 0):
        raise UsageError(f"--batch-size must be auto or a positive number (got {config.batch_size!r}){suffix}", "e.g. --batch-size 8")
    if config.concurrency is not None and config.concurrency < 1:
        raise UsageError(f"concurrency must be at least 1 (got {config.concurrency}){suffix}", "e.g. --concurrency 4")
    if config.threads is not None and config.threads < 1:
        raise UsageError(f"threads must be at least 1 (got {config.threads}){suffix}", "e.g. --threads 2")


def check_generation(generation: GenerationConfig) -> None:
    effort = generation.reasoning_effort
    if effort is not None and effort not in REASONING_EFFORTS:
        raise UsageError(f"unknown --reasoning-effort {effort!r}",
                         f"{did_you_mean(effort, REASONING_EFFORTS)}use one of: {', '.join(REASONING_EFFORTS)}")
    if generation.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be positive (got {generation.max_new_tokens})", "e.g. --max-new-tokens 64")
