"""`toxcmp cache info|clear`: the response cache (and converted bundled models)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from toxcmp.cli.common import CacheDirOpt, JsonOpt, console, friendly_errors, print_json
from toxcmp.config import default_cache_dir
from toxcmp.errors import ExitCode

cache_app = typer.Typer(help="Inspect or clear the response cache.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")


@cache_app.command("info")
@friendly_errors
def cache_info(cache_dir: CacheDirOpt = None, as_json: JsonOpt = False) -> None:
    """Entries and bytes per backend and model."""
    from toxcmp.run.cache import ResponseCache

    from toxcmp.config import models_dir, tree_bytes

    directory = cache_dir or default_cache_dir()
    cache = ResponseCache(directory)
    groups = cache.info()
    cache.close()
    root = models_dir(directory)
    converted = [{"model": p.name, "path": str(p), "bytes": tree_bytes(p)}
                 for p in sorted(root.iterdir()) if p.is_dir()] if root.is_dir() else []
    if as_json:
        print_json({"cache_dir": str(directory), "groups": [g.__dict__ for g in groups],
                    "entries": sum(g.entries for g in groups), "bytes": sum(g.bytes for g in groups),
                    "converted_models": converted})
        return
    table = Table(title=f"response cache at {directory}")
    for col in ("backend", "model", "entries", "bytes"):
        table.add_column(col, justify="right" if col in ("entries", "bytes") else "left")
    for g in groups:
        table.add_row(g.backend, g.model, str(g.entries), f"{g.bytes:,}")
    table.add_row("[bold]total", "", str(sum(g.entries for g in groups)), f"{sum(g.bytes for g in groups):,}")
    console.print(table)
    for m in converted:
        console.print(f"converted model {m['model']}: {m['bytes']:,} bytes at {m['path']} (cache clear --models removes it)",
                      highlight=False, soft_wrap=True)


@cache_app.command("clear")
@friendly_errors
def cache_clear(
    backend: Annotated[Optional[str], typer.Option("--backend", help="Only this backend's entries.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Only this model's entries (alias or id).")] = None,
    models: Annotated[bool, typer.Option("--models", metavar="", help="Also free models loaded in this process and delete converted bundled models.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", metavar="", help="Do not ask (a terminal asks before deleting).")] = False,
    cache_dir: CacheDirOpt = None,
) -> None:
    """Delete cached responses (all, or by backend/model)."""
    import sys

    from toxcmp.backends import backend_names
    from toxcmp.run.cache import ResponseCache
    from toxcmp.errors import UnknownNameError

    directory = cache_dir or default_cache_dir()
    model_id = model
    if model:
        from toxcmp.domain.models import model_aliases, resolve_model

        if model in model_aliases():
            model_id = resolve_model(model).model_id
    cache = ResponseCache(directory)
    try:
        groups = cache.info()
        if backend is not None and backend not in {g.backend for g in groups} | set(backend_names()):
            raise UnknownNameError("backend", backend, sorted({g.backend for g in groups} | set(backend_names())))
        doomed = sum(g.entries for g in groups if (backend is None or g.backend == backend)
                     and (model_id is None or g.model == model_id))
        if doomed and not yes and sys.stdin.isatty() and console.is_terminal:
            try:
                agreed = typer.confirm(f"delete {doomed} cached response(s) from {directory}?")
            except typer.Abort:  # Ctrl-C (or Ctrl-D) at the prompt
                console.print(f"\ninterrupted; nothing removed from {directory}", highlight=False, soft_wrap=True)
                raise typer.Exit(ExitCode.INTERRUPTED) from None
            if not agreed:
                # declined: nothing was done, which is no failure (exit 0; 1 means "below threshold")
                console.print(f"nothing removed from {directory}", highlight=False, soft_wrap=True)
                return
        removed = cache.clear(backend=backend, model=model_id)
    finally:
        cache.close()
    console.print(f"removed {removed} cached response(s) from {directory}", highlight=False, soft_wrap=True)
    if models:
        import shutil

        from toxcmp.backends.local_model import LocalModelCache

        freed = LocalModelCache.clear() if "torch" in __import__("sys").modules else 0
        converted = Path(directory) / "models"
        if converted.is_dir():
            shutil.rmtree(converted)
        console.print(f"freed {freed} loaded model(s); removed converted models under {converted}")
