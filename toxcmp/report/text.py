"""Plain-text phrases the console report and the page share (no markup, no rich, no HTML)."""

from __future__ import annotations

from typing import Any

from toxcmp.analysis.divergence import DIVERGENCE_SCORE_LIMIT
from toxcmp.analysis.prompt_tokens import NO_ROWS, NO_TOKENIZER, NO_USAGE


def share_text(p: dict[str, Any] | None, reason: str | None = None) -> str:
    """A proportion with its CI (`96.0% [86.5–98.9]`), or `—` with why it has no value."""
    if not p or p.get("value") is None:
        return "—" + (f" ({reason})" if reason else "")
    if p.get("low") is None:
        return f"{p['value']:.1%}"
    return f"{p['value']:.1%} [{100 * p['low']:.1f}–{100 * p['high']:.1f}]"


def f1_text(side: dict[str, Any]) -> str:
    """A side's F1 with its bootstrap CI (`0.857 [0.700, 0.950]`), or `—` with why it has no value."""
    if side.get("f1") is None:
        reason = (side.get("undefined") or {}).get("f1")
        return "—" + (f" ({reason})" if reason else "")
    ci = side.get("f1_ci") or {}
    return f"{side['f1']:.3f}" + (f" [{ci['low']:.3f}, {ci['high']:.3f}]" if ci.get("low") is not None else "")


def mcnemar_text(m: dict[str, Any]) -> str:
    """The exact McNemar test on correctness, or `—` with why it has none (no labelled rows)."""
    if m.get("p_value") is None:
        return "—" + (f" ({m['reason']})" if m.get("reason") else "")
    return f"p = {m['p_value']:.3g}  (only A right {m['only_a_correct']}, only B right {m['only_b_correct']})"


NO_LABEL_AGREEMENT = "agreement on giving no label"  # beside a binary agreement no row of which has two labels


def equivalence_numbers(eq: dict[str, Any]) -> str:
    """Δ = the arm's disagreement minus the reference's own (its floor), with the TOST's 90 % interval."""
    if eq.get("difference") is None:
        return "no rows"
    lo, hi = eq.get("ci90") or (None, None)
    ci = "" if lo is None else f", 90% CI [{lo:+.3f}, {hi:+.3f}]"
    floor = "" if eq.get("floor_measured") else "; floor not measured (--repeats 2)"
    return f"Δ {eq['difference']:+.3f}{ci}{floor}"


def divergence_line(d: dict[str, Any] | None) -> str | None:
    """Where the two sides' raw texts part, and how the local model scores the partings (plain text)."""
    if not d or not d.get("n_answered"):
        return None
    if not d["n_differ"]:
        return f"raw texts identical in all {d['n_answered']} answered rows (end-of-turn markers aside)"
    c = d["char_positions"]
    text = (f"raw texts (end-of-turn markers aside) part in {d['n_differ']} of {d['n_answered']} answered rows, at character "
            f"{c['min']}–{c['max']} (median {c['median']:g})")
    t = d.get("token_positions")
    if t:
        text += f", generated token {t['min']}–{t['max']} (median {t['median']:g})"
    if d.get("scored"):
        text += (f"; local model at the parting: {d['near_tie']} near tie(s), {d['real']} real "
                 f"(near tie: |Δ log p| < 1 nat)")
    if d.get("unscored"):
        text += (f"; {d['unscored']} not scored (no local side, --no-margin, one side only ran longer, or past "
                 f"the first {DIVERGENCE_SCORE_LIMIT} partings)")
    return text


def replayed_arms(summary: dict[str, Any]) -> set[str]:
    """The labels of the arms that replay a recording (`metadata.arms[].backend == "recorded"`)."""
    return {a.get("label") for a in (summary.get("metadata") or {}).get("arms") or [] if a.get("backend") == "recorded"}


def prompt_tokens_phrase(p: dict[str, Any] | None, replayed: bool = False) -> str:
    """One arm's prompt-token parity (`summary["prompt_tokens"][arm]`) in words: the share of rows whose reported
    prompt tokens equal toxcmp's own render, the differences, and the render variants that match them. `replayed`:
    the arm replays a recording, so missing usage is the recording's, not a server's."""
    if not p:
        return "not measured"
    if p.get("equal") is None:
        reason = p.get("reason") or "not measured"
        if replayed and p.get("reported") == 0 and p.get("answered"):
            return "the recording holds no usage (prompt tokens were not recorded)"
        if p.get("reported") == 0 and p.get("answered"):
            reason += " (some servers send usage only when not streaming, llama.cpp's among them: stream=false)"
        return reason
    e, d = p["equal"], p["difference"]
    text = (f"reported = toxcmp's render on {e['successes']}/{e['n']} rows ({100 * e['value']:.1f}% "
            f"[{100 * e['low']:.1f}–{100 * e['high']:.1f}])")
    if d["min"] == d["max"] != 0:
        text += f"; reported − toxcmp's = {d['min']:+d} on every row"
    elif d["min"] or d["max"]:
        text += (f"; reported − toxcmp's {d['min']:+d} to {d['max']:+d} (median {d['median']:+g}; rows by difference "
                 + ", ".join(f"{k}: {v}" for k, v in d["counts"].items()) + ")")
    v = p.get("variants")
    if v:
        titles = v.get("titles") or {}
        if v.get("explained_by"):
            text += "; matches: " + ", ".join(f"{titles.get(k, k)} ({n}/{v['differing']} differing rows)"
                                              for k, n in v["explained_by"].items())
        else:
            text += f"; no known render variant matches ({v['searched']} of {v['differing']} differing rows tried)"
        if v.get("explained") and v["explained"] < v["differing"]:
            text += f", {v['differing'] - v['explained']} unexplained"
    return text


# -- conformance (summary["conformance"], toxcmp.analysis.conformance) ----------------------------------------------

CONFORMANCE_HEAD = ("#", "arm", "standing", "agreement with the reference", "noise floor", "equivalence",
                    "reasoning from", "finish reasons", "cut off", "no final answer", "refused parameters",
                    "reasoning effort", "prompt tokens = toxcmp's")


def _share(p: dict[str, Any] | None) -> str:
    if not p or p.get("value") is None:
        return "—"
    ci = f" [{100 * p['low']:.1f}–{100 * p['high']:.1f}]" if p.get("low") is not None else ""
    return f"{100 * p['value']:.1f}%{ci}"


def _mix(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))) or "—"


def _rate(p: dict[str, Any]) -> str:
    return f"{p['successes']}/{p['n']}" + (f" ({_share(p)})" if p.get("successes") else "")


def conformance_cells(line: dict[str, Any]) -> list[str]:
    """One conformance line as the cells of CONFORMANCE_HEAD."""
    effort = line.get("reasoning_effort")
    asked = line.get("reasoning_effort_asked")
    parity = line.get("prompt_tokens_equal")
    return [str(line.get("rank") or "ref"), line["arm"], line["standing"],
            _share(line.get("agreement")) if line["standing"] != "reference" else "—",
            _share(line.get("noise_floor")), line.get("equivalence") or "—",
            _mix(line["reasoning_source"]), _mix(line["finish_reason"]),
            _rate(line["truncated"]), _rate(line["empty_final"]),
            ", ".join(f"{k} ({v} rows)" for k, v in line["rejected_parameters"].items()) or "none",
            "—" if effort is None else f"{asked}: {effort}",
            (f"{parity['successes']}/{parity['n']}" if parity else _short_reason(line.get("prompt_tokens_reason")))]


def _short_reason(reason: str | None) -> str:
    """Why prompt tokens were not compared, in a cell (the whole sentence is on the prompt-tokens line)."""
    return {NO_USAGE: "no usage reported", NO_TOKENIZER: "no tokenizer here", NO_ROWS: "no answers"}.get(
        reason or "", "—")


def conformance_lead(conf: dict[str, Any] | None) -> str | None:
    """The table's first answer in one line: which arms to trust, which not, and why not."""
    ranked = (conf or {}).get("ranked") or []
    if not ranked:
        return None
    parts = []
    for standing in ("faithful", "inconclusive", "suspect", "not faithful"):
        names = [x["arm"] for x in ranked if x["standing"] == standing]
        if names:
            parts.append(f"{standing}: {', '.join(names)}")
    best = ranked[0]
    why = "; ".join(best["findings"]) if best["findings"] else "no finding against it"
    return f"trust first: {best['arm']} ({best['standing']}; {why}) · " + " · ".join(parts)
