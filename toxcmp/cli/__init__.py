"""The `toxcmp` command: Typer commands that parse options, call the library and render. Nothing else."""

from toxcmp.cli.app import app, main

__all__ = ["app", "main"]
