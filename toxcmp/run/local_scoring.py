"""Diagnosis extras that need the local model: label margins and token divergences of a comparison."""

from __future__ import annotations

from typing import Sequence

from toxcmp.analysis.scoring import SIDES
from toxcmp.backends import ScoresTokens, backend_class, get_backend
from toxcmp.run.arms import Arm


def in_process(arm: Arm) -> bool:
    """The arm holds its model in this process: it can score any text under it."""
    return issubclass(backend_class(arm.spec.name), ScoresTokens)


def local_side(pair: Sequence[Arm]) -> int | None:
    """Which side of a comparison (or which arm of a run) holds its model in process, the first if several."""
    return next((i for i, arm in enumerate(pair) if in_process(arm)), None)


def with_requests(todo, requests, examples):
    """(row, request) for each row of `todo` whose example has a request in `requests` (one arm's, by example)."""
    by_id = {ex["example_id"]: req for ex, req in zip(examples, requests)}
    for row in todo:
        request = by_id.get(row["example_id"])
        if request is not None:
            yield row, request


def with_local_model(todo, arm: Arm, requests, examples):
    """(row, loaded model, exact prompt) for each row of `todo`, with the in-process arm's model and request."""
    backend = get_backend(arm.spec.name, arm.options)
    for row, request in with_requests(todo, requests, examples):
        loaded = backend.load(request.model)
        yield row, loaded, backend.prompt_for(loaded, request)


def add_margins(rows, pair: Sequence[Arm], requests_a, requests_b, examples, observer) -> None:
    """For label disagreements, ask the local model how close it came to the other backend's label."""
    local = local_side(pair)
    todo = [r for r in rows if r["cause"] in ("label_flip", "fine_grain_only")]
    if local is None or not todo:
        return
    from toxcmp.analysis.diagnosis import label_margin

    side, other = SIDES[local], SIDES[1 - local]
    observer.phase(f"scoring {len(todo)} label disagreement(s) with the local model", detail=True)
    for row, loaded, prompt in with_local_model(todo, pair[local], (requests_a, requests_b)[local], examples):
        candidates = [(row[f"{side}_fine"], row[f"{other}_fine"]), (str(row[f"{side}_binary"]), str(row[f"{other}_binary"]))]
        for own, theirs in candidates:
            if own and theirs and own != theirs:
                margin = label_margin(loaded.model, loaded.tokenizer, prompt, row[f"{side}_raw"] or "", own, theirs)
                if margin is not None:
                    row["margin_nats"], row["margin_kind"] = round(margin.nats, 4), margin.kind
                    break
    observer.log(f"scored {sum(1 for r in todo if r['margin_kind'])} of {len(todo)} label disagreements with the local model")


def add_divergences(rows, pair: Sequence[Arm], requests_a, requests_b, examples, observer) -> None:
    """For texts that differ, ask the local model how close its own next token was to the other side's at the
    first token where they part (near tie or real difference)."""
    from toxcmp.analysis.divergence import (
        DIVERGENCE_SCORE_LIMIT,
        token_divergence,
        token_fields,
    )

    local = local_side(pair)
    todo = [r for r in rows if r.get("diverge_char") is not None][:DIVERGENCE_SCORE_LIMIT]
    if local is None or not todo:
        return
    side, other = SIDES[local], SIDES[1 - local]
    observer.phase(f"scoring {len(todo)} text divergence(s) with the local model", detail=True)
    for row, loaded, prompt in with_local_model(todo, pair[local], (requests_a, requests_b)[local], examples):
        found = token_divergence(loaded.model, loaded.tokenizer, prompt, row[f"{side}_raw"] or "",
                                 row[f"{other}_raw"] or "",
                                 local_stopped=row.get(f"{side}_finish_reason") != "length",
                                 other_stopped=row.get(f"{other}_finish_reason") != "length")
        row.update(token_fields(found, side))
    scored = [r for r in todo if r.get("divergence_kind")]
    observer.log(f"scored {len(scored)} of {len(todo)} text divergences with the local model: "
                 f"{sum(r['divergence_kind'] == 'near_tie' for r in scored)} near tie(s), "
                 f"{sum(r['divergence_kind'] == 'real' for r in scored)} real")
