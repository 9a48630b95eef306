"""`toxcmp classify` and `toxcmp render`: one text through a policy (its verdict panel), or the prompt and API request
body built for it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.panel import Panel
from rich.table import Table

from toxcmp.cli.common import (ApiServerOpt, BaseUrlOpt, ServedModelOpt, CacheDirOpt, ConcurrencyOpt, DeviceOpt, DtypeOpt, JsonOpt,
                               MaxNewTokensOpt, ModelOpt, NoCacheOpt, PolicyOpt, ProviderOpt, ReasoningOpt,
                               RenderDateOpt, RetriesOpt, RevisionOpt, TemperatureOpt, TextColumnOpt, ThreadsOpt, TimeoutOpt, TokenOpt,
                               TopPOpt, QuietOpt, clip, console,
                               err_console, friendly_errors, print_json)
from toxcmp.config import default, default_cache_dir
from toxcmp.errors import ExitCode, UsageError


# what `classify --json` prints of a result, one text or a file of them (toxcmp.cli.classify_file)
JSON_KEYS = ("binary_label", "fine_grain_label", "parse_ok", "parse_error", "refusal", "content", "reasoning",
             "backend", "model", "policy", "cached", "latency_s", "served_by", "prompt_hash", "error")


def register(app: typer.Typer) -> None:
    app.command()(classify)
    app.command()(render)


def read_input_text(text: Optional[str]) -> str:
    if text is None:
        raise UsageError("no text given", "pass TEXT, - (read it from standard input) or --file PATH (many texts)")
    if text == "-":
        import sys

        from toxcmp.domain.data import decode_utf8

        return decode_utf8(sys.stdin.buffer.read(), "standard input")
    return text


@friendly_errors
def classify(
    text: Annotated[Optional[str], typer.Argument(help="Text to classify; - reads it from standard input.")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help=(
        "Classify many texts: a .txt file (one text per line) or a .csv/.parquet/.jsonl file's text column; a "
        "progress bar, then one row per text (--json: one JSON object per line). One text from a file: classify - < FILE."))] = None,
    text_column: TextColumnOpt = None,
    policy: PolicyOpt = default("policy", "toxic_simple"),
    backend: Annotated[str, typer.Option("--backend", "-b", help="api or local (or a plugin).")] = default("backend", "api"),
    model: ModelOpt = default("model", "smollm2-135m"),
    revision: RevisionOpt = None,
    max_new_tokens: MaxNewTokensOpt = None,
    temperature: TemperatureOpt = None,
    top_p: TopPOpt = None,
    reasoning_effort: ReasoningOpt = None,
    render_date: RenderDateOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    base_url: BaseUrlOpt = None,
    served_model: ServedModelOpt = None,
    provider: ProviderOpt = "auto",
    token: TokenOpt = None,
    api_server: ApiServerOpt = "auto",
    concurrency: ConcurrencyOpt = None,
    timeout: TimeoutOpt = None,
    max_retries: RetriesOpt = 4,
    threads: ThreadsOpt = None,
    cache_dir: CacheDirOpt = None,
    no_cache: NoCacheOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Classify one text (or a file of them): binary label, fine-grained label, parse status, reasoning, content."""
    from toxcmp.backends import BackendConfig
    from toxcmp.config import GenerationConfig
    from toxcmp.core import respond, verdict_result
    from toxcmp.domain.models import resolve_model
    from toxcmp.domain.policies import load_policy
    from toxcmp.domain.prompting import check_render_date, today_utc
    from toxcmp.backends import build_options
    from toxcmp.run.validation import check_device, check_generation

    day = check_render_date(render_date) if render_date is not None else today_utc()
    if file is not None and text is not None:
        raise UsageError("TEXT and --file: one or the other", "drop TEXT to classify the file's texts")
    if text_column is not None and file is None:
        raise UsageError("--text-column without --file", "pass --file PATH (a .csv/.parquet/.jsonl file)")
    if file is not None:
        from toxcmp.domain.data import read_texts

        texts, skipped = read_texts(file, text_column)
        if skipped and not quiet:
            err_console.print(f"note: {skipped} blank {'line' if file.suffix.lower() == '.txt' else 'row'}"
                              f"{'s' if skipped != 1 else ''} of {file.name} skipped", soft_wrap=True, highlight=False)
    else:
        texts = None
        body = read_input_text(text)
    policy_obj = load_policy(policy)
    spec = resolve_model(model, revision)
    generation = GenerationConfig.from_defaults(max_new_tokens=max_new_tokens, reasoning_effort=reasoning_effort,
                                                temperature=temperature, top_p=top_p)
    config = BackendConfig(device=device, dtype=dtype, base_url=base_url, served_model=served_model, provider=provider, token=token,
                           concurrency=concurrency, timeout_s=timeout, max_retries=max_retries, threads=threads,
                           cache_dir=cache_dir or default_cache_dir())
    check_generation(generation)
    check_device(build_options(backend, config))  # --device cuda without CUDA: now, before a model or server starts
    if texts is not None:
        from toxcmp.cli.classify_file import classify_texts

        failed = classify_texts(texts, policy_obj, spec, backend, generation, config, use_cache=not no_cache,
                                api_server=api_server, render_date=day, as_json=as_json, quiet=quiet)
        if failed:
            raise typer.Exit(ExitCode.BACKEND)
        return
    response = respond(policy_obj, body, spec, backend, generation, config, use_cache=not no_cache,
                       api_server=api_server, notify=lambda note: err_console.print(note, soft_wrap=True),
                       render_date=day)
    result = verdict_result(response, policy_obj)
    if as_json:
        data = result.to_dict()
        print_json(dict({k: data[k] for k in JSON_KEYS}, retries=response.retries))
    else:
        console.print(verdict_panel(result))
    if result.error:
        raise typer.Exit(ExitCode.BACKEND)


def verdict_panel(result) -> Panel:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    label = "—" if result.binary_label is None else ("[red]1 (violates)[/]" if result.binary_label else "[green]0 (safe)[/]")
    status = "[green]ok[/]" if result.parse_ok else f"[yellow]{'refusal' if result.refusal else 'failed'}[/]: {result.parse_error}"
    rows = [("binary label", label), ("fine-grained", result.fine_grain_label or "—"), ("parse", status),
            ("content", clip(result.content)), ("reasoning", clip(result.reasoning) or "—"),
            ("backend", f"{result.backend} ({result.served_by or '?'})"), ("model", result.model),
            ("policy", result.policy), ("latency", f"{result.latency_s:.2f}s"),
            ("cached", "yes" if result.cached else "no")]
    if result.error:
        rows.append(("error", f"[red]{result.error}[/]"))
    for key, value in rows:
        table.add_row(key, value)
    return Panel(table, title="toxcmp classify", expand=False)


@friendly_errors
def render(
    text: Annotated[Optional[str], typer.Argument(help="Text to render (or use --run).")] = None,
    run: Annotated[Optional[Path], typer.Option("--run", help="A run dir: render the prompt it sent (with --example or --prompt-hash).")] = None,
    example: Annotated[Optional[str], typer.Option("--example", help="With --run: the example id.")] = None,
    prompt_hash: Annotated[Optional[str], typer.Option("--prompt-hash", help="With --run: a prompt hash (or its first characters).")] = None,
    policy: PolicyOpt = default("policy", "toxic_simple"),
    model: ModelOpt = default("model", "smollm2-135m"),
    revision: RevisionOpt = None,
    max_new_tokens: MaxNewTokensOpt = None,
    temperature: TemperatureOpt = None,
    top_p: TopPOpt = None,
    reasoning_effort: ReasoningOpt = None,
    render_date: RenderDateOpt = None,
    cache_dir: CacheDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the prompt the local backend feeds and the request body the API backend sends.

    With --run: at the date the run recorded (an API server writes its own date)."""
    from toxcmp.backends import BackendConfig
    from toxcmp.backends.local import LocalBackend
    from toxcmp.config import GenerationConfig
    from toxcmp.domain.models import resolve_model
    from toxcmp.domain.policies import load_policy
    from toxcmp.domain.prompting import build_request, check_render_date, today_utc

    if render_date is not None:
        check_render_date(render_date)
    if run is not None:
        from toxcmp.run.replay import request_from_run

        if render_date is not None:
            raise UsageError("--render-date and --run: a run's prompts render at the date the run recorded",
                             "drop --render-date (or drop --run and pass the text)")
        request, _, note = request_from_run(run, example, prompt_hash)
        if request.render_date is None:
            err_console.print("note: the run recorded no render date (it predates pinning): the prompt shows the "
                              "template's own clock", soft_wrap=True)
        if note:
            err_console.print(f"note: {note}", soft_wrap=True)
        spec, generation = request.model, request.generation
    else:
        if text is None:
            raise UsageError("no text given", "pass TEXT, or --run RUN_DIR with --example ID or --prompt-hash HASH")
        spec = resolve_model(model, revision)
        generation = GenerationConfig.from_defaults(max_new_tokens=max_new_tokens, reasoning_effort=reasoning_effort,
                                                    temperature=temperature, top_p=top_p)
        from toxcmp.run.validation import check_generation

        check_generation(generation)
        request = build_request(load_policy(policy), text, spec, generation, render_date=render_date or today_utc())
    prompt = LocalBackend(BackendConfig(cache_dir=cache_dir or default_cache_dir())).render(request)
    body = {"model": spec.model_id, "messages": request.chat_messages(), "max_tokens": generation.max_new_tokens,
            "temperature": generation.temperature, "seed": generation.seed, **request.template_options()}
    if as_json:
        print_json({"prompt_hash": request.prompt_hash, "render_date": request.render_date, "local_prompt": prompt,
                    "api_request": body})
        return
    dated = f", rendered at {request.render_date}" if request.render_date else ""
    console.print(Panel(clip(prompt, 100_000), title=f"local prompt (hash {request.prompt_hash[:12]}{dated})"))
    import json as _json

    console.print(Panel(clip(_json.dumps(body, indent=2, ensure_ascii=False), 100_000),
                        title="api request body (the server renders its own date)"))
