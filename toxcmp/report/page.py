"""The parts every page toxcmp writes is built from: tables, inline SVG charts (static, escaped), the page's
template with its placeholders filled in one pass, and JSON that is safe inside a `<script>` block.

`toxcmp.report.html` (a comparison's page) and `toxcmp.report.evaluation_page` (one arm against the human labels)
both use them; neither imports the other's layout.
"""

from __future__ import annotations

import html
import json
import math
import re
from importlib import resources
from typing import Any, Mapping, Sequence

from toxcmp.analysis import metrics
from toxcmp.report.text import share_text

_SIDE_KEYS = ("backend", "outcome", "binary", "fine", "parse_error", "refusal", "error", "content", "reasoning",
              "latency_s", "served_by", "prompt_hash", "cached", "finish_reason")


# -- data for the page -------------------------------------------------------------------------------------------

def _raw_for_page(raw: str | None, content: str | None, reasoning: str | None) -> str | None:
    """The raw output when it says more than final answer + reasoning (markers aside); else None (saves MBs)."""
    raw, content, reasoning = raw or "", content or "", reasoning or ""
    if not raw or raw == content:
        return None
    if content in raw and reasoning in raw and len(raw) <= len(content) + len(reasoning) + 120:
        return None
    return raw


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def replayed_arms(summary: dict[str, Any]) -> set[str]:
    """Arms that replay a recording (`recorded`): their latencies are the recording's, served from the cache or
    not."""
    return {a.get("label") for a in summary.get("arms") or [] if a.get("backend") == "recorded"}


def recorded_p50(values: Sequence[float]) -> str:
    """A replayed arm's latency p50 (the summary's rule: the upper median), or that its recording has none."""
    return f"{sorted(values)[len(values) // 2]:.3f} (recorded)" if values else "not in the recording"


def sample_text(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """`n = 50`; a run that did not complete says how many it planned: `n = 48 of 200 planned (interrupted)`."""
    status = summary.get("status") or meta.get("status") or "complete"
    planned = (meta.get("dataset") or {}).get("sampled")
    if status == "complete":
        return f"n = {summary.get('n')}"
    return f"n = {summary.get('n')}" + (f" of {planned} planned" if planned else "") + f" ({status})"


def label_notes_html(summary: dict[str, Any]) -> str:
    """The headline's caveats (`label_notes`: no labelled rows, no row labelled by both arms), before any number."""
    notes = summary.get("label_notes") or []
    return "".join(f'<p class="note label-note">{html.escape(n)}</p>' for n in notes)


def pct(p: dict[str, Any] | None, reason: str | None = None) -> str:
    """A proportion with its CI and n (`96.0% [86.5–98.9] (n = 50)`), or `—` with why it has no value."""
    text = share_text(p, reason)
    return text if not p or p.get("value") is None else f"{text} (n = {p.get('n')})"


def seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def table(head: Sequence[str], body: Sequence[Sequence[str]], cls: str = "") -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in head)
    b = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in body)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>'


def histogram(values: Sequence[float], bins: int, lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    values = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not values:
        return {"edges": [], "counts": []}
    lo = min(values) if lo is None else lo
    hi = max(values) if hi is None else hi
    if hi <= lo:
        hi = lo + 1e-9
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, max(0, int((v - lo) / width)))] += 1
    return {"edges": [lo + i * width for i in range(bins + 1)], "counts": counts}



def running_share(flags: Sequence[bool | None]) -> list[tuple[int, float, float, float]]:
    """(n, share, low, high) after each defined flag, in run order, with its Wilson 95 % interval: how an estimate
    (agreement, accuracy) settles with sample size. None (no answer, no label) is left out."""
    out, hits, n = [], 0, 0
    for flag in flags:
        if flag is None:
            continue
        n += 1
        hits += bool(flag)
        ci = metrics.wilson(hits, n)
        out.append((n, ci.value, ci.low, ci.high))
    return out


# -- SVG charts (static, escaped) -------------------------------------------------------------------------------

_W, _H, _PAD = 420, 160, 30
_COLOURS = ("#3b6ea5", "#c2593b", "#6b8e23", "#8a5fb0")


def _svg(body: str, title: str, width: int = _W, height: int = _H) -> str:
    return (f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
            f"<title>{html.escape(title)}</title>{body}</svg>")


def bar_chart(pairs: Sequence[tuple[str, int]], title: str) -> str:
    if not pairs or not any(v for _, v in pairs):
        return f'<p class="muted">{html.escape(title)}: nothing to show</p>'
    top = max(v for _, v in pairs)
    bar_w = (_W - 2 * _PAD) / len(pairs)
    parts = []
    for i, (label, value) in enumerate(pairs):
        h = (_H - 2 * _PAD) * value / top
        x, y = _PAD + i * bar_w, _H - _PAD - h
        parts.append(f'<rect x="{x + 4:.1f}" y="{y:.1f}" width="{bar_w - 8:.1f}" height="{h:.1f}" fill="{_COLOURS[0]}"/>'
                     f'<text x="{x + bar_w / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle">{value}</text>'
                     f'<text x="{x + bar_w / 2:.1f}" y="{_H - _PAD + 14:.1f}" text-anchor="middle">{html.escape(label)}</text>')
    return _svg("".join(parts), title)


def histogram_chart(series: Sequence[tuple[str, dict[str, Any]]], title: str, unit: str = "") -> str:
    series = [(name, h) for name, h in series if h["counts"]]
    if not series or all(h["edges"][-1] - h["edges"][0] < 1e-6 for _, h in series):
        return f'<p class="muted">{html.escape(title)}: no spread to show (no fresh answers, or all equal)</p>'
    top = max(max(h["counts"]) for _, h in series) or 1
    parts = []
    for k, (name, h) in enumerate(series):
        bins = len(h["counts"])
        bar_w = (_W - 2 * _PAD) / bins / len(series)
        for i, c in enumerate(h["counts"]):
            bh = (_H - 2 * _PAD) * c / top
            x = _PAD + (i * len(series) + k) * bar_w
            parts.append(f'<rect x="{x:.1f}" y="{_H - _PAD - bh:.1f}" width="{max(bar_w - 1, 1):.1f}" height="{bh:.1f}" '
                         f'fill="{_COLOURS[k % len(_COLOURS)]}"><title>{html.escape(name)}: {c} in '
                         f'[{h["edges"][i]:.3g}, {h["edges"][i + 1]:.3g}){html.escape(unit)}</title></rect>')
        parts.append(f'<text x="{_W - _PAD}" y="{14 + 13 * k}" text-anchor="end" fill="{_COLOURS[k % len(_COLOURS)]}">'
                     f"{html.escape(name)}</text>")
    lo, hi = series[0][1]["edges"][0], series[0][1]["edges"][-1]
    parts.append(f'<text x="{_PAD}" y="{_H - 8}">{lo:.3g}{html.escape(unit)}</text>'
                 f'<text x="{_W - _PAD}" y="{_H - 8}" text-anchor="end">{hi:.3g}{html.escape(unit)}</text>')
    return _svg("".join(parts), title)


def running_chart(points: Sequence[tuple[int, float, float, float]], title: str) -> str:
    if len(points) < 2:
        return f'<p class="muted">{html.escape(title)}: fewer than two scored rows</p>'
    n_max = points[-1][0]

    def xy(n: int, v: float) -> str:
        return f"{_PAD + (_W - 2 * _PAD) * (n - 1) / max(1, n_max - 1):.1f},{_H - _PAD - (_H - 2 * _PAD) * v:.1f}"

    band = " ".join(xy(n, hi) for n, _, _, hi in points) + " " + " ".join(xy(n, lo) for n, _, lo, _ in reversed(points))
    line = " ".join(xy(n, v) for n, v, _, _ in points)
    body = (f'<polygon points="{band}" fill="{_COLOURS[0]}" fill-opacity="0.2"/>'
            f'<polyline points="{line}" fill="none" stroke="{_COLOURS[0]}" stroke-width="1.5"/>'
            f'<text x="{_PAD}" y="{_H - 8}">n = 1</text><text x="{_W - _PAD}" y="{_H - 8}" text-anchor="end">n = {n_max}</text>'
            f'<text x="4" y="{_PAD + 4}">100%</text><text x="4" y="{_H - _PAD}">0%</text>')
    return _svg(body, title)



def embed_json(data: Any) -> str:
    """JSON that cannot end its <script> block or start markup, whatever strings it holds."""
    text = json.dumps(data, ensure_ascii=False, default=str, allow_nan=False, separators=(",", ":"))
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))



def fill(fields: Mapping[str, str]) -> str:
    """The page template with every `{{NAME}}` replaced in one pass: text put into the page is never scanned again
    for placeholders."""
    template = resources.files("toxcmp.report").joinpath("template.html").read_text(encoding="utf-8")
    return re.sub(r"\{\{([A-Z_]+)\}\}", lambda m: fields[m.group(1)], template)
