"""Shared CLI plumbing: option aliases, error mapping, console."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console

from toxcmp.errors import ExitCode, ToxcmpError

console = Console()
err_console = Console(stderr=True)

# Help panels, in the order a reader needs them.
MODEL_PANEL, DATA_PANEL, ARMS_PANEL, API_PANEL, LOCAL_PANEL, OUTPUT_PANEL = (
    "Model and policy", "Data", "Backends and verdict", "API backend", "Local backend", "Output and cache")

PolicyOpt = Annotated[str, typer.Option("--policy", "-p", help="Built-in policy name or path to a policy .md file.",
                                        rich_help_panel=MODEL_PANEL)]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model alias, Hub id (owner/name) or local model dir.",
                                       rich_help_panel=MODEL_PANEL)]
RevisionOpt = Annotated[Optional[str], typer.Option("--revision", help="Model revision (branch, tag or commit).",
                                                    rich_help_panel=MODEL_PANEL)]
CacheDirOpt = Annotated[Optional[Path], typer.Option("--cache-dir", envvar="TOXCMP_CACHE_DIR", rich_help_panel=OUTPUT_PANEL,
                                                    help="Response/model cache dir \\[default: ~/.cache/toxcmp].")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the response cache.", metavar="",
                                          rich_help_panel=OUTPUT_PANEL)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a rich view.", metavar="",
                                       rich_help_panel=OUTPUT_PANEL)]
# Values are checked by the library (one line, exit 2), not by click's `min=` (a boxed usage error).
MaxNewTokensOpt = Annotated[Optional[int], typer.Option("--max-new-tokens", rich_help_panel=MODEL_PANEL,
                                                        help="Generation budget \\[default: 64, from configs/defaults.toml].")]
TemperatureOpt = Annotated[Optional[float], typer.Option("--temperature", rich_help_panel=MODEL_PANEL, help=(
    "Sampling temperature; 0 is greedy \\[default: 0, from configs/defaults.toml]. Part of the cache key and the run id."))]
TopPOpt = Annotated[Optional[float], typer.Option("--top-p", rich_help_panel=MODEL_PANEL, help=(
    "Nucleus sampling (with --temperature above 0) \\[default: 1]. Part of the cache key and the run id."))]
TextColumnOpt = Annotated[Optional[str], typer.Option("--text-column", rich_help_panel=DATA_PANEL, help=(
    "The dataset's text column \\[default: user_input, else text]."))]
LabelColumnOpt = Annotated[Optional[str], typer.Option("--label-column", rich_help_panel=DATA_PANEL, help=(
    "The dataset's 0/1 label column \\[default: toxicity, else ground_truth]; 'none': rows without labels "
    "(an empty cell is a row without a label either way)."))]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", rich_help_panel=DATA_PANEL, help=(
    "The first N rows, in the dataset's order (no sampling; not with --sample-size). Part of the run id."))]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", metavar="", rich_help_panel=OUTPUT_PANEL,
                                        help="No progress output or notes; the report only.")]
ReasoningOpt = Annotated[Optional[str], typer.Option("--reasoning-effort", rich_help_panel=MODEL_PANEL,
                                                     help="gpt-oss: low, medium or high \\[default: low, from configs/defaults.toml].")]
RenderDateOpt = Annotated[Optional[str], typer.Option(
    "--render-date", metavar="YYYY-MM-DD", rich_help_panel=MODEL_PANEL, help=(
        "The day the chat template's clock reads (gpt-oss writes 'Current date: …' into its system message); "
        "part of the prompt hash and the cache key. An API server renders its own date. \\[default: the day the "
        "command starts, in UTC; compare: a rerun of a run dir keeps the date that run recorded]"))]
DeviceOpt = Annotated[str, typer.Option("--device", help="local: auto, cpu, cuda, cuda:N, mps.", rich_help_panel=LOCAL_PANEL)]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="local: auto, float32, bfloat16, float16.", rich_help_panel=LOCAL_PANEL)]
BaseUrlOpt = Annotated[Optional[str], typer.Option("--base-url", help="api: any OpenAI-compatible server URL.",
                                                   rich_help_panel=API_PANEL)]
ServedModelOpt = Annotated[Optional[str], typer.Option(
    "--served-model", rich_help_panel=API_PANEL,
    help="api: the name the server knows the model by (what its /v1/models lists, e.g. a GGUF path).")]
ProviderOpt = Annotated[str, typer.Option("--provider", help="api: Inference Provider name or auto.", rich_help_panel=API_PANEL)]
TokenOpt = Annotated[Optional[str], typer.Option("--token", help="api: HF token \\[default: $HF_TOKEN]; never printed.",
                                                 show_default=False, rich_help_panel=API_PANEL)]
ApiServerOpt = Annotated[str, typer.Option("--api-server", rich_help_panel=API_PANEL,
                                           help="api: 'local' starts transformers serve on 127.0.0.1 for the same model; "
                                                "'llamacpp' starts llama.cpp's server on its GGUF (a different engine: "
                                                "pip install 'toxcmp\\[llamacpp]'); 'none' uses --base-url/provider; "
                                                "'auto' is local for a bundled model, else none.")]
ConcurrencyOpt = Annotated[Optional[int], typer.Option("--concurrency", min=1, rich_help_panel=API_PANEL, help=(
    "api: requests in flight \\[default: what the server serves at once: 1 for a spawned transformers serve, 8 for a "
    "remote one]. Lowered while the server is overloaded."))]
TimeoutOpt = Annotated[Optional[float], typer.Option("--timeout", min=0.1, rich_help_panel=API_PANEL, help=(
    "api: fixed seconds per request \\[default: adaptive: 4 × measured time for max-new-tokens, at least 60 s; "
    "300 s until measured]."))]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", min=1, rich_help_panel=LOCAL_PANEL, help=(
    "torch threads of the local model and of a spawned server \\[default: usable cores but one; split when both "
    "compute at once]."))]
RetriesOpt = Annotated[int, typer.Option("--max-retries", min=0, help="api: retries per request on 408/5xx/timeouts/"
                                         "connection errors, within the run's retry budget (10 + 20% of requests sent).",
                                         rich_help_panel=API_PANEL)]


def debug_enabled() -> bool:
    return os.environ.get("TOXCMP_DEBUG", "") not in ("", "0", "false")


def print_error(message: str) -> None:
    """`error: MESSAGE` on stderr, one line, the message as written (no markup read into it)."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = ExitCode.BACKEND) -> None:
    print_error(message)
    raise typer.Exit(code)


def friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Domain errors → one line on stderr and a non-zero exit; a traceback only with TOXCMP_DEBUG=1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except ToxcmpError as exc:
            if debug_enabled():
                raise
            fail(exc.one_line(), exc.exit_code)
        except KeyboardInterrupt:
            err_console.print("interrupted; finished work is kept in the cache")
            raise typer.Exit(ExitCode.INTERRUPTED)
        except Exception as exc:  # noqa: BLE001 - last line of defence
            if debug_enabled():
                raise
            first = str(exc).splitlines()[0] if str(exc) else ""
            fail(f"{type(exc).__name__}: {first} (set TOXCMP_DEBUG=1 for a traceback)", ExitCode.BACKEND)

    return wrapper


def command_line(ctx: typer.Context) -> str:
    """The invoking command as a reproducible line: the options the user actually gave (never the token)."""
    import shlex

    words = ctx.command_path.split()
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if getattr(source, "name", None) != "COMMANDLINE":
            continue
        value = ctx.params.get(param.name)
        if param.param_type_name == "argument":
            words += [str(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
        elif param.name == "token":
            words += [param.opts[0], "***"]
        elif getattr(param, "is_flag", False):
            words += [param.opts[0]] if value else []
        else:
            words += [param.opts[0], str(value)]
    return shlex.join(words)


def clip(text: str, limit: int = 600) -> str:
    """`text` stripped, cut at `limit` characters (saying how long it was) and escaped for rich markup."""
    from rich.markup import escape

    text = text.strip()
    return escape(text if len(text) <= limit else text[:limit] + f"… ({len(text)} chars)")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")
