"""Label probabilities per arm (issue 24, step 3): from the arm's own top-K at its answer's first token, or — for an
in-process arm — from the local model's next-token distribution after the exact prompt; then calibration against
the human labels and the paired difference from the reference (toxcmp.analysis.label_probs)."""

from __future__ import annotations

from typing import Any, Sequence

from toxcmp.analysis.label_probs import (arm_calibration, label_position_known, p_violating_from_top, paired_delta,
                                         violating_share)
from toxcmp.backends import get_backend
from toxcmp.run.arms import Arm
from toxcmp.run.local_scoring import in_process


def local_label_probs(arm: Arm, requests: Sequence[Any], examples: Sequence[dict[str, Any]]) -> tuple[dict, str | None]:
    """p(violating) by example under the arm's own model, at the first position it writes."""
    import torch

    backend = get_backend(arm.spec.name, arm.options)
    out: dict[str, float] = {}
    ids: dict[str, int] | None = None
    for example, request in zip(examples, requests):
        if request is None:
            continue
        loaded = backend.load(request.model)
        tokenizer = loaded.tokenizer
        if ids is None:
            pieces = {name: tokenizer(name, add_special_tokens=False)["input_ids"] for name, _ in arm.policy.categories}
            if any(len(p) != 1 for p in pieces.values()):
                return {}, "a label of the policy is more than one token for this model"
            ids = {name: p[0] for name, p in pieces.items()}
        prompt_ids = tokenizer(backend.prompt_for(loaded, request), add_special_tokens=False)["input_ids"]
        device = next(loaded.model.parameters()).device
        with torch.inference_mode():
            logits = loaded.model(torch.tensor([prompt_ids], device=device)).logits[0, -1].float()
        probs = torch.softmax(logits, dim=-1)
        share = violating_share({name: float(probs[i]) for name, i in ids.items()}, arm.policy.categories)
        if share is not None:
            out[example["example_id"]] = share
    return out, None


def add_label_probs(tidy: Sequence[dict[str, Any]], arms: Sequence[Arm], requests: Sequence[Sequence[Any]],
                    examples: Sequence[dict[str, Any]], observer: Any) -> dict[str, Any]:
    """`summary["label_probs"]`: per arm its source, calibration (or why it has none), and each arm's paired Δ
    p(violating) against the reference (the first arm)."""
    truth = {ex["example_id"]: ex.get("toxicity") for ex in examples}
    by_arm: dict[str, dict[str, float]] = {}
    arms_out: dict[str, Any] = {}
    for k, arm in enumerate(arms):
        why = label_position_known(arm.policy, arm.model.harmony)
        if why is None and in_process(arm):
            observer.phase(f"{arm.label}: label probabilities under its model", detail=True)
            p, why = local_label_probs(arm, requests[k], examples)
            source = "its model, in process"
        elif why is None:
            rows = [r for r in tidy if r["arm"] == arm.label and not r.get("repeat") and r.get("token_logprobs")]
            firsts = {r["example_id"]: next((t for t in r["token_logprobs"] if t.get("part") == "content"), None)
                      for r in rows}
            p = {i: v for i, t in firsts.items() if t is not None
                 and (v := p_violating_from_top(t.get("top") or [], arm.policy.categories)) is not None}
            source = "its own top-K at the first token"
            if not rows:
                why = "no log-probabilities (ask for them with --logprobs K)"
            elif not p:
                why = f"the policy's labels were not all among the top-K of the first token on any of {len(rows)} rows"
        if why is not None:
            arms_out[arm.label] = {"why_not": why}
            continue
        by_arm[arm.label] = p
        arms_out[arm.label] = dict(arm_calibration(p, truth), source=source)
        for row in tidy:  # results.parquet: each answer's p(violating) beside its label
            if row["arm"] == arm.label and not row.get("repeat"):
                row["p_violating"] = p.get(row["example_id"])
    reference = arms[0].label
    paired = {a.label: paired_delta(by_arm[a.label], by_arm[reference]) for a in arms[1:]
              if a.label in by_arm and reference in by_arm}
    return {"reference": reference, "arms": arms_out, "paired": paired}
