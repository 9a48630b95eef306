"""`toxcmp view`: (re)build a run's report.html and open it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toxcmp.cli.common import console, friendly_errors


def register(app: typer.Typer) -> None:
    app.command()(view)


@friendly_errors
def view(
    run_dir: Annotated[Path, typer.Argument(help="A run dir written by compare or rescore.")],
    no_open: Annotated[bool, typer.Option("--no-open", metavar="", help="Only (re)build report.html and print its path.")] = False,
) -> None:
    """(Re)build a run's report.html and open it in a browser, or print its path when there is no display."""
    from toxcmp.report.html import has_display, rebuild

    path = rebuild(run_dir)
    if not no_open and has_display():
        import webbrowser

        if webbrowser.open(path.resolve().as_uri()):
            console.print(f"opened {path}", highlight=False, soft_wrap=True)
            return
    console.print(str(path), highlight=False, soft_wrap=True)
