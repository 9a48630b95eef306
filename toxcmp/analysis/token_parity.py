"""An arm's own token log-probabilities against the local model's on the same text (issue 24, step 2).

The arm's tokens come off the wire as strings; the local model scores the arm's text under its own tokenizer.
Tokens are aligned by the characters they cover, so a server whose tokenizer splits a word differently is aligned
where the splits agree and counted as unaligned where they do not — never misread. Pure: no model here."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Sequence

Span = tuple[int, int]


@dataclass(frozen=True)
class LocalScores:
    """The local model's reading of a text: each of its tokens' character span, log p and whether it was top-1,
    and its top-K tokens (strings) at each position."""

    spans: Sequence[Span]
    logprobs: Sequence[float]
    top1: Sequence[bool]
    top: Sequence[Sequence[str]]


def spans_of(tokens: Sequence[str]) -> list[Span]:
    """Character spans of consecutive token strings."""
    out, at = [], 0
    for token in tokens:
        out.append((at, at + len(token)))
        at += len(token)
    return out


def spelled_tokens(row: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The tokens of a row to read and the text they spell: all of them when they spell the raw text
    (an in-process arm; a server that sends one stream), else the content part's (a server that sent the
    reasoning beside it)."""
    tokens = row.get("token_logprobs") or []
    if tokens and "".join(t.get("token") or "" for t in tokens) == (row.get("raw") or ""):
        return tokens, row["raw"]
    content = [t for t in tokens if t.get("part") == "content"]
    return content, "".join(t.get("token") or "" for t in content)


def align(arm_tokens: Sequence[dict[str, Any]], text: str, local: LocalScores) -> list[dict[str, Any]]:
    """For each of the arm's content tokens: the local log p of the local token covering exactly the same
    characters (None: no such token, or the arm's tokens stop spelling `text` from here on), whether the arm's
    token was the local model's top-1, and how many of the arm's top-K alternatives are in the local top-K."""
    by_span = {span: j for j, span in enumerate(local.spans)}
    out = []
    spelled = True
    for token, span in zip(arm_tokens, spans_of([t.get("token") or "" for t in arm_tokens])):
        spelled = spelled and text[span[0]:span[1]] == (token.get("token") or "")
        j = by_span.get(span) if spelled else None
        if j is None:
            out.append({"local_logprob": None, "local_top1": None, "top_overlap": None})
            continue
        theirs = [alt for alt, _ in token.get("top") or []]
        overlap = (len(set(theirs) & set(local.top[j])) / len(theirs)) if theirs else None
        out.append({"local_logprob": float(local.logprobs[j]), "local_top1": bool(local.top1[j]),
                    "top_overlap": overlap})
    return out


def row_parity(arm_tokens: Sequence[dict[str, Any]], scored: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One row: aligned and unaligned tokens, mean and max |Δ log p| (arm − local), the worst position with both
    log p, the share where the arm's token was the local top-1."""
    deltas = [(i, t["logprob"] - s["local_logprob"]) for i, (t, s) in enumerate(zip(arm_tokens, scored))
              if s["local_logprob"] is not None]
    out: dict[str, Any] = {"aligned": len(deltas), "unaligned": len(arm_tokens) - len(deltas)}
    if not deltas:
        return out | {"mean_abs_delta": None, "max_abs_delta": None, "worst": None, "top1_share": None}
    worst_i, worst = max(deltas, key=lambda d: abs(d[1]))
    top1 = [s["local_top1"] for s in scored if s["local_top1"] is not None]
    return out | {"mean_abs_delta": statistics.fmean(abs(d) for _, d in deltas),
                  "max_abs_delta": abs(worst),
                  "worst": {"position": worst_i, "token": arm_tokens[worst_i].get("token"),
                            "arm_logprob": arm_tokens[worst_i]["logprob"],
                            "local_logprob": scored[worst_i]["local_logprob"]},
                  "top1_share": sum(top1) / len(top1) if top1 else None}


def arm_parity(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """An arm over its scored rows: tokens aligned and not, mean |Δ| over every aligned token, the largest |Δ|
    and where, the share of tokens that were the local top-1."""
    aligned = sum(r["aligned"] for r in rows)
    out: dict[str, Any] = {"rows": len(rows), "aligned": aligned, "unaligned": sum(r["unaligned"] for r in rows)}
    scored = [r for r in rows if r["aligned"]]
    if not scored:
        return out | {"mean_abs_delta": None, "max_abs_delta": None, "worst": None, "top1_share": None}
    worst = max(scored, key=lambda r: r["max_abs_delta"])
    weights = [r["aligned"] for r in scored]
    return out | {"mean_abs_delta": sum(r["mean_abs_delta"] * w for r, w in zip(scored, weights)) / sum(weights),
                  "max_abs_delta": worst["max_abs_delta"], "worst": dict(worst["worst"], example_id=worst.get("example_id")),
                  "top1_share": (sum((r["top1_share"] or 0) * w for r, w in zip(scored, weights)) / sum(weights))}


DELTA_EDGES = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # |Δ log p| bins, by decade; the last is 1 and above


def delta_histogram(deltas: Sequence[float]) -> dict[str, Any]:
    """|Δ log p| over every aligned token, counted by decade (the page's histogram)."""
    counts = [0] * len(DELTA_EDGES)
    for d in deltas:
        counts[max(k for k, edge in enumerate(DELTA_EDGES) if abs(d) >= edge)] += 1
    labels = [f"<{DELTA_EDGES[1]:g}"] + [f"{lo:g}–{hi:g}" for lo, hi in zip(DELTA_EDGES[1:], DELTA_EDGES[2:])] + ["≥1"]
    return {"edges": list(DELTA_EDGES), "labels": labels, "counts": counts}


def parity_phrase(label: str, reference: str, p: dict[str, Any]) -> str:
    if not p.get("aligned"):
        return (f"token log p, {label} vs {reference}'s model: no token could be aligned "
                f"({p.get('unaligned', 0)} unaligned)")
    w = p["worst"]
    return (f"token log p, {label} vs {reference}'s model: |Δ| mean {p['mean_abs_delta']:.4f}, max "
            f"{p['max_abs_delta']:.4f} (token {w['token']!r} of {str(w.get('example_id'))[:12]}: "
            f"{w['arm_logprob']:.3f} vs {w['local_logprob']:.3f}) over {p['aligned']} aligned tokens of {p['rows']} rows"
            f" ({p['unaligned']} unaligned); the arm's token was the local top-1 on {100 * p['top1_share']:.1f}%")
