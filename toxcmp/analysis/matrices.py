"""Cross-tabulations of two sides' outcomes (pure statistics): the page shows them, the summary stores them."""

from __future__ import annotations

from typing import Any, Sequence

from toxcmp.analysis.diagnosis import Side, fine_outcome, outcome

OUTCOMES = ("0", "1", "refusal", "unparsed", "error")


def _side(row: dict[str, Any], p: str) -> Side:
    return Side(row.get(f"{p}_binary"), row.get(f"{p}_fine"), bool(row.get(f"{p}_parse_ok")),
                bool(row.get(f"{p}_refusal")), row.get(f"{p}_error"))


def outcome_matrix(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts of (A's outcome, B's outcome): labels, refusals, unparsed answers and errors."""
    counts: dict[tuple[str, str], int] = {}
    for r in rows:
        key = (outcome(_side(r, "a")), outcome(_side(r, "b")))
        counts[key] = counts.get(key, 0) + 1
    labels = [o for o in OUTCOMES if any(o in k for k in counts)]
    return {"labels": labels, "cells": [[counts.get((x, y), 0) for y in labels] for x in labels]}


def fine_matrix(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Fine-grained category transitions from A to B (labels by frequency)."""
    counts: dict[tuple[str, str], int] = {}
    freq: dict[str, int] = {}
    for r in rows:
        key = (fine_outcome(_side(r, "a")), fine_outcome(_side(r, "b")))
        counts[key] = counts.get(key, 0) + 1
        for k in key:
            freq[k] = freq.get(k, 0) + 1
    labels = sorted(freq, key=lambda k: (-freq[k], k))
    return {"labels": labels, "cells": [[counts.get((x, y), 0) for y in labels] for x in labels]}
