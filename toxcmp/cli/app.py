"""The `toxcmp` Typer app: root callback, --version, `main`, and the command modules registered on it.

Where each command lives (toxcmp/cli/):
    classify, render                    classify.py
    view                                view.py
    runs                                runs.py
    verify-setup                        setup.py
    compare, rescore, plan              compare.py
    providers                           providers.py
    cache info|clear                    cache.py
    policies list|show, backends list   catalog.py
    bench api|local|serve|engines|html|busy|sides|report   bench.py (each runs toxcmp/bench/<name>.py)
Shared options, error mapping and the consoles are in common.py. Heavy imports stay inside the commands."""

from __future__ import annotations

from typing import Annotated

import typer

from toxcmp import __version__
from toxcmp.cli import bench, cache, catalog, classify, compare, providers, runs, setup, view
from toxcmp.cli.common import console
from toxcmp.cli.group import ToxcmpGroup

app = typer.Typer(name="toxcmp", cls=ToxcmpGroup, help="Compare LLM toxicity classifiers across inference backends.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

# Registration order is the order `toxcmp --help` lists them: commands first, then the groups.
for module in (classify, view, runs, setup, compare, providers, cache, catalog, bench):
    module.register(app)


def _version(value: bool) -> None:
    if value:
        console.print(f"toxcmp {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: Annotated[bool, typer.Option("--version", metavar="", callback=_version, is_eager=True,
                                               help="Print toxcmp's version and exit.")] = False) -> None:
    """toxcmp: run a policy classifier on one backend or several; agreement, causes of disagreement, accuracy."""


def main() -> None:
    import sys

    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C outside a command's own handling (e.g. during imports)
        from toxcmp.cli.common import err_console

        err_console.print("interrupted")
        sys.exit(130)
