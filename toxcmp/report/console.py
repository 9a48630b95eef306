"""Results on disk (parquet + summary.json, with provenance) and on screen (rich report and live view)."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import polars as pl
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from toxcmp.errors import ExitCode, ToxcmpError, UsageError
from toxcmp.analysis.scoring import SIDES

RESULTS_FILE = "results.parquet"  # tidy: one row per (example, arm, repeat)
PAIRS_FILE = "pairs.parquet"  # every arm against the reference, two-sided a_*/b_* columns
SUMMARY_FILE = "summary.json"
_SIDE_SCHEMA = {"raw": pl.String, "content": pl.String, "reasoning": pl.String, "binary": pl.Int8, "fine": pl.String,
                "parse_ok": pl.Boolean, "parse_error": pl.String, "parse_failure": pl.String, "refusal": pl.Boolean, "outcome": pl.String,
                "latency_s": pl.Float64, "cached": pl.Boolean, "error": pl.String, "served_by": pl.String,
                "prompt_hash": pl.String, "finish_reason": pl.String, "retries": pl.Int32, "backend": pl.String,
                "batch_size": pl.Int32, "batch_latency_s": pl.Float64}
_EXAMPLE_SCHEMA = {"example_id": pl.String, "text": pl.String, "toxicity": pl.Int8, "jailbreaking": pl.Int8,
                   "human_annotation": pl.Boolean, "weight": pl.Float64}
TIDY_SCHEMA: dict[str, Any] = {
    **_EXAMPLE_SCHEMA, "arm": pl.String, "repeat": pl.Int32,
    **{k: t for k, t in _SIDE_SCHEMA.items() if k != "backend"}, "reasoning_source": pl.String,
}
ROW_SCHEMA: dict[str, Any] = {
    **_EXAMPLE_SCHEMA,
    **{f"{p}_{k}": t for p in SIDES for k, t in _SIDE_SCHEMA.items()},
    "binary_match": pl.Boolean, "fine_match": pl.Boolean, "content_similarity": pl.Float64,
    "reasoning_similarity": pl.Float64, "content_identical": pl.Boolean, "raw_identical": pl.Boolean,
    "cause": pl.String, "margin_nats": pl.Float64, "margin_kind": pl.String,
    "diverge_char": pl.Int64, "a_continuation": pl.String, "b_continuation": pl.String, "diverge_token": pl.Int64,
    "a_next_token": pl.String, "b_next_token": pl.String, "a_next_logprob": pl.Float64, "b_next_logprob": pl.Float64,
    "divergence_kind": pl.String,
}
PAIR_SCHEMA: dict[str, Any] = {**ROW_SCHEMA, "arm": pl.String, "reference": pl.String}


class OutputError(ToxcmpError):
    exit_code = ExitCode.BACKEND


def frame_of(rows: Sequence[dict[str, Any]], schema: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema, orient="row")


def write_outputs(run_dir: Path, tidy: Sequence[dict[str, Any]], pairs: Sequence[dict[str, Any]],
                  summary: dict[str, Any]) -> None:
    """Atomic writes (temp file + rename): a crash never leaves a half-written parquet behind."""
    from toxcmp.report.html import REPORT_FILE, build_html

    meta = summary.get("metadata", {})
    parquet_meta = {"toxcmp": json.dumps(meta, default=str), "toxcmp_summary": json.dumps(summary, default=str)}
    results, pair_frame = frame_of(tidy, TIDY_SCHEMA), frame_of(pairs, PAIR_SCHEMA)
    targets = ((RESULTS_FILE, lambda p: results.write_parquet(p, metadata=parquet_meta)),
               (PAIRS_FILE, lambda p: pair_frame.write_parquet(p, metadata=parquet_meta)),
               (SUMMARY_FILE, lambda p: p.write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n",
                                                     encoding="utf-8")),
               (REPORT_FILE, lambda p: p.write_text(build_html(pairs, summary), encoding="utf-8")))
    for name, write in targets:
        final = run_dir / name
        tmp = run_dir / f".{name}.tmp-{os.getpid()}"
        try:
            write(tmp)
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise OutputError(f"cannot write {final} ({exc.strerror or exc})",
                              "free space or fix permissions, then rerun the same command: every response is in the "
                              "cache, so nothing is recomputed") from None


# -- reading results back ------------------------------------------------------------------------------------------

STUDY_PAIR_COLUMNS = {"api_response", "local_response", "ground_truth"}
STUDY_SINGLE_COLUMNS = {"raw_model_response", "model_reasoning", "toxicity"}


def read_results(paths: Sequence[Path]) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """Tidy rows (one per example, arm and repeat) + metadata + layout ("toxcmp", "toxcmp-two-sided",
    "study-pair" or "study-singles") from a run dir or parquet file(s). Older two-sided run dirs still read."""
    if not paths:
        raise UsageError("nothing to rescore", "pass a run dir, a results.parquet, or two study parquets")
    files = [p / RESULTS_FILE if p.is_dir() else p for p in paths]
    for f in files:
        if not f.is_file():
            raise UsageError(f"no results at {f}", "pass a run dir (with results.parquet) or a parquet file")
    frames = []
    for f in files:
        try:
            frames.append(pl.read_parquet(f))
        except Exception as exc:  # noqa: BLE001 - any unreadable parquet gets the same message
            raise UsageError(f"cannot read {f} as parquet: {str(exc).splitlines()[0][:160]}", "check the file") from None
    columns = set(frames[0].columns)
    if len(files) == 1 and {"arm", "content"} <= columns:
        return frames[0].to_dicts(), json.loads(pl.read_parquet_metadata(files[0]).get("toxcmp", "{}")), "toxcmp"
    if len(files) == 1 and "a_content" in columns:
        meta = json.loads(pl.read_parquet_metadata(files[0]).get("toxcmp", "{}"))
        labels = [b.get("label") for b in meta.get("backends", [])] or ["a", "b"]
        return tidy_from_pairs(frames[0].to_dicts(), labels), meta, "toxcmp-two-sided"
    if len(files) == 1 and STUDY_PAIR_COLUMNS <= columns:
        return tidy_from_pairs(_study_pair(frames[0]), ["api", "local"]), _study_meta(files, ["api", "local"]), "study-pair"
    if len(files) == 2 and all(STUDY_SINGLE_COLUMNS <= set(f.columns) for f in frames):
        labels = [_model_name(f, fr) for f, fr in zip(files, frames)]
        if labels[0] == labels[1]:  # one model from two providers: the files tell the arms apart
            labels = [f.stem for f in files] if files[0].stem != files[1].stem else [f"{f.stem}-{i}" for i, f in enumerate(files)]
        frames = [fr.with_columns(pl.lit(label).alias("model_name")) for fr, label in zip(frames, labels)]
        return tidy_from_pairs(_study_singles(frames), labels), _study_meta(files, labels), "study-singles"
    raise UsageError(f"unrecognised results layout in {', '.join(map(str, files))}",
                     "pass a toxcmp run dir, a study backend_comparison parquet, or two study api_* parquets")


def tidy_from_pairs(rows: Sequence[dict[str, Any]], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Two-sided rows → tidy rows (the reference side once per example)."""
    out, seen = [], set()
    for row in rows:
        for p, label in zip(SIDES, labels):
            arm = row.get(f"{p}_backend") or label
            key = (row["example_id"], arm)
            if key in seen:
                continue
            seen.add(key)
            tidy = {k: row.get(k) for k in _EXAMPLE_SCHEMA} | {"arm": arm, "repeat": 0}
            tidy |= {k: row.get(f"{p}_{k}") for k in _SIDE_SCHEMA if k != "backend"}
            out.append(tidy)
    return out


def _blank_side(p: str) -> dict[str, Any]:
    return {f"{p}_{k}": None for k in ("raw", "served_by", "prompt_hash", "finish_reason", "error")} | {
        f"{p}_latency_s": 0.0, f"{p}_cached": True, f"{p}_retries": 0}


def _study_pair(frame: pl.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for r in frame.iter_rows(named=True):
        row = {"example_id": r.get("conv_id") or r["text"][:32], "text": r["text"], "toxicity": int(r["ground_truth"]),
               "jailbreaking": None, "weight": 1.0}
        for p, src in zip(SIDES, ("api", "local")):
            row |= _blank_side(p)
            row |= {f"{p}_content": r[f"{src}_response"] or "", f"{p}_reasoning": r.get(f"{src}_reasoning") or "",
                    f"{p}_served_by": src, f"{p}_backend": src}
        rows.append(row)
    return rows


def _study_singles(frames: Sequence[pl.DataFrame]) -> list[dict[str, Any]]:
    keyed = [{r["conv_id"]: r for r in f.iter_rows(named=True)} for f in frames]
    rows = []
    for conv_id, r in keyed[0].items():
        other = keyed[1].get(conv_id)
        if other is None:
            continue
        row = {"example_id": conv_id, "text": r["user_input"], "toxicity": int(r["toxicity"]),
               "jailbreaking": r.get("jailbreaking"), "weight": float(r.get("sample_weight") or 1.0)}
        for p, src in zip(SIDES, (r, other)):
            row |= _blank_side(p)
            row |= {f"{p}_content": src["raw_model_response"] or "", f"{p}_reasoning": src.get("model_reasoning") or "",
                    f"{p}_served_by": src.get("model_used"), f"{p}_backend": src.get("model_name")}
        rows.append(row)
    return rows


def _model_name(path: Path, frame: pl.DataFrame) -> str:
    if "model_name" in frame.columns and frame.height:
        return str(frame["model_name"][0])
    return path.stem


def _study_meta(files: Sequence[Path], labels: list[str]) -> dict[str, Any]:
    match = re.search(r"(toxic_chat_claude_1|toxic_simple)", files[0].name)
    model = re.search(r"(gpt-oss(?:-safeguard)?-\d+b)", files[0].name)
    return {"model": {"name": model.group(1) if model else None, "harmony": True},
            "backends": [{"label": label, "name": label} for label in labels],
            "policy": {"name": match.group(1) if match else None},
            "source": [str(f) for f in files], "recorded_study": True}


# -- console report -------------------------------------------------------------------------------------------------

def _pct(p: dict[str, Any] | None) -> str:
    if not p or p.get("value") is None:
        return "—"
    if p.get("low") is None:
        return f"{p['value']:.1%}"
    return f"{p['value']:.1%} [{100 * p['low']:.1f}–{100 * p['high']:.1f}]"


def agreement_table(summary: dict[str, Any]) -> Table:
    t = Table(title="agreement between backends", title_justify="left")
    t.add_column("statistic")
    t.add_column("value (95 % CI)")
    t.add_column("n", justify="right")
    k = summary["cohen_kappa"]
    kappa = (f"— ({k['reason']})" if k.get("reason") else "—") if k["value"] is None else (
        f"{k['value']:.3f}" + (f" [{k['low']:.3f}, {k['high']:.3f}]" if k["low"] is not None else "")
        + (f" ({k['undefined_resamples']} undefined resamples left out)" if k.get("undefined_resamples") else ""))
    m = summary["mcnemar"]
    for name, key in (("final content byte-identical", "content_identical"), ("raw output byte-identical", "raw_identical")):
        if key in summary:
            t.add_row(name, _pct(summary[key]), str(summary[key]["n"]))
    t.add_row("binary agreement", _pct(summary["binary_agreement"]), str(summary["binary_agreement"]["n"]))
    t.add_row("fine-grained agreement", _pct(summary["fine_grain_agreement"]), str(summary["fine_grain_agreement"]["n"]))
    t.add_row("binary agreement, both parsed", _pct(summary["binary_agreement_both_parsed"]), str(summary["n_both_parsed"]))
    t.add_row("Cohen's κ (bootstrap CI)", kappa, str(k["n"]))
    t.add_row("McNemar exact (correctness)", f"p = {m['p_value']:.3g}  (only A right {m['only_a_correct']}, only B right {m['only_b_correct']})",
              str(summary["n_scored"]))
    for name, key in (("final-content similarity", "content_similarity_mean"), ("reasoning similarity", "reasoning_similarity_mean")):
        value = summary.get(key)
        t.add_row(name, "—" if value is None else f"{value:.3f}", "")
    return t


def backend_table(summary: dict[str, Any]) -> Table:
    """Metrics as rows, backends as columns: stays readable in an 80-column terminal."""
    t = Table(title="each backend against the human labels (95 % CI)", title_justify="left")
    t.add_column("metric")
    backends = summary["backends"]
    for p, b in backends.items():
        t.add_column(f"{p.upper()}: {escape(b['label'])}")
    rows = [("parse rate", lambda b: _pct(b["parse_rate"])), ("refusal rate", lambda b: _pct(b["refusal_rate"])),
            ("accuracy", lambda b: _pct(b["accuracy"])), ("precision", lambda b: _pct(b["precision"])),
            ("recall", lambda b: _pct(b["recall"])), ("F1", lambda b: "—" if b["f1"] is None else f"{b['f1']:.3f}"),
            ("TP / FP / FN / TN", lambda b: " / ".join(_fmt_count(b["confusion"][k]) for k in ("tp", "fp", "fn", "tn"))),
            ("no label", lambda b: str(b["confusion"]["no_label"])),
            ("why no label", lambda b: escape(", ".join(f"{k} {v}" for k, v in b.get("parse_failures", {}).items())) or "—"),
            ("errors", lambda b: str(b["errors"])),
            ("cached", lambda b: f"{b['cached']}/{summary['n']}"),
            ("served by", lambda b: escape(", ".join(b["served_by"])) or "—")]
    for name, cell in rows:
        t.add_row(name, *(cell(b) for b in backends.values()))
    return t


def _fmt_count(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def causes_table(summary: dict[str, Any]) -> Table:
    t = Table(title="why they disagree", title_justify="left")
    for col in ("cause", "count", "top examples (id · truth · A · B)"):
        t.add_column(col)
    for name, count in summary["causes"].items():
        examples = summary["cause_examples"].get(name, [])
        lines = [f"{escape(e['example_id'][:12])} · {e['truth']} · {escape(e['a'])} · {escape(e['b'])}"
                 + (f" · {e['margin']}" if e.get("margin") else "")
                 + f"\n  [dim]{escape(e['text'])!s}" + (f" · {escape(e['reasoning'])}" if e.get("reasoning") else "") + "[/]"
                 for e in examples]
        t.add_row(name, str(count), "\n".join(lines) or "—")
    return t


_VERDICT_STYLE = {"pass": "green", "fail": "red", "inconclusive": "yellow", "incomplete": "yellow"}


def verdict_line(summary: dict[str, Any]) -> str:
    """The verdict and why, in one line of rich markup."""
    verdict = summary.get("verdict") or ("pass" if summary.get("passed") else "fail")
    reason = summary.get("verdict_reason") or ""
    return f"[bold {_VERDICT_STYLE.get(verdict, 'white')}]{verdict.upper()}[/]: {escape(reason)}"


def equivalence_numbers(eq: dict[str, Any]) -> str:
    """Δ = the arm's disagreement minus the reference's own (its floor), with the TOST's 90 % interval."""
    if eq.get("difference") is None:
        return "no rows"
    lo, hi = eq.get("ci90") or (None, None)
    ci = "" if lo is None else f", 90% CI [{lo:+.3f}, {hi:+.3f}]"
    floor = "" if eq.get("floor_measured") else "; floor not measured (--repeats 2)"
    return f"Δ {eq['difference']:+.3f}{ci}{floor}"


def arms_table(summary: dict[str, Any]) -> Table | None:
    """Each arm against the reference, with its noise floor and equivalence verdict (shown with ≥ 3 arms or repeats)."""
    comparisons = summary.get("comparisons") or {}
    if len(comparisons) < 2 and (summary.get("repeats") or 1) < 2:
        return None
    t = Table(title=f"arms against the reference {escape(str(summary.get('reference')))} "
                    f"(equivalence margin {summary.get('margin')}, Holm-corrected)", title_justify="left")
    for col in ("arm", "verdict", "agreement", "κ", "McNemar p", "noise floor", "equivalence"):
        t.add_column(col)
    floors = summary.get("noise_floor") or {}
    t.add_row(escape(str(summary.get("reference"))), "reference", "—", "—", "—", _pct(floors.get(summary.get("reference"))), "—")
    for label, c in comparisons.items():
        k = c.get("cohen_kappa") or {}
        eq = c.get("equivalence") or {}
        p_holm = (c.get("mcnemar") or {}).get("p_holm")
        t.add_row(escape(label), c["verdict"], _pct(c["binary_agreement"]), "—" if k.get("value") is None else f"{k['value']:.3f}",
                  "—" if p_holm is None else f"{p_holm:.3g}", _pct(floors.get(label)),
                  f"{eq.get('verdict')} ({equivalence_numbers(eq)})")
    fk = summary.get("fleiss_kappa") or {}
    t.caption = (f"Fleiss' κ over {fk.get('arms')} arms: "
                 + ("—" if fk.get("value") is None else f"{fk['value']:.3f}") + f" (n = {fk.get('n')})")
    return t


def divergence_line(d: dict[str, Any] | None) -> str | None:
    """Where the two sides' raw texts part, and how the local model scores the partings (plain text)."""
    from toxcmp.analysis.divergence import DIVERGENCE_SCORE_LIMIT

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


def render_report(summary: dict[str, Any], console: Console) -> None:
    meta = summary.get("metadata", {})
    labels = " vs ".join(b["label"] for b in summary["backends"].values())
    console.print(verdict_line(summary), soft_wrap=True)
    console.print(f"[bold]{escape(labels)}[/] · policy {escape(str(meta.get('policy', {}).get('name')))} · "
                  f"model {escape(str(meta.get('model', {}).get('model_id') or meta.get('model', {}).get('name') or '?'))} · "
                  f"n = {summary['n']} · labels without a verdict count as {summary.get('unparsed_as', 'none')}")
    console.print(agreement_table(summary))
    console.print(backend_table(summary))
    console.print(causes_table(summary))
    arms = arms_table(summary)
    if arms is not None:
        console.print(arms)
    line = divergence_line(summary.get("divergence"))
    if line:
        console.print(line, soft_wrap=True)
    mk = summary.get("margins", {})
    if mk.get("scored"):
        console.print(f"local-model margin on label disagreements: {mk['near_tie']} near-tie, "
                      f"{mk['true_disagreement']} true disagreement (near-tie: |Δ log p| < 1 nat)")
    console.print(verdict_line(summary) + (f" · {escape(str(meta.get('reason')))}" if meta.get("reason") else ""),
                  soft_wrap=True)


# -- live view ------------------------------------------------------------------------------------------------------

def recent_table(rows: Sequence[dict[str, Any]], labels: Sequence[str]) -> Table:
    t = Table(expand=False, title="latest examples", title_justify="left")
    for col in ("id", "truth", f"A {labels[0]}", f"B {labels[1]}", "agree", "cached", "latency A/B"):
        t.add_column(escape(col))
    for r in rows:
        agree = "—" if r["binary_match"] is None else ("[green]✓[/]" if r["binary_match"] else "[red]✗[/]")
        cached = "/".join("y" if r[f"{p}_cached"] else "n" for p in SIDES)
        t.add_row(escape(r["example_id"][:10]), str(r["toxicity"]), escape(r["a_outcome"]), escape(r["b_outcome"]), agree,
                  cached, f"{r['a_latency_s']:.2f}/{r['b_latency_s']:.2f}s")
    return t


def throughput_text(stats: dict[str, Any]) -> str:
    parts = []
    for label, s in stats.items():
        eps = f"{s['calls'] / s['seconds']:.2f} ex/s" if s["seconds"] else "cached"
        parts.append(f"{label}: {eps}")
    return " · ".join(parts)


class RunningAgreement:
    def __init__(self) -> None:
        self.agree = 0
        self.scored = 0

    def add(self, row: dict[str, Any]) -> None:
        if row["binary_match"] is not None:
            self.scored += 1
            self.agree += bool(row["binary_match"])

    def __str__(self) -> str:
        return f"agreement {self.agree}/{self.scored} ({self.agree / self.scored:.1%})" if self.scored else "agreement —"


def eta_text(done: int, total: int, elapsed_since_first_row: float | None, rows_since_first: int) -> str:
    """Remaining time from the measured per-row rate; '—' until two rows have finished (startup is not a rate)."""
    if done >= total:
        return "ETA 0:00:00"
    if elapsed_since_first_row is None or rows_since_first < 1 or elapsed_since_first_row <= 0:
        return "ETA —"
    seconds = (total - done) * elapsed_since_first_row / rows_since_first
    return "ETA " + time.strftime("%H:%M:%S", time.gmtime(seconds)) if seconds < 86400 else "ETA > 1 day"


def silence_third_party_progress() -> None:
    """transformers' and the Hub's own progress bars would print above the live view: turn them off."""
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:
        pass
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


class LiveObserver:
    """Terminal view: progress bar with a per-row ETA, what is happening now (loading, starting a server…),
    per-backend throughput, the latest rows and the running agreement. Updated per finished row."""

    def __init__(self, console: Console, recent: int = 8):
        self.console = console
        self.recent_n = recent
        self.recent: list[dict[str, Any]] = []
        self.agreement = RunningAgreement()
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[eta]}"),
                                 TextColumn("{task.fields[rate]}"), console=console)
        self.live: Live | None = None
        self.labels: Sequence[str] = ("A", "B")
        self.now = "starting"
        self.total = 0
        self.first_row_at: float | None = None
        self.rows_after_first = 0

    def _view(self) -> Group:
        return Group(self.progress, Text(f"now: {self.now}", style="dim"), recent_table(self.recent, self.labels),
                     Text(str(self.agreement)))

    def start(self, total, labels, meta):  # noqa: D102
        silence_third_party_progress()
        self.labels, self.total = labels, total
        self.task = self.progress.add_task("compare", total=total, rate="", eta="ETA —")
        self.live = Live(self._view(), console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def row(self, row, done, stats):  # noqa: D102
        now = time.perf_counter()
        if self.first_row_at is None:
            self.first_row_at = now
        else:
            self.rows_after_first += 1
        self.agreement.add(row)
        self.recent = (self.recent + [row])[-self.recent_n:]
        eta = eta_text(done, self.total, now - self.first_row_at if self.rows_after_first else None,
                       self.rows_after_first)
        self.progress.update(self.task, completed=done, rate=throughput_text(stats), eta=eta)
        self._refresh()

    def phase(self, message, detail=False):  # noqa: D102
        self.now = message
        self._refresh()

    def _refresh(self) -> None:
        if self.live:
            self.live.update(self._view())

    def log(self, message):  # noqa: D102
        self.console.log(escape(message))

    def stop(self):  # noqa: D102
        if self.live:
            self.now = "done"
            self._refresh()
            self.live.stop()
            self.live = None


class LineObserver:
    """Logs and CI: one plain line per ~10 % of progress, no redraws."""

    def __init__(self, console: Console, quiet: bool = False):
        self.console = console
        self.quiet = quiet
        self.agreement = RunningAgreement()
        self.total = 0
        self.every = 1
        self.t0 = time.perf_counter()

    def start(self, total, labels, meta):  # noqa: D102
        self.total = total
        self.every = max(1, total // 10)
        if not self.quiet:
            self.console.print(f"compare: {total} examples · {' vs '.join(labels)} · run {meta['run_id']}", highlight=False,
                               soft_wrap=True)

    def row(self, row, done, stats):  # noqa: D102
        self.agreement.add(row)
        if not self.quiet and (done % self.every == 0 or done == self.total):
            self.console.print(f"[{done}/{self.total}] {self.agreement} · {throughput_text(stats)} · "
                               f"{time.perf_counter() - self.t0:.0f}s", highlight=False, markup=False, soft_wrap=True)

    def log(self, message):  # noqa: D102
        if not self.quiet:
            self.console.print(message, highlight=False, markup=False, soft_wrap=True)

    def phase(self, message, detail=False):  # noqa: D102
        if not self.quiet and not detail:
            self.console.print(message, highlight=False, markup=False, soft_wrap=True)

    def stop(self):  # noqa: D102
        pass
