"""Label probabilities per arm (issue 24, step 3): where each answer writes its label (after Harmony's final-channel
header, at a JSON policy's label value, or at the answer's start — toxcmp.analysis.label_probs.label_offset), from
the arm's own top-K at that token, or — for an in-process arm — from its model's whole next-token distribution
after the exact prompt and the answer's text up to that token; then calibration against the human labels and the
paired difference from the reference."""

from __future__ import annotations

from typing import Any, Sequence

from toxcmp.analysis.label_probs import (arm_calibration, label_offset, label_set, p_violating_from_top,
                                         label_spelled, paired_delta, token_at, violating_share)
from toxcmp.analysis.token_parity import spelled_tokens
from toxcmp.domain.tokens import token_strings
from toxcmp.run.arms import Arm
from toxcmp.backends import get_backend
from toxcmp.run.local_scoring import in_process, with_requests


def own_label_probs(rows: Sequence[dict[str, Any]], arm: Arm) -> tuple[dict[str, float], dict[str, int]]:
    """p(violating) by example from the arm's own top-K at its label token; and how many rows had no label
    position, or a top-K without every label."""
    out, missed = {}, {"no_label_position": 0, "labels_not_in_top_k": 0}
    for row in rows:
        tokens, text = spelled_tokens(row)
        offset = label_offset(text, arm.policy, arm.model.harmony)
        hit = None if offset is None else token_at([t.get("token") or "" for t in tokens], offset)
        if hit is None:
            missed["no_label_position"] += 1
            continue
        j, before = hit
        p = p_violating_from_top(tokens[j].get("top") or [], label_set(arm.policy), before)
        if p is None:
            missed["labels_not_in_top_k"] += 1
        else:
            out[row["example_id"]] = p
    return out, missed


_VOCAB: dict[tuple, list[str]] = {}


def vocab_strings(tokenizer: Any) -> list[str]:
    """Every token id's string, decoded once per tokenizer."""
    key = (getattr(tokenizer, "name_or_path", ""), len(tokenizer), tokenizer.decode(list(range(min(8, len(tokenizer))))))
    if key not in _VOCAB:
        _VOCAB[key] = [tokenizer.decode([i]) for i in range(len(tokenizer))]
    return _VOCAB[key]


def local_label_probs(arm: Arm, rows: Sequence[dict[str, Any]], requests: Sequence[Any],
                      examples: Sequence[dict[str, Any]]) -> tuple[dict[str, float], dict[str, int]]:
    """p(violating) by example under the arm's own model: one forward pass over the exact prompt and the answer's
    tokens before its label token (the prompt's tail only, where the shared policy prefix is cached); every
    vocabulary token that spells what that token spells before the label, then a label, counts for it."""
    import torch

    out, missed = {}, {"no_label_position": 0, "labels_not_in_top_k": 0}
    categories = label_set(arm.policy)
    backend = get_backend(arm.spec.name, arm.options)
    for row, request in with_requests(rows, requests, examples):
        tokenizer, raw = backend.load(request.model).tokenizer, row.get("raw") or ""
        offset = label_offset(raw, arm.policy, arm.model.harmony)
        ids = list(tokenizer(raw, add_special_tokens=False)["input_ids"])
        hit = None if offset is None else token_at(token_strings(tokenizer, ids), offset)
        if hit is None and offset is not None and offset >= len(raw) and arm.policy.output != "json":
            hit = (len(ids), "")  # an empty answer: its label would have been the first token
        if hit is None:
            missed["no_label_position"] += 1
            continue
        j, before = hit
        # the logits predicting the label token: after the prompt and the answer's tokens before it (the label
        # token's own id, or a stand-in for an empty answer, only marks the position)
        probs = torch.softmax(backend.continuation_logits(request, ids[:j] + [0])[-1].float(), dim=-1)
        mass: dict[str, float] = {}
        for token_id, text in enumerate(vocab_strings(tokenizer)):
            name = label_spelled(text, before, categories) if text else None
            if name is not None:
                mass[name] = mass.get(name, 0.0) + float(probs[token_id])
        share = violating_share(mass, categories) if len(mass) == len(categories) else None
        if share is None:
            missed["labels_not_in_top_k"] += 1
        else:
            out[row["example_id"]] = share
    return out, missed


def _why_none(rows: int, missed: dict[str, int], asked: bool) -> str:
    if not asked:
        return "no log-probabilities (ask for them with --logprobs K)"
    if missed["no_label_position"] == rows:
        return f"no answer wrote its label where it can be read ({rows} rows)"
    return (f"the policy's labels were not all among the top-K at the label token on any of {rows} rows "
            f"({missed['no_label_position']} without a label position)")


def add_label_probs(tidy: Sequence[dict[str, Any]], arms: Sequence[Arm], requests: Sequence[Sequence[Any]],
                    examples: Sequence[dict[str, Any]], observer: Any) -> dict[str, Any]:
    """`summary["label_probs"]`: per arm its source, calibration (or why it has none), the rows without a label
    position, and each arm's paired Δ p(violating) against the reference (the first arm)."""
    truth = {ex["example_id"]: ex.get("toxicity") for ex in examples}
    by_arm: dict[str, dict[str, float]] = {}
    arms_out: dict[str, Any] = {}
    for k, arm in enumerate(arms):
        rows = [r for r in tidy if r["arm"] == arm.label and not r.get("repeat") and not r.get("error")]
        if in_process(arm):
            observer.phase(f"{arm.label}: label probabilities under its model", detail=True)
            p, missed = local_label_probs(arm, rows, requests[k], examples)
            source, asked = "its model, in process", True
        else:
            rows = [r for r in rows if r.get("token_logprobs")]
            p, missed = own_label_probs(rows, arm)
            source, asked = "its own top-K at the label token", bool(rows)
        if not p:
            arms_out[arm.label] = {"why_not": _why_none(len(rows), missed, asked)}
            continue
        by_arm[arm.label] = p
        arms_out[arm.label] = dict(arm_calibration(p, truth), source=source, **missed, by_row=p)
        for row in tidy:  # results.parquet: each answer's p(violating) beside its label
            if row["arm"] == arm.label and not row.get("repeat"):
                row["p_violating"] = p.get(row["example_id"])
    reference = arms[0].label
    paired = {a.label: paired_delta(by_arm[a.label], by_arm[reference]) for a in arms[1:]
              if a.label in by_arm and reference in by_arm}
    return {"reference": reference, "arms": arms_out, "paired": paired}
