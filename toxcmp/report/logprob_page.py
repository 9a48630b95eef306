"""The page's log-probability section (issue 24): which arms sent log-probabilities, each arm's tokens against the
local model (a histogram of |Δ log p| by decade), label probabilities per arm (AUROC, Brier, ECE and a reliability
diagram) and the paired Δ p(violating) against the reference. Pure: from the summary only."""

from __future__ import annotations

import html
import math
from typing import Any

from toxcmp.analysis.label_probs import label_prob_lines
from toxcmp.analysis.logprobs import logprob_phrase
from toxcmp.analysis.token_parity import parity_phrase
from toxcmp.report.page import _COLOURS, _svg, bar_chart, table

_SIDE, _M = 200, 28  # a reliability diagram is square: side and margin


def reliability_svg(bins: list[dict[str, Any]], title: str) -> str:
    """Mean predicted p(violating) (x) against the share truly violating (y) per bin, a dot's area by its rows,
    with the diagonal a calibrated arm would lie on."""
    if not bins:
        return f'<p class="muted">{html.escape(title)}: no labelled rows</p>'
    span = _SIDE - 2 * _M
    top = max(b["n"] for b in bins)

    def x(v: float) -> float:
        return _M + span * v

    def y(v: float) -> float:
        return _SIDE - _M - span * v

    parts = [f'<line x1="{x(0)}" y1="{y(0)}" x2="{x(1)}" y2="{y(1)}" stroke="#999" stroke-dasharray="3,3"/>',
             f'<rect x="{_M}" y="{_M}" width="{span}" height="{span}" fill="none" stroke="#ccc"/>']
    for b in bins:
        r = 2 + 6 * math.sqrt(b["n"] / top)
        parts.append(f'<circle cx="{x(b["mean_p"]):.1f}" cy="{y(b["share_violating"]):.1f}" r="{r:.1f}" '
                     f'fill="{_COLOURS[1]}" fill-opacity="0.7"><title>p in [{b["low"]:.1f}, {b["high"]:.1f}): '
                     f'{b["n"]} rows, mean p {b["mean_p"]:.3f}, {100 * b["share_violating"]:.0f}% violating'
                     f'</title></circle>')
    parts.append(f'<text x="{_M}" y="{_SIDE - 8}">0</text><text x="{_SIDE - _M}" y="{_SIDE - 8}" text-anchor="end">'
                 f'p(violating) 1</text><text x="4" y="{_M + 4}">100%</text><text x="4" y="{_SIDE - _M}">0%</text>')
    return _svg("".join(parts), title, _SIDE, _SIDE)


def _num(value: Any) -> str:
    return "—" if value is None else f"{value:.3f}"


def logprob_html(summary: dict[str, Any]) -> str:
    """The section, or "" for a run that asked for no log-probabilities."""
    asked = summary.get("logprobs") or {}
    parity = summary.get("token_parity") or {}
    probs = summary.get("label_probs") or {}
    if not (asked or parity or probs):
        return ""
    out = ['<h2 id="logprobs">Log-probability parity</h2>']
    lines = label_prob_lines(summary)
    if lines and lines[0].startswith("labels agree"):
        out.append(f'<p class="lead">{html.escape(lines[0])}</p>')
    out += [f"<p>{html.escape(logprob_phrase(label, a))}</p>" for label, a in asked.items()]
    figures = []
    for label, p in parity.items():
        out.append(f"<p>{html.escape(parity_phrase(label, p['reference'], p))}</p>")
        h = p.get("histogram")
        if h:
            figures.append(f'<figure>{bar_chart(list(zip(h["labels"], h["counts"])), f"|Δ log p|, {label}")}'
                           f"<figcaption>{html.escape(label)} vs {html.escape(p['reference'])}'s model: aligned "
                           f"tokens by |Δ log p| (nats)</figcaption></figure>")
    arms = probs.get("arms") or {}
    if arms:
        body = [[label, a.get("why_not") or a.get("source"), a.get("rows", "—"), a.get("labelled", "—"),
                 _num(a.get("auroc")), _num(a.get("brier")), _num(a.get("ece"))] for label, a in arms.items()]
        out.append("<h3>label probabilities, per arm</h3>"
                   + table(["arm", "from", "rows", "labelled", "AUROC", "Brier", "ECE"], body, "stats"))
        for label, a in arms.items():
            if not a.get("why_not"):
                figures.append(f"<figure>{reliability_svg(a.get('bins') or [], f'reliability, {label}')}<figcaption>"
                               f"{html.escape(label)}: reliability (dashed: calibrated)</figcaption></figure>")
    paired = [line for line in lines if line.startswith("p(violating), ")]
    out += [f"<p>{html.escape(line)}</p>" for line in paired]
    if figures:
        out.append(f'<div class="charts logprobs">{"".join(figures)}</div>')
    return "".join(out)


def row_token_data(summary: dict[str, Any]) -> dict[str, Any]:
    """For the row browser, by arm and example: the worst token against the local model, and p(violating)."""
    worst = {label: p.get("by_row") or {} for label, p in (summary.get("token_parity") or {}).items()}
    p_violating = {label: a.get("by_row") or {} for label, a in ((summary.get("label_probs") or {}).get("arms") or {}).items()}
    return {"worst": worst, "p_violating": p_violating}
