"""`toxcmp runs`: the run dirs under --output-dir, newest first, with verdict, rows, arms and when."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from toxcmp.cli.common import JsonOpt, console, friendly_errors, print_json

RunsDirOpt = Annotated[Path, typer.Option("--output-dir", help="Where the run dirs are.")]


def register(app: typer.Typer) -> None:
    app.command("runs")(runs)


@friendly_errors
def runs(output_dir: RunsDirOpt = Path("outputs/backend_comparison"), as_json: JsonOpt = False) -> None:
    """List the runs under --output-dir, newest first: verdict, rows (of those planned), arms, when."""
    from toxcmp.results.runs import list_runs

    found = list_runs(output_dir)
    if as_json:
        print_json([r.to_dict() for r in found])
        return
    if not found:
        console.print(f"no runs under {escape(str(output_dir))} (toxcmp compare writes them there)")
        return
    table = Table(title=f"runs under {escape(str(output_dir))}, newest first", title_justify="left")
    for col in ("run", "verdict", "rows", "arms", "model · policy", "finished (UTC)"):
        table.add_column(col, overflow="fold")
    for r in found:
        rows = "—" if r.n is None else (f"{r.n} of {r.planned}" if r.planned and r.planned != r.n else str(r.n))
        verdict = r.problem or (r.verdict or "—") + (f" ({r.status})" if r.status not in (None, "complete") else "")
        table.add_row(escape(r.run_dir.name), escape(verdict), rows, escape(", ".join(r.arms)) or "—",
                      escape(f"{r.model or '?'} · {r.policy or '?'}"), escape((r.finished_at or "—")[:19]))
    console.print(table)
