"""`toxcmp verify-setup`: dependencies, backends, policies, models, cache and token, without loading weights."""

from __future__ import annotations

import typer
from rich.table import Table

from toxcmp.cli.common import CacheDirOpt, JsonOpt, console, friendly_errors, print_json
from toxcmp.config import default_cache_dir
from toxcmp.errors import ExitCode


def register(app: typer.Typer) -> None:
    app.command("verify-setup")(verify_setup)


def checks_table(checks) -> Table:
    """The checks as a table; their texts are printed as written (`pip install 'toxcmp[local]'` keeps its
    brackets: they are not rich markup)."""
    from rich.markup import escape

    table = Table(title="toxcmp verify-setup")
    for col in ("", "check", "detail", "fix"):
        table.add_column(col)
    for c in checks:
        mark = "[green]✓[/]" if c.ok else ("[red]✗[/]" if c.required else "[yellow]✗[/]")
        table.add_row(mark, escape(c.name), escape(c.detail), "" if c.ok else escape(c.hint))
    return table


@friendly_errors
def verify_setup(cache_dir: CacheDirOpt = None, as_json: JsonOpt = False) -> None:
    """Check dependencies, backends, policies, models, cache and token without loading model weights."""
    from toxcmp.bench.setup_check import run_checks

    checks = run_checks(cache_dir or default_cache_dir())
    failed = [c for c in checks if c.required and not c.ok]
    if as_json:
        print_json({"ok": not failed, "checks": [c.__dict__ for c in checks]})
    else:
        console.print(checks_table(checks))
        console.print("[green]all required checks passed[/]" if not failed else f"[red]{len(failed)} required check(s) failed[/]")
    if failed:
        raise typer.Exit(ExitCode.FAIL)
