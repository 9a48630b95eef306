"""`toxcmp bench ...`: each subcommand runs `toxcmp.bench.<name>` (api, local, serve, engines, html, busy, sides,
arms, report) and prints its ratios against the baseline measured in the same process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from toxcmp.cli.common import JsonOpt, ModelOpt, PolicyOpt, ThreadsOpt, console, friendly_errors, print_json
from toxcmp.errors import ExitCode, UsageError

bench_app = typer.Typer(help="Benchmarks (ratios against a baseline run in the same process).", no_args_is_help=True)


STUDY_CSV = Path("../shared/data/toxicchat0124/test.csv")
StudyCsvOpt = Annotated[Path, typer.Option("--dataset", show_default=False, help=(
    "CSV with user_input \\[default: toxicchat0124/test.csv under ../shared/data]."))]


def require_dataset(dataset: Path, kind: str = "a CSV") -> None:
    if not dataset.is_file():
        raise UsageError(f"no dataset at {dataset}", f"pass --dataset PATH to {kind} with a user_input column")


def progress(as_json: bool):
    """A benchmark's progress lines: on the console, or nowhere under --json (stdout is the JSON)."""
    return (lambda m: None) if as_json else (lambda m: console.print(m, highlight=False))


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")


@bench_app.command("api")
@friendly_errors
def bench_api(
    requests: Annotated[int, typer.Option("--requests", min=1, help="Requests per concurrency level.")] = 64,
    delay: Annotated[float, typer.Option("--delay", min=0.0, help="Seconds the endpoint waits per request.")] = 0.1,
    as_json: JsonOpt = False,
) -> None:
    """api backend requests/s at concurrency 1 vs 16 against a fixed-delay loopback endpoint."""
    from toxcmp.bench.api import bench_api as run

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
    dataset: StudyCsvOpt = STUDY_CSV,
    as_json: JsonOpt = False,
) -> None:
    """local backend: naive per-example generate vs batched vs batched + shared prefix KV (same process)."""
    from toxcmp.bench.local import bench_local as run

    require_dataset(dataset)
    result = run(dataset, rows, max_new_tokens, policy, model, batch_size,
                 log=progress(as_json))
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


@bench_app.command("logprobs")
@friendly_errors
def bench_logprobs(
    rows: Annotated[int, typer.Option("--rows", min=1, help="ToxicChat rows.")] = 32,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="Fixed generation budget.")] = 32,
    policy: PolicyOpt = "toxic_chat_claude_1",
    model: ModelOpt = "smollm2-135m",
    dataset: StudyCsvOpt = STUDY_CSV,
    as_json: JsonOpt = False,
) -> None:
    """local backend: what teacher-forced scoring and label probabilities cost beside generating the rows."""
    from toxcmp.bench.logprobs import bench_logprobs as run

    require_dataset(dataset)
    result = run(dataset, rows, max_new_tokens, policy, model,
                 log=progress(as_json))
    if as_json:
        print_json(result.to_dict())
        return
    console.print(f"{result.rows} rows · {result.policy} · max_new_tokens {result.max_new_tokens} · "
                  f"{result.strategy} · {result.threads} threads")
    console.print(f"teacher-forced scoring of {result.scored_answers}'s answers costs "
                  f"{result.teacher_forcing_ratio:.1%} of generating the rows (goal ≤ {result.goal:.0%}: "
                  f"{'met' if result.met else 'NOT met'}; {result.tokens_reused} of {result.scored_tokens} tokens "
                  f"read from the local generation, which {result.answers_identical} of {result.rows} answers "
                  f"equal; with every token forced {result.forced_every_token_ratio:.1%}); label probabilities "
                  + (f"{result.label_probs_ratio:.1%} ({result.label_rows} labelled answers)"
                     if result.label_probs_ratio is not None else "not measured (no answer wrote a label)")
                  + f"; recording its own log p makes generating {result.recording_ratio:.2f}× as long")


@bench_app.command("serve")
@friendly_errors
def bench_serve(
    rows: Annotated[int, typer.Option("--rows", min=1, help="ToxicChat rows.")] = 16,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1)] = 32,
    concurrency: Annotated[int, typer.Option("--concurrency", min=2, help="Concurrency compared against 1.")] = 8,
    dataset: StudyCsvOpt = STUDY_CSV,
    as_json: JsonOpt = False,
) -> None:
    """api --api-server local: concurrency 1 vs N, with and without `transformers serve --continuous-batching`."""
    from toxcmp.bench.serve import bench_serve as run

    require_dataset(dataset)
    result = run(dataset, rows, max_new_tokens, concurrency=concurrency,
                 log=progress(as_json))
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
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="Threads of every engine \[default: torch's].")] = None,
    dataset: Annotated[Path, typer.Option("--dataset", show_default=False, help=(
        "CSV or parquet with user_input \\[default: toxicchat0124_test_sample.csv in configs/samples, 24 rows]."))] = Path(
        "configs/samples/toxicchat0124_test_sample.csv"),
    slots: Annotated[int, typer.Option("--slots", min=1, help="llama-server's parallel slots (-np), all in flight.")] = 4,
    as_json: JsonOpt = False,
) -> None:
    """The CPU peer at its best: local naive and prefix vs llama-cpp-python in process, its server (sequential,
    2 in flight) and llama.cpp's C++ llama-server with parallel slots where one is found, on the bundled GGUF."""
    from toxcmp.bench.engines import bench_engines as run

    require_dataset(dataset, "a CSV or parquet")
    result = run(dataset, rows, max_new_tokens, policy, threads=threads, slots=slots,
                 log=progress(as_json))
    if as_json:
        print_json(result.to_dict())
        return
    e, r = result.eps, result.ratios
    console.print(f"{result.rows} rows · {result.policy} · max_new_tokens {result.max_new_tokens} · {result.threads} threads")
    console.print(" · ".join(f"{name} {rate:.2f} ex/s" for name, rate in e.items()))
    for name, why in result.not_run.items():
        console.print(f"[dim]{name} not run: {why}[/]", highlight=False)
    partial = f" of the peers that ran ({', '.join(result.not_run)} did not)" if result.not_run else ""
    console.print(f"local prefix / fastest peer{partial} ({result.fastest_peer}) "
                  f"[bold]{r['local_prefix_vs_fastest_peer']:.2f}×[/] (goal ≥ 1.5) · prefix / naive "
                  f"{r['local_prefix_vs_local_naive']:.2f}× · oneDNN / PyTorch linear kernels "
                  f"{r['local_prefix_vs_torch_linear']:.2f}×")
    console.print(f"identical to local naive: local prefix {result.identical_prefix}/{result.rows} (tokens), with "
                  f"PyTorch's linear kernels {result.identical_prefix_torch_linear}/{result.rows}; "
                  + ", ".join(f"{name} {n}/{result.rows}" for name, n in result.identical_peers.items())
                  + " (final answers)")
    if result.rows != result.identical_prefix or result.rows != result.identical_prefix_torch_linear:
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
    dataset: StudyCsvOpt = STUDY_CSV,
    as_json: JsonOpt = False,
) -> None:
    """compare --backends api,local --api-server local, idle and under a CPU hog in one process (goal ≤ 2.5×)."""
    from toxcmp.bench.busy import bench_busy as run

    require_dataset(dataset)
    result = run(dataset, rows, seed, max_new_tokens, hog_cores=hog_cores, threads=threads,
                 log=progress(as_json))
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
    dataset: StudyCsvOpt = STUDY_CSV,
    as_json: JsonOpt = False,
) -> None:
    """compare api (fixed-delay loopback endpoint) + local: sides at the same time vs one after the other (goal ≥ 1.6×)."""
    from toxcmp.bench.sides import bench_sides as run

    require_dataset(dataset)
    result = run(dataset, rows, max_new_tokens, chunk_size, delay,
                 log=progress(as_json))
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


@bench_app.command("arms")
@friendly_errors
def bench_arms(
    providers: Annotated[int, typer.Option("--providers", min=2, max=3, help="Loopback providers, each slow for its own third of the run.")] = 2,
    rows: Annotated[Optional[int], typer.Option("--rows", min=1, help="Rows \\[default: what one provider answers in three phases].")] = None,
    phase: Annotated[float, typer.Option("--phase", min=0.01, help="Seconds each provider is slow for, in turn.")] = 3.0,
    fast: Annotated[float, typer.Option("--fast", min=0.0, help="Seconds per request outside a provider's slow phase.")] = 0.15,
    slow: Annotated[float, typer.Option("--slow", min=0.001, help="Seconds per request inside it.")] = 1.5,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Every provider's requests in flight.")] = 4,
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=1)] = 16,
    repeat: Annotated[int, typer.Option("--repeat", min=1, help="Runs per measurement (the best counts).")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """compare with 2-3 loopback providers slow at different times: all together vs the slowest alone (goal ≤ 1.15×)."""
    from toxcmp.bench.arms import bench_arms as run

    result = run(providers, rows, phase, fast, slow, concurrency, chunk_size, repeat,
                 log=progress(as_json))
    if as_json:
        print_json(result.to_dict())
    else:
        console.print(f"[dim]{result.note}[/]")
        mark = "[green]within[/]" if result.ratio <= result.goal else "[red]over[/]"
        alone = " · ".join(f"{k} {v:.2f}s" for k, v in result.alone_s.items())
        console.print(f"{result.rows} rows · {result.providers} providers · each slow ({result.slow_s:g}s vs "
                      f"{result.fast_s:g}s a request) for {result.phase_s:g}s in turn · concurrency {result.concurrency} "
                      f"· best of {result.repeat} · sides {result.scheduling}")
        console.print(f"alone: {alone} · together {result.together_s:.2f}s = [bold]{result.ratio:.2f}×[/] the slowest "
                      f"alone ({mark} the {result.goal:g}× goal) · max in flight {result.max_in_flight} · "
                      f"complete: {result.complete}")
    if not (result.complete and result.concurrency_ok):
        raise typer.Exit(ExitCode.FAIL)


@bench_app.command("report")
@friendly_errors
def bench_report(
    sources: Annotated[Optional[list[Path]], typer.Argument(help="Recorded outputs to build the run from \\[default: the two 2,000-row study parquets in ../shared/data].")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Time re-rendering the full report of a cached run (goal: < 5 s for 2,000 rows)."""
    import tempfile

    from toxcmp.bench.report import bench_report as run

    sources = sources or _study_n2000()
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
