"""`toxcmp policies list|show|new` and `toxcmp backends list`: what there is to choose from (or to start from)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.panel import Panel
from rich.table import Table

from toxcmp.cli.common import JsonOpt, clip, console, friendly_errors, print_json

policies_app = typer.Typer(help="List, show or start policies.", no_args_is_help=True)
backends_app = typer.Typer(help="List inference backends.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(policies_app, name="policies")
    app.add_typer(backends_app, name="backends")


@policies_app.command("list")
@friendly_errors
def policies_list(as_json: JsonOpt = False) -> None:
    """Built-in policies."""
    from toxcmp.domain.policies import builtin_names, load_policy

    policies = [load_policy(n) for n in builtin_names()]
    if as_json:
        print_json([{"name": p.name, "labels": p.fine_grained_labels, "output": p.output, "sha256": p.sha256}
                    for p in policies])
        return
    table = Table(title="policies")
    for col in ("name", "answer", "fine-grained labels", "description"):
        table.add_column(col)
    for p in policies:
        table.add_row(p.name, p.output, ", ".join(p.fine_grained_labels), p.description)
    console.print(table)


@policies_app.command("show")
@friendly_errors
def policies_show(name: Annotated[str, typer.Argument(help="Policy name or file.")]) -> None:
    """Print a policy's text and label sets."""
    from toxcmp.domain.policies import load_policy

    p = load_policy(name)
    labels = ", ".join(f"{n}→{v}" for n, v in p.categories)
    console.print(Panel(clip(p.text, 100_000), title=f"{p.name} ({p.output}; {labels}; sha256 {p.sha256[:12]})"))


@policies_app.command("new")
@friendly_errors
def policies_new(name: Annotated[str, typer.Argument(help="Policy name: writes ./NAME.md (or a .md path).")]) -> None:
    """Write a commented template policy file to edit; never overwrites one."""
    from toxcmp.domain.policies import write_policy_template

    path = write_policy_template(name)
    shown = path if path.parent != Path(".") else f"./{path}"
    console.print(f"wrote {shown}: a working policy to edit into yours; use it with --policy {shown}",
                  highlight=False, soft_wrap=True)


@backends_app.command("list")
@friendly_errors
def backends_list(as_json: JsonOpt = False) -> None:
    """Registered backends (built-in and entry-point plugins) and the options each declares."""
    from toxcmp.backends import describe_options, registry
    from toxcmp.errors import ToxcmpError

    reg = registry()
    listed: dict[str, dict] = {}
    for name, target in sorted(reg.items()):
        try:
            listed[name] = {"factory": target, "options": describe_options(name)}
        except ToxcmpError as exc:  # e.g. local without torch: still listed, with why it cannot load
            listed[name] = {"factory": target, "options": None, "error": exc.one_line()}
    if as_json:
        print_json(listed)
        return
    table = Table(title="backends (options marked * change answers: they are the cache key and the run id)")
    table.add_column("name")
    table.add_column("factory")
    table.add_column("options")
    for name, entry in listed.items():
        options = entry["options"]
        text = entry.get("error") if options is None else ", ".join(
            f"{key}{'*' if o['changes_answer'] else ''}={o['default']}" for key, o in options.items())
        table.add_row(name, entry["factory"], text)
    console.print(table)
