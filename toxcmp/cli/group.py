"""The root command group: click's usage errors as one line, and one metavar style in every command's help.

Typer shows a bad option value or an unknown option as a six-line box; toxcmp's own errors are one line
(`error: … — what to do next`), so the same goes for click's. Help shows option values as `<type>`, flags and
--help with none, and arguments in capitals (`[TEXT]`, `{RUN_DIR}`, `{PATHS}...`). Off a terminal, the Hub's and transformers' progress bars are off."""

from __future__ import annotations

import os
import sys
from typing import Any

from typer import Abort
from typer.core import TyperGroup

try:  # typer ≥ 0.2x vendors click as typer._click; older ones use click itself
    from typer._click import Context
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - exercised by the floors venv (typer 0.16)
    from click import Context
    from click.exceptions import ClickException

from toxcmp.errors import ExitCode


def usage_line(exc: ClickException) -> str:
    """`exc` as toxcmp's one line: the message, then where the command's help is."""
    message = " ".join(exc.format_message().split()).rstrip(".")
    ctx = getattr(exc, "ctx", None)
    where = f" — see '{ctx.command_path} --help'" if ctx is not None else " — see 'toxcmp --help'"
    return f"{message}{where}"


def tidy_metavars(command: Any, parent: Context | None = None) -> None:
    """Flags and --help take no value: show none. Arguments: their name in capitals."""
    ctx = Context(command, info_name=command.name, parent=parent)
    help_option = command.get_help_option(ctx)
    if help_option is not None:
        help_option.metavar = ""
    for param in command.params:
        if param.param_type_name == "argument" and param.metavar is None and param.name:
            param.metavar = param.name.upper()
        elif getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        shown = param.display_type_rich(ctx) if hasattr(param, "display_type_rich") else None
        if shown and shown.startswith("<list["):  # `<list[Path]>` → `<path>`; the name already says "..."
            element = "<" + shown[len("<list["):].rstrip("]>").lower() + ">"
            param.display_type_rich = lambda ctx, element=element: element
    for sub in getattr(command, "commands", {}).values():
        tidy_metavars(sub, ctx)


class ToxcmpGroup(TyperGroup):
    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        tidy_metavars(self)
        if not sys.stderr.isatty():  # a log, not a person: no progress bars of the Hub, transformers ("Loading
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # weights") or any tqdm (the GGUF
            os.environ.setdefault("TQDM_DISABLE", "1")  # conversion's), each read at import or at the bar's start
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        from toxcmp.cli.common import err_console, print_error

        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except ClickException as exc:
            print_error(usage_line(exc))
            sys.exit(exc.exit_code)
        except Abort:
            err_console.print("aborted")
            sys.exit(ExitCode.FAIL)
        # Not standalone, click returns what the command returned, or the code of a typer.Exit it raised.
        sys.exit(code if isinstance(code, int) and not isinstance(code, bool) else 0)
