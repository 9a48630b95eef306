"""Token log-probabilities per arm: who was asked for them, who sent them, who refused (issue 24, step 1).

Counted from the tidy rows (repeat 0 and every repeat alike), so a rescore of results.parquet says the same."""

from __future__ import annotations

from typing import Any, Sequence


def logprob_summary(tidy: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """By arm, for every arm asked for log-probabilities: `asked` (the top K), `answered` (rows without an error),
    `with_logprobs` (rows whose answer came with them), `tokens` (how many tokens in all), `refused` (the server
    refused the parameter: the arm has none) and `state` ("sent", "partly sent", "refused" or "not sent")."""
    out: dict[str, dict[str, Any]] = {}
    for row in tidy:
        if row.get("logprobs_asked") is None:
            continue
        arm = out.setdefault(row["arm"], {"asked": int(row["logprobs_asked"]), "answered": 0, "with_logprobs": 0,
                                          "tokens": 0, "refused": False})
        if row.get("error"):
            continue
        arm["answered"] += 1
        if row.get("logprob_tokens") is not None:
            arm["with_logprobs"] += 1
            arm["tokens"] += int(row["logprob_tokens"])
        if "logprobs" in (row.get("rejected_parameters") or "").split(","):
            arm["refused"] = True
    for arm in out.values():
        if arm["refused"] and not arm["with_logprobs"]:
            arm["state"] = "refused"
        elif arm["answered"] and arm["with_logprobs"] == arm["answered"]:
            arm["state"] = "sent"
        elif arm["with_logprobs"]:
            arm["state"] = "partly sent"
        else:
            arm["state"] = "not sent"
    return out


def logprob_phrase(label: str, s: dict[str, Any]) -> str:
    """One arm's line: what was asked and what came back."""
    asked = f"asked for the top {s['asked']}" if s["asked"] else "asked (the tokens' own only)"
    if s["state"] == "refused":
        return f"log-probabilities, {label}: {asked}; the server refused the parameter — no log-probabilities"
    if s["state"] == "not sent":
        return f"log-probabilities, {label}: {asked}; none sent on {s['answered']} answers — no log-probabilities"
    return (f"log-probabilities, {label}: {asked}; sent on {s['with_logprobs']}/{s['answered']} answers, "
            f"{s['tokens']} tokens (tokens.parquet)")
