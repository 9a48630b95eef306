"""`--config FILE`: a run as a TOML file people can share and rerun. Its keys are the command's long options
(`sample_size` or `sample-size`), its values their values (`backends` may be a list of arms); an option given on
the command line wins over the file. Read before any other option (an eager callback that fills click's
`default_map`), so every value goes through the same checks as a typed one."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Optional

import click
import typer

from toxcmp.cli.common import fail
from toxcmp.errors import ExitCode

_NOT_FROM_A_FILE = {"config", "help", "token"}  # a secret never sits in a shared file


def _value(key: str, value: Any, path: Path) -> Any:
    if key == "backends" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return value
    fail(f"{path}: {key} = {value!r} is not a string, number, boolean or list", ExitCode.USAGE)


def load_config_file(ctx: click.Context, param: click.Parameter, value: Optional[Path]) -> Optional[Path]:
    if value is None or ctx.resilient_parsing:
        return value
    try:
        data = tomllib.loads(value.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"cannot read --config {value}: {exc.strerror or exc}", ExitCode.USAGE)
    except tomllib.TOMLDecodeError as exc:
        fail(f"--config {value} is not valid TOML: {exc}", ExitCode.USAGE)
    options = {p.name: p for p in ctx.command.params if p.name and p.name not in _NOT_FROM_A_FILE}
    defaults: dict[str, Any] = {}
    for key, item in data.items():
        name = key.replace("-", "_")
        if name == "token":
            fail(f"--config {value}: token is never read from a file (a shared file would share it)",
                 ExitCode.USAGE)
        if name not in options:
            fail(f"--config {value}: unknown key {key!r} for `{ctx.info_name}` — valid keys: "
                 f"{', '.join(sorted(options))}", ExitCode.USAGE)
        defaults[name] = _value(key, item, value)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


ConfigOpt = Annotated[Optional[Path], typer.Option(
    "--config", is_eager=True, callback=load_config_file, show_default=False,
    help="A TOML file of this command's options (sample_size = 200, backends = [\"api\", \"local\"], …); "
         "options on the command line win.")]
