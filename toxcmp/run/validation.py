"""Run-level option checks that happen before any data or model is loaded: one line each, with what to do next.
A backend's own options are checked by its declaration (`toxcmp.backends.options`); the run-wide flags a backend
reads are checked here first, so a bad flag is blamed on the flag, not on an arm."""

from __future__ import annotations

import math
from typing import Any

from toxcmp.backends.options import choice
from toxcmp.config import GenerationConfig
from toxcmp.errors import UsageError

REASONING_EFFORTS = ("low", "medium", "high")


def check_generation(generation: GenerationConfig) -> None:
    if generation.reasoning_effort is not None:
        choice(generation.reasoning_effort, REASONING_EFFORTS, "--reasoning-effort")
    if generation.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be positive (got {generation.max_new_tokens})", "e.g. --max-new-tokens 64")
    temperature, top_p = generation.temperature, generation.top_p
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise UsageError(f"--temperature must be 0 or more (got {temperature})", "0 is greedy; e.g. --temperature 0.7")
    if not isinstance(top_p, (int, float)) or not math.isfinite(top_p) or not 0.0 < top_p <= 1.0:
        raise UsageError(f"--top-p must be in (0, 1] (got {top_p})", "1 keeps every token; e.g. --top-p 0.9")


def check_data_options(cfg: Any) -> None:
    """The data options of a run (`CompareConfig`) against each other, before the data is loaded."""
    from toxcmp.domain.data import check_sampling

    check_sampling(cfg.sample_size, cfg.stratify, getattr(cfg, "limit", None), getattr(cfg, "label_column", None))
    for flag, name in (("--text-column", getattr(cfg, "text_column", None)),
                       ("--label-column", getattr(cfg, "label_column", None))):
        if name is not None and not str(name).strip():
            raise UsageError(f"{flag} is empty", "pass the column's name (--label-column none: no labels)")


def arm_options(spec: Any, settings: Any) -> Any:
    """An arm's backend options (`spec.build(settings)`), checked. When the error is the run-wide flags' own (the
    same error without the arm's spec), it is the flag's: said without naming the arm, which did nothing wrong."""
    try:
        return spec.build(settings)
    except UsageError as exc:
        from toxcmp.backends import options_class

        try:
            options_class(spec.name).build(settings)
        except UsageError as flag_exc:
            if exc.one_line().replace(f" in {spec.text!r}", "") == flag_exc.one_line():
                raise flag_exc from None
        raise


def check_device(options: Any, where: str = "") -> None:
    """A device an arm computes on must exist here (`cuda` on a CPU-only torch, `cuda:3` on a one-GPU machine,
    `mps` off Apple silicon): one line now, before any model or server is started. `where`: the arm's spec, when
    the spec (not the --device flag) names the device."""
    device = getattr(options, "device", None)
    if not isinstance(device, str) or device in ("auto", "cpu"):
        return
    try:
        import torch
    except ImportError:
        return  # the backend that needs torch says so itself
    said = f"device={device} in {where!r}" if where else f"--device {device}"
    fix = "use --device cpu (or auto)" if not where else "write device=cpu (or auto)"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            build = getattr(torch.version, "cuda", None)
            why = (f"this torch ({torch.__version__}) is built without CUDA" if not build
                   else f"this torch ({torch.__version__}, CUDA {build}) finds no CUDA device")
            raise UsageError(f"{said}: {why}", f"{fix}, or install a CUDA build of torch on a machine with a GPU")
        index = int(device.partition(":")[2] or 0)
        count = torch.cuda.device_count()
        if index >= count:
            raise UsageError(f"{said}: this machine has {count} CUDA device(s) (cuda:0–cuda:{count - 1})",
                             f"pick one of them, or {fix}")
    elif device == "mps":
        mps = getattr(torch.backends, "mps", None)
        if not (mps and mps.is_available()):
            raise UsageError(f"{said}: MPS (Apple silicon) is not available here", fix)
