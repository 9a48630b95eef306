"""Arms (a backend with its options, model, policy and generation settings) and the run id derived from them."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from toxcmp.analysis.arms import DEFAULT_MARGIN
from toxcmp.backends import BackendConfig, BackendOptions
from toxcmp.config import GenerationConfig
from toxcmp.domain.models import ModelSpec, resolve_model
from toxcmp.domain.policies import Policy, load_policy
from toxcmp.errors import UsageError
from toxcmp.run.config import CompareConfig
from toxcmp.run.specs import BackendSpec
from toxcmp.run.validation import arm_options, check_device, check_generation

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def validate_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id) or ".." in run_id:
        raise UsageError(f"invalid run id {run_id!r}",
                         "use letters, digits, '.', '_' and '-' (no path separators, no '..'), at most 128 characters")
    return run_id


def arm_identity(backend: str, options: BackendOptions) -> dict[str, Any]:
    """The options of one arm that can change its answers, as its backend declares them (never the token, the
    cache dir or timeouts)."""
    return {"backend": backend, **options.identity()}


def default_run_id(cfg: CompareConfig, spec: ModelSpec, policy: Policy, sample_meta: dict[str, Any],
                   specs: Sequence[BackendSpec], arms: Sequence["Arm"]) -> str:
    """Deterministic: the same command maps to the same directory, so a rerun resumes and overwrites it. Every
    option that can change a result or the verdict is part of it, so two different runs never share a dir."""
    identity = {"policy": policy.sha256, "model": spec.model_id, "revision": spec.revision,
                "data": sample_meta["content_sha256"], "size": cfg.sample_size, "seed": cfg.seed,
                "human_only": cfg.human_only, "stratify": cfg.stratify, "backends": [s.text for s in specs],
                "arms": [arm_identity(a.spec.name, a.options) for a in arms], "generation": cfg.generation.to_dict(),
                "unparsed_as": cfg.unparsed_as, "threshold": cfg.threshold, "min_labelled": cfg.min_labelled}
    if getattr(cfg, "limit", None) is not None:  # the first N rows: the loaded data's hash does not tell them
        identity["limit"] = cfg.limit
    if cfg.repeats != 1 or cfg.margin != DEFAULT_MARGIN or cfg.reference is not None:  # two-arm ids stay as they were
        identity.update(repeats=cfg.repeats, margin=cfg.margin, reference=cfg.reference)
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return validate_run_id(f"{policy.name}-{_safe_name(spec.name) or 'model'}-{digest}")


def _safe_name(text: str) -> str:
    """Characters a run id may not hold become '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def prepare_run_dir(output_dir: Path, run_id: str) -> Path:
    """Create and probe the run dir before any model work, so an unwritable target fails fast."""
    run_dir = (output_dir / validate_run_id(run_id))
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"output dir {run_dir} is not writable ({exc.strerror})",
                         "pass --output-dir to a writable directory (rescore: or --no-write)") from None
    if run_dir.resolve().parent != output_dir.resolve():
        raise UsageError(f"run dir {run_dir} escapes {output_dir}", "use a plain run id")
    return run_dir


@dataclass(frozen=True)
class Arm:
    """One configuration that answers requests: a backend with its options, and its own model, policy and
    generation settings (the run's, unless the spec overrides them)."""

    spec: BackendSpec
    model: ModelSpec
    policy: Policy
    generation: GenerationConfig
    options: BackendOptions  # its backend's own, as declared

    @property
    def label(self) -> str:
        return self.spec.label

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "spec": self.spec.text, "backend": self.spec.name,
                "identity": arm_identity(self.spec.name, self.options), "model": self.model.name, "model_id": self.model.model_id,
                "revision": self.model.revision, "harmony": self.model.harmony, "policy": self.policy.name,
                "policy_sha256": self.policy.sha256, "reasoning_effort": self.generation.reasoning_effort,
                "max_new_tokens": self.generation.max_new_tokens}


def build_arm(spec: BackendSpec, cfg: CompareConfig, base: BackendConfig) -> tuple[Arm, str | None]:
    """Checks every option of one arm (before any data or model is loaded) and lets its backend settle what
    depends on the model (e.g. which server to start)."""
    options = dict(spec.options)
    model = resolve_model(options.get("model") or cfg.model, cfg.revision)
    policy = load_policy(options.get("policy") or cfg.policy)
    overrides: dict[str, Any] = {}
    if "reasoning_effort" in options:
        overrides["reasoning_effort"] = options["reasoning_effort"]
    if "max_new_tokens" in options:
        try:
            overrides["max_new_tokens"] = int(options["max_new_tokens"])
        except ValueError:
            raise UsageError(f"max_new_tokens must be a number in {spec.text!r}", "e.g. max_new_tokens=256") from None
    generation = replace(cfg.generation, **overrides)
    check_generation(generation)
    options, note = arm_options(spec, base).resolve(model, f"for {spec.text!r}")
    check_device(options, spec.text if "device" in spec.backend_options else "")  # before any model or server starts
    return Arm(spec, model, policy, generation, options), note


def pick_reference(arms: Sequence[Arm], wanted: str | None) -> int:
    if wanted is None:
        return 0
    for i, arm in enumerate(arms):
        if wanted in (arm.label, arm.spec.text):
            return i
    raise UsageError(f"--reference {wanted!r} is none of the arms", f"use one of: {', '.join(a.label for a in arms)}")
