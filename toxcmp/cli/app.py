"""Typer CLI: parse options, call the library, render. Nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.panel import Panel
from rich.table import Table

from toxcmp import __version__
from toxcmp.cli.common import (ApiServerOpt, BaseUrlOpt, CacheDirOpt, ConcurrencyOpt, DeviceOpt, DtypeOpt, JsonOpt,
                         MaxNewTokensOpt, ModelOpt, NoCacheOpt, PolicyOpt, ProviderOpt, ReasoningOpt, RetriesOpt,
                         RevisionOpt, ThreadsOpt, TimeoutOpt, TokenOpt, console, err_console, friendly_errors, print_json)
from toxcmp.config import default, default_cache_dir
from toxcmp.errors import ExitCode, UsageError

app = typer.Typer(name="toxcmp", help="Compare LLM toxicity classifiers across inference backends.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
cache_app = typer.Typer(help="Inspect or clear the response cache.", no_args_is_help=True)
policies_app = typer.Typer(help="List or show policies.", no_args_is_help=True)
backends_app = typer.Typer(help="List inference backends.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks (ratios against a baseline run in the same process).", no_args_is_help=True)
app.add_typer(cache_app, name="cache")
app.add_typer(policies_app, name="policies")
app.add_typer(backends_app, name="backends")
app.add_typer(bench_app, name="bench")


def _version(value: bool) -> None:
    if value:
        console.print(f"toxcmp {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: Annotated[bool, typer.Option("--version", metavar="", callback=_version, is_eager=True)] = False) -> None:
    """toxcmp: run a policy classifier on two backends; agreement, causes of disagreement, accuracy."""


def read_input_text(text: Optional[str], file: Optional[Path]) -> str:
    if file is not None:
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {file}: {exc.strerror}", "check the path") from None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"{file} is not UTF-8 (invalid byte at offset {exc.start})",
                             "re-encode it, e.g. iconv -f latin1 -t utf-8") from None
    if text is None:
        raise UsageError("no text given", "pass TEXT or --file PATH")
    return text


@app.command()
@friendly_errors
def classify(
    text: Annotated[Optional[str], typer.Argument(help="Text to classify.")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="Read the text from a UTF-8 file.")] = None,
    policy: PolicyOpt = default("policy", "toxic_simple"),
    backend: Annotated[str, typer.Option("--backend", "-b", help="api or local (or a plugin).")] = default("backend", "api"),
    model: ModelOpt = default("model", "smollm2-135m"),
    revision: RevisionOpt = None,
    max_new_tokens: MaxNewTokensOpt = None,
    reasoning_effort: ReasoningOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    base_url: BaseUrlOpt = None,
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
) -> None:
    """Classify one text: binary label, fine-grained label, parse status, reasoning, content."""
    from toxcmp.backends import BackendConfig
    from toxcmp.config import GenerationConfig
    from toxcmp.core import respond, verdict_result
    from toxcmp.domain.models import resolve_model
    from toxcmp.domain.policies import load_policy

    body = read_input_text(text, file)
    policy_obj = load_policy(policy)
    spec = resolve_model(model, revision)
    generation = GenerationConfig.from_defaults(max_new_tokens=max_new_tokens, reasoning_effort=reasoning_effort)
    config = BackendConfig(device=device, dtype=dtype, base_url=base_url, provider=provider, token=token,
                           concurrency=concurrency, timeout_s=timeout, max_retries=max_retries, threads=threads,
                           cache_dir=cache_dir or default_cache_dir())
    response = respond(policy_obj, body, spec, backend, generation, config, use_cache=not no_cache,
                       api_server=api_server, notify=lambda note: err_console.print(note, soft_wrap=True))
    result = verdict_result(response, policy_obj)
    if as_json:
        data = result.to_dict()
        print_json(dict({k: data[k] for k in ("binary_label", "fine_grain_label", "parse_ok", "parse_error", "refusal",
                                         "content", "reasoning", "backend", "model", "policy", "cached",
                                         "latency_s", "served_by", "prompt_hash", "error")},
                    retries=response.retries))
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
            ("content", _clip(result.content)), ("reasoning", _clip(result.reasoning) or "—"),
            ("backend", f"{result.backend} ({result.served_by or '?'})"), ("model", result.model),
            ("policy", result.policy), ("latency", f"{result.latency_s:.2f}s"), ("cached", str(result.cached))]
    if result.error:
        rows.append(("error", f"[red]{result.error}[/]"))
    for key, value in rows:
        table.add_row(key, value)
    return Panel(table, title="toxcmp classify", expand=False)


def _clip(text: str, limit: int = 600) -> str:
    from rich.markup import escape

    text = text.strip()
    return escape(text if len(text) <= limit else text[:limit] + f"… ({len(text)} chars)")


@app.command()
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
    reasoning_effort: ReasoningOpt = None,
    cache_dir: CacheDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the prompt the local backend feeds and the request body the API backend sends."""
    from toxcmp.backends import BackendConfig
    from toxcmp.backends.local import LocalBackend
    from toxcmp.config import GenerationConfig
    from toxcmp.domain.models import resolve_model
    from toxcmp.domain.policies import load_policy
    from toxcmp.domain.prompting import build_request

    if run is not None:
        from toxcmp.run.replay import request_from_run

        request, _, note = request_from_run(run, example, prompt_hash)
        if note:
            err_console.print(f"note: {note}", soft_wrap=True)
        spec, generation = request.model, request.generation
    else:
        if text is None:
            raise UsageError("no text given", "pass TEXT, or --run RUN_DIR with --example ID or --prompt-hash HASH")
        spec = resolve_model(model, revision)
        generation = GenerationConfig.from_defaults(max_new_tokens=max_new_tokens, reasoning_effort=reasoning_effort)
        request = build_request(load_policy(policy), text, spec, generation)
    prompt = LocalBackend(BackendConfig(cache_dir=cache_dir or default_cache_dir())).render(request)
    body = {"model": spec.model_id, "messages": request.chat_messages(), "max_tokens": generation.max_new_tokens,
            "temperature": generation.temperature, "seed": generation.seed, **request.template_options()}
    if as_json:
        print_json({"prompt_hash": request.prompt_hash, "local_prompt": prompt, "api_request": body})
        return
    console.print(Panel(_clip(prompt, 100_000), title=f"local prompt (hash {request.prompt_hash[:12]})"))
    import json as _json

    console.print(Panel(_clip(_json.dumps(body, indent=2, ensure_ascii=False), 100_000), title="api request body"))


@app.command()
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


@app.command("verify-setup")
@friendly_errors
def verify_setup(cache_dir: CacheDirOpt = None, as_json: JsonOpt = False) -> None:
    """Check dependencies, backends, policies, models, cache and token without loading model weights."""
    from toxcmp.bench.setup_check import run_checks

    checks = run_checks(cache_dir or default_cache_dir())
    failed = [c for c in checks if c.required and not c.ok]
    if as_json:
        print_json({"ok": not failed, "checks": [c.__dict__ for c in checks]})
    else:
        table = Table(title="toxcmp verify-setup")
        for col in ("", "check", "detail", "fix"):
            table.add_column(col)
        for c in checks:
            mark = "[green]✓[/]" if c.ok else ("[red]✗[/]" if c.required else "[yellow]✗[/]")
            table.add_row(mark, c.name, c.detail, "" if c.ok else c.hint)
        console.print(table)
        console.print("[green]all required checks passed[/]" if not failed else f"[red]{len(failed)} required check(s) failed[/]")
    if failed:
        raise typer.Exit(ExitCode.FAIL)


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
    console.print(Panel(_clip(p.text, 100_000), title=f"{p.name} ({p.output}; {labels}; sha256 {p.sha256[:12]})"))


@backends_app.command("list")
@friendly_errors
def backends_list(as_json: JsonOpt = False) -> None:
    """Registered backends (built-in and entry-point plugins)."""
    from toxcmp.backends import registry

    reg = registry()
    if as_json:
        print_json(reg)
        return
    table = Table(title="backends")
    table.add_column("name")
    table.add_column("factory")
    for name, target in sorted(reg.items()):
        table.add_row(name, target)
    console.print(table)


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
            typer.confirm(f"delete {doomed} cached response(s) from {directory}?", abort=True)
        removed = cache.clear(backend=backend, model=model_id)
    finally:
        cache.close()
    console.print(f"removed {removed} cached response(s) from {directory}", highlight=False, soft_wrap=True)
    if models:
        import shutil

        from toxcmp.backends.local import LocalModelCache

        freed = LocalModelCache.clear() if "torch" in __import__("sys").modules else 0
        converted = Path(directory) / "models"
        if converted.is_dir():
            shutil.rmtree(converted)
        console.print(f"freed {freed} loaded model(s); removed converted models under {converted}")


@bench_app.command("api")
@friendly_errors
def bench_api(
    requests: Annotated[int, typer.Option("--requests", min=1, help="Requests per concurrency level.")] = 64,
    delay: Annotated[float, typer.Option("--delay", min=0.0, help="Seconds the endpoint waits per request.")] = 0.1,
    as_json: JsonOpt = False,
) -> None:
    """api backend requests/s at concurrency 1 vs 16 against a fixed-delay loopback endpoint."""
    from toxcmp.bench.benchmarks import bench_api as run

    result = run(requests, delay)
    if as_json:
        print_json(result.to_dict())
        return
    console.print(f"[dim]{result.note}[/]")
    console.print(f"{result.requests} requests, {result.delay_s:g}s delay each: "
                  f"c1 {result.rps_c1:.1f} req/s · c16 {result.rps_c16:.1f} req/s · "
                  f"speedup [bold]{result.speedup:.1f}×[/] (ideal 16×) · errors {result.errors} · retries {result.retries}")


@bench_app.command("local")
@friendly_errors
def bench_local(
    rows: Annotated[int, typer.Option("--rows", min=1, help="ToxicChat rows.")] = 64,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="Fixed generation budget.")] = 32,
    policy: PolicyOpt = "toxic_chat_claude_1",
    model: ModelOpt = "smollm2-135m",
    batch_size: Annotated[str, typer.Option("--batch-size", help="auto or N.")] = "auto",
    dataset: Annotated[Path, typer.Option("--dataset", help="CSV with user_input.")] = Path("../shared/data/toxicchat0124/test.csv"),
    as_json: JsonOpt = False,
) -> None:
    """local backend: naive per-example generate vs batched vs batched + shared prefix KV (same process)."""
    from toxcmp.bench.benchmarks import bench_local as run

    if not dataset.is_file():
        raise UsageError(f"no dataset at {dataset}", "pass --dataset PATH to a CSV with a user_input column")
    result = run(dataset, rows, max_new_tokens, policy, model, batch_size,
                 log=(lambda m: None) if as_json else (lambda m: console.print(m, highlight=False)))
    if as_json:
        print_json(result.to_dict())
        return
    console.print(f"{result.rows} rows · {result.policy} · max_new_tokens {result.max_new_tokens} · "
                  f"{result.threads} threads · prompts {result.prompt_tokens} tokens, shared prefix {result.prefix_tokens}")
    console.print(f"naive {result.naive_eps:.2f} ex/s · batched {result.batched_eps:.2f} ex/s "
                  f"({result.batched_speedup:.1f}×) · batched + prefix {result.prefix_eps:.2f} ex/s "
                  f"([bold]{result.speedup:.1f}×[/] naive; goal ≥ 5×)")
    console.print(f"outputs identical to naive: batched {result.identical_batched}/{result.rows}, "
                  f"prefix {result.identical_prefix}/{result.rows} · peak RSS {result.peak_rss_mb:.0f} MB · "
                  f"matmul peak {result.matmul_peak_gflops:.0f} GFLOP/s · MFU " +
                  ", ".join(f"{k} {v:.1%}" for k, v in result.mfu.items()))
    if not result.identical:
        raise typer.Exit(ExitCode.FAIL)


@bench_app.command("serve")
@friendly_errors
def bench_serve(
    rows: Annotated[int, typer.Option("--rows", min=1, help="ToxicChat rows.")] = 16,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1)] = 32,
    concurrency: Annotated[int, typer.Option("--concurrency", min=2, help="Concurrency compared against 1.")] = 8,
    dataset: Annotated[Path, typer.Option("--dataset", help="CSV with user_input.")] = Path("../shared/data/toxicchat0124/test.csv"),
    as_json: JsonOpt = False,
) -> None:
    """api --api-server local: concurrency 1 vs N, with and without `transformers serve --continuous-batching`."""
    from toxcmp.bench.benchmarks import bench_serve as run

    if not dataset.is_file():
        raise UsageError(f"no dataset at {dataset}", "pass --dataset PATH to a CSV with a user_input column")
    result = run(dataset, rows, max_new_tokens, concurrency=concurrency,
                 log=(lambda m: None) if as_json else (lambda m: console.print(m, highlight=False)))
    if as_json:
        print_json(result.to_dict())
        return
    for mode, levels in result.eps.items():
        c1, cn = levels["c1"], levels[f"c{concurrency}"]
        console.print(f"{mode}: c1 {c1:.2f} ex/s · c{concurrency} {cn:.2f} ex/s · {cn / c1:.2f}×")
    console.print(f"same answers in every configuration: {result.identical}")


@bench_app.command("engines")
@friendly_errors
def bench_engines(
    rows: Annotated[int, typer.Option("--rows", min=1, help="Rows of the dataset.")] = 24,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1)] = 32,
    policy: PolicyOpt = "toxic_chat_claude_1",
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="Threads of both engines \[default: torch's].")] = None,
    dataset: Annotated[Path, typer.Option("--dataset", help="CSV or parquet with user_input.")] = Path(
        "configs/samples/toxicchat0124_test_sample.csv"),
    as_json: JsonOpt = False,
) -> None:
    """The CPU peer: local naive and prefix vs llama.cpp's server (sequential, 2 in flight) on the bundled GGUF."""
    from toxcmp.bench.benchmarks import bench_engines as run

    if not dataset.is_file():
        raise UsageError(f"no dataset at {dataset}", "pass --dataset PATH to a CSV or parquet with a user_input column")
    result = run(dataset, rows, max_new_tokens, policy, threads=threads,
                 log=(lambda m: None) if as_json else (lambda m: console.print(m, highlight=False)))
    if as_json:
        print_json(result.to_dict())
        return
    e, r = result.eps, result.ratios
    console.print(f"{result.rows} rows · {result.policy} · max_new_tokens {result.max_new_tokens} · {result.threads} threads")
    console.print(f"local naive {e['local_naive']:.2f} ex/s · local prefix {e['local_prefix']:.2f} ex/s · llama.cpp "
                  f"sequential {e['llamacpp_sequential']:.2f} ex/s · llama.cpp 2 in flight {e['llamacpp_parallel']:.2f} ex/s")
    console.print(f"local prefix / llama.cpp [bold]{r['local_prefix_vs_llamacpp']:.2f}×[/] (goal > 1) · local naive / "
                  f"llama.cpp {r['local_naive_vs_llamacpp']:.2f}× · prefix / naive {r['local_prefix_vs_local_naive']:.2f}× "
                  f"· llama.cpp 2 in flight / sequential {r['llamacpp_parallel_vs_sequential']:.2f}×")
    console.print(f"identical to local naive: local prefix {result.identical_prefix}/{result.rows} (tokens), "
                  f"llama.cpp {result.identical_llamacpp}/{result.rows} (final answers)")
    if result.identical_prefix != result.rows:
        raise typer.Exit(ExitCode.FAIL)


@bench_app.command("html")
@friendly_errors
def bench_html(
    sources: Annotated[Optional[list[Path]], typer.Argument(help="Recorded outputs \\[default: the two 2,000-row study parquets in ../shared/data].")] = None,
    loads: Annotated[int, typer.Option("--loads", min=1, help="Page loads per measurement (median).")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Size and time-to-interactive of a 2,000-row report.html in headless Chromium (goal: < 8 MB, < 2 s)."""
    import tempfile

    from toxcmp.bench.html import bench_html as run

    sources = sources or _study_n2000()
    with tempfile.TemporaryDirectory() as workdir:
        result = run(sources, Path(workdir), loads)
    if as_json:
        print_json(result.to_dict())
        return
    mark = "[green]within[/]" if result.within_budget else "[red]over[/]"
    console.print(f"{result.rows} rows: report.html {result.bytes / 1e6:.2f} MB (built in {result.build_s:.2f}s) · "
                  f"interactive in {result.interactive_ms:.0f} ms vs {result.baseline_ms:.0f} ms for a one-row report "
                  f"(baseline) = {result.ratio:.1f}× · {mark} the 8 MB / 2 s budget (median of {result.loads} loads)")


def _study_n2000() -> list[Path]:
    shared = Path("../shared/data/gptoss_recorded")
    sources = [shared / "api_gpt-oss-20b_toxic_simple_n2000.parquet",
               shared / "api_gpt-oss-safeguard-20b_toxic_simple_n2000.parquet"]
    if not all(s.is_file() for s in sources):
        raise UsageError("the default 2,000-row study parquets are not at ../shared/data/gptoss_recorded",
                         "pass a run dir or recorded parquets as arguments")
    return sources


@bench_app.command("busy")
@friendly_errors
def bench_busy(
    rows: Annotated[int, typer.Option("--rows", "--sample-size", min=1, help="Rows (the issue's command: 20).")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed.")] = 7,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1)] = 64,
    hog_cores: Annotated[int, typer.Option("--hog-cores", min=1, help="Cores the CPU hog keeps busy.")] = 1,
    threads: ThreadsOpt = None,
    dataset: Annotated[Path, typer.Option("--dataset", help="CSV with user_input.")] = Path("../shared/data/toxicchat0124/test.csv"),
    as_json: JsonOpt = False,
) -> None:
    """compare --backends api,local --api-server local, idle and under a CPU hog in one process (goal ≤ 2.5×)."""
    from toxcmp.bench.benchmarks import bench_busy as run

    if not dataset.is_file():
        raise UsageError(f"no dataset at {dataset}", "pass --dataset PATH to a CSV with a user_input column")
    result = run(dataset, rows, seed, max_new_tokens, hog_cores=hog_cores, threads=threads,
                 log=(lambda m: None) if as_json else (lambda m: console.print(m, highlight=False)))
    if as_json:
        print_json(result.to_dict())
    else:
        mark = "[green]within[/]" if result.ratio <= result.goal else "[red]over[/]"
        console.print(f"{result.rows} rows · {result.max_new_tokens} new tokens · {result.usable_cores} usable cores · "
                      f"threads {result.threads.get('sides')} · sides {result.scheduling}")
        console.print(f"idle {result.idle_s:.1f}s · {result.hog_cores}-core hog {result.hog_s:.1f}s · "
                      f"[bold]{result.ratio:.2f}×[/] ({mark} the {result.goal:g}× goal) · complete: {result.complete}")
    if not result.complete:
        raise typer.Exit(ExitCode.FAIL)


@bench_app.command("sides")
@friendly_errors
def bench_sides(
    rows: Annotated[int, typer.Option("--rows", min=1, help="Rows.")] = 32,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1)] = 16,
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=1)] = 16,
    delay: Annotated[Optional[float], typer.Option("--delay", min=0.0, help="Endpoint delay per request \\[default: calibrated to the local side].")] = None,
    dataset: Annotated[Path, typer.Option("--dataset", help="CSV with user_input.")] = Path("../shared/data/toxicchat0124/test.csv"),
    as_json: JsonOpt = False,
) -> None:
    """compare api (fixed-delay loopback endpoint) + local: sides at the same time vs one after the other (goal ≥ 1.6×)."""
    from toxcmp.bench.benchmarks import bench_sides as run

    if not dataset.is_file():
        raise UsageError(f"no dataset at {dataset}", "pass --dataset PATH to a CSV with a user_input column")
    result = run(dataset, rows, max_new_tokens, chunk_size, delay,
                 log=(lambda m: None) if as_json else (lambda m: console.print(m, highlight=False)))
    if as_json:
        print_json(result.to_dict())
    else:
        console.print(f"[dim]{result.note}[/]")
        mark = "[green]meets[/]" if result.speedup >= result.goal else "[red]misses[/]"
        console.print(f"{result.rows} rows · endpoint delay {result.delay_s:g}s · sequential {result.sequential_s:.1f}s · "
                      f"concurrent {result.concurrent_s:.1f}s · [bold]{result.speedup:.2f}×[/] (ideal {result.ideal:.2f}×; "
                      f"{mark} the {result.goal:g}× goal) · same answers: {result.same_rows}")
    if not result.same_rows:
        raise typer.Exit(ExitCode.FAIL)


@bench_app.command("report")
@friendly_errors
def bench_report(
    sources: Annotated[Optional[list[Path]], typer.Argument(help="Recorded outputs to build the run from \\[default: the two 2,000-row study parquets in ../shared/data].")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Time re-rendering the full report of a cached run (goal: < 5 s for 2,000 rows)."""
    import tempfile

    from toxcmp.bench.benchmarks import bench_report as run

    if not sources:
        shared = Path("../shared/data/gptoss_recorded")
        sources = [shared / "api_gpt-oss-20b_toxic_simple_n2000.parquet",
                   shared / "api_gpt-oss-safeguard-20b_toxic_simple_n2000.parquet"]
        if not all(s.is_file() for s in sources):
            raise UsageError("the default 2,000-row study parquets are not at ../shared/data/gptoss_recorded",
                             "pass a run dir or recorded parquets as arguments")
    with tempfile.TemporaryDirectory() as workdir:
        result = run(sources, workdir)
    if as_json:
        print_json(result.to_dict())
        return
    mark = "[green]within[/]" if result.within_budget else "[red]over[/]"
    console.print(f"{result.rows} rows: compare with every response cached {result.cached_compare_s:.2f}s · "
                  f"read parquet {result.read_s:.3f}s (baseline) · rescore {result.rescore_s:.2f}s · "
                  f"render {result.render_s:.2f}s · total [bold]{result.total_s:.2f}s[/] = {result.ratio_to_read:.0f}× the "
                  f"read · {mark} the {result.budget_s:g}s budget")


from toxcmp.cli import compare as cli_compare  # noqa: E402 - registers compare and rescore on the app

cli_compare.register(app)


def main() -> None:
    import sys

    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C outside a command's own handling (e.g. during imports)
        from toxcmp.cli.common import err_console

        err_console.print("interrupted")
        sys.exit(130)
