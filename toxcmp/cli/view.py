"""`toxcmp view`: (re)build a run's report.html and open it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from toxcmp.cli.common import console, friendly_errors


def register(app: typer.Typer) -> None:
    app.command()(view)


@friendly_errors
def view(
    run_dir: Annotated[Optional[Path], typer.Argument(
        help="A run dir written by compare or rescore \\[default: the newest under --output-dir].",
        show_default=False)] = None,
    output_dir: Annotated[Path, typer.Option("--output-dir", help="Where to look for the newest run.")] = Path(
        "outputs/backend_comparison"),
    no_open: Annotated[bool, typer.Option("--no-open", metavar="", help="Only (re)build report.html and print its path.")] = False,
) -> None:
    """(Re)build a run's report.html and open it in a browser, or print its path when there is no display."""
    from toxcmp.report.html import has_display, rebuild

    if run_dir is None:
        from toxcmp.errors import UsageError
        from toxcmp.results.runs import latest_run

        run_dir = latest_run(output_dir)
        if run_dir is None:
            raise UsageError(f"no runs under {output_dir}", "pass a run dir, or --output-dir where your runs are")
    path = rebuild(run_dir)
    if not no_open and has_display():
        import webbrowser

        if webbrowser.open(path.resolve().as_uri()):
            console.print(f"opened {path}", highlight=False, soft_wrap=True)
            return
    console.print(str(path), highlight=False, soft_wrap=True)
