"""`toxcmp providers MODEL`: the Inference Providers that serve a model, from the Hub's provider mapping."""

from __future__ import annotations

from typing import Annotated

import typer

from toxcmp.cli.common import JsonOpt, console, friendly_errors, print_json


def register(app: typer.Typer) -> None:
    app.command("providers")(providers)


@friendly_errors
def providers(
    model: Annotated[str, typer.Argument(help="Model alias (e.g. gpt-oss-20b) or Hub id (owner/name).")],
    as_json: JsonOpt = False,
) -> None:
    """Inference Providers that serve MODEL (the Hub's provider mapping), and whether each is live.

    Provider, status (live: anyone; staging: the provider's own members), the provider's model id, task.
    `api\\[provider=*]` in --backends runs one arm per live one.

    Exit 0 listed · 2 bad input or no provider serves it · 4 the Hub cannot be reached."""
    from rich.markup import escape
    from rich.table import Table

    from toxcmp.backends.providers import no_provider, provider_routes, serving_model
    from toxcmp.domain.models import resolve_model

    if not model:  # typer 0.16 (the floor) can hand a missing argument over as None
        from toxcmp.errors import UsageError

        raise UsageError("Missing argument 'MODEL'", "e.g. toxcmp providers gpt-oss-20b")
    spec = resolve_model(model)
    model_id = serving_model(spec)
    routes = provider_routes(model_id)
    if not routes:
        raise no_provider(model_id)
    if as_json:
        print_json({"model": spec.name, "model_id": model_id, "providers": [r.to_dict() for r in routes]})
        return
    table = Table(title=f"Inference Providers serving {escape(model_id)}")
    for column in ("provider", "status", "provider model id", "task"):
        table.add_column(column)
    for r in routes:
        style = None if r.status == "live" else "dim"
        table.add_row(escape(r.provider), escape(r.status), escape(r.provider_id), escape(r.task), style=style)
    console.print(table)
    live = sum(r.status == "live" for r in routes)
    console.print(f"{live} of {len(routes)} live; `--backends 'api[provider=*]'` runs one arm per live provider",
                  highlight=False, soft_wrap=True, markup=False)
