"""`toxcmp compare` and `toxcmp rescore`: options in, library call, report out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from toxcmp.cli.config_file import ConfigOpt
from toxcmp.cli.common import (API_PANEL, ARMS_PANEL, DATA_PANEL, LOCAL_PANEL, OUTPUT_PANEL, ApiServerOpt, BaseUrlOpt, ServedModelOpt, CacheDirOpt, ConcurrencyOpt, DeviceOpt, DtypeOpt, JsonOpt,
                         LabelColumnOpt, LimitOpt, MaxNewTokensOpt, ModelOpt, NoCacheOpt, PolicyOpt, ProviderOpt,
                         QuietOpt, ReasoningOpt, RenderDateOpt, TemperatureOpt, TextColumnOpt, TopPOpt,
                         RetriesOpt, RevisionOpt, ThreadsOpt, TimeoutOpt, TokenOpt, command_line, console, err_console,
                         friendly_errors, print_json)
from toxcmp.config import default, default_cache_dir

OutputDirOpt = Annotated[Path, typer.Option("--output-dir", rich_help_panel=OUTPUT_PANEL, help="Where run dirs go (replaces outputs/backend_comparison).")]
ThresholdOpt = Annotated[float, typer.Option("--threshold", rich_help_panel=ARMS_PANEL, help="Pass when binary agreement ≥ this (one arm: its accuracy against the human labels).")]
UnparsedOpt = Annotated[str, typer.Option("--unparsed-as", rich_help_panel=ARMS_PANEL, help="A side without a label (refusal, unparsed) counts as: "
                                                               "none (its own outcome; default), 0 (the recorded study's way) or 1.")]
MinLabelledOpt = Annotated[float, typer.Option("--min-labelled", min=0.0, max=1.0, rich_help_panel=ARMS_PANEL, help=(
    "Inconclusive (exit 3) unless each side gives a parseable label on at least this share of rows."))]
RunIdOpt = Annotated[Optional[str], typer.Option("--run-id", rich_help_panel=OUTPUT_PANEL, help="Run dir name \\[default: derived from the command, so a rerun resumes].")]


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
    app.command("rescore")(rescore)
    app.command("plan")(plan)


@friendly_errors
def plan(
    margin: Annotated[float, typer.Option("--margin", help="Equivalence margin on disagreement above the floor.")] = 0.02,
    disagreement: Annotated[float, typer.Option("--disagreement", help="Expected disagreement of the arm with the reference.")] = 0.02,
    floor: Annotated[float, typer.Option("--floor", help="Expected disagreement of the reference with itself (its noise floor).")] = 0.02,
    power: Annotated[float, typer.Option("--power", help="Chance of showing equivalence when it holds.")] = 0.8,
    alpha: Annotated[float, typer.Option("--alpha", help="Each one-sided test's level (the TOST's 90 % interval at 0.05).")] = 0.05,
    arms: Annotated[int, typer.Option("--arms", min=1, help="Arms judged against the reference (Holm divides alpha among them at worst).")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """How many rows a run needs to show an arm equivalent to the reference within --margin, at --power."""
    from toxcmp.errors import UsageError
    from toxcmp.analysis.metrics import rows_for_equivalence

    ranges = (("--margin", margin, False, "e.g. --margin 0.02"), ("--disagreement", disagreement, True, "e.g. 0.02"),
              ("--floor", floor, True, "e.g. 0.02"), ("--power", power, False, "e.g. --power 0.8"),
              ("--alpha", alpha, False, "e.g. --alpha 0.05"))
    for name, value, zero_ok, example in ranges:
        if not (0.0 <= value < 1.0 if zero_ok else 0.0 < value < 1.0):
            raise UsageError(f"{name} must be in {'[0' if zero_ok else '(0'}, 1) (got {value})", example)
    try:
        n = rows_for_equivalence(margin, disagreement, floor, power, alpha / arms)
    except ValueError as exc:
        raise UsageError(str(exc), "widen --margin or expect a smaller difference") from None
    if as_json:
        print_json({"rows": n, "margin": margin, "disagreement": disagreement, "floor": floor, "power": power,
                    "alpha": alpha, "arms": arms})
        return
    console.print(f"{n} rows (each answered by every arm, repeats included) show equivalence within ±{margin} at "
                  f"{power:.0%} power, expecting {disagreement:.1%} disagreement against a {floor:.1%} floor "
                  f"(TOST, alpha {alpha}{f' / {arms} arms (Holm, worst case)' if arms > 1 else ''})",
                  highlight=False, soft_wrap=True)


@friendly_errors
def compare(
    ctx: typer.Context,
    config: ConfigOpt = None,
    policy: PolicyOpt = default("policy", "toxic_simple"),
    model: ModelOpt = default("model", "smollm2-135m"),
    revision: RevisionOpt = None,
    dataset: Annotated[str, typer.Option("--dataset", rich_help_panel=DATA_PANEL, help="Hub id (or a local dir laid out like one), or a .csv/.parquet/.jsonl file.")] = "lmsys/toxic-chat",
    version: Annotated[Optional[str], typer.Option("--dataset-version", rich_help_panel=DATA_PANEL, help="Hub config: toxicchat0124 or toxicchat1123 \\[default: toxicchat0124]; not for files.")] = None,
    split: Annotated[Optional[str], typer.Option("--split", rich_help_panel=DATA_PANEL, help="Hub split: test or train \\[default: test]; not for files.")] = None,
    sample_size: Annotated[Optional[int], typer.Option("--sample-size", "-n", rich_help_panel=DATA_PANEL, help="Rows to run \\[default: all]; larger than the dataset clamps to all.")] = None,
    limit: LimitOpt = None,
    seed: Annotated[int, typer.Option("--seed", rich_help_panel=DATA_PANEL, help="Sampling seed.")] = 0,
    human_only: Annotated[bool, typer.Option("--human-only", metavar="", rich_help_panel=DATA_PANEL, help="Only human-annotated rows.")] = False,
    stratify: Annotated[bool, typer.Option("--stratify", metavar="", rich_help_panel=DATA_PANEL, help="Oversample positives to half the sample; metrics are re-weighted.")] = False,
    text_column: TextColumnOpt = None,
    label_column: LabelColumnOpt = None,
    backends: Annotated[str, typer.Option("--backends", rich_help_panel=ARMS_PANEL, help="One arm (scored against the human labels) or more (compared with the first): name or name\\[key=value;…], e.g. api,local, or three arms: local, api\\[provider=groq], api\\[label=sg;model=…] (written without the spaces; quote the brackets in a shell) (keys include model, policy, reasoning_effort, max_new_tokens, label).")] = "api,local",
    reference: Annotated[Optional[str], typer.Option("--reference", rich_help_panel=ARMS_PANEL, help="The arm the others are judged against (its label or spec) \\[default: the first].")] = None,
    repeats: Annotated[int, typer.Option("--repeats", min=1, rich_help_panel=ARMS_PANEL, help="Answers per arm and example; 2 or more measures each arm's noise floor (agreement with itself).")] = 1,
    margin: Annotated[float, typer.Option("--margin", min=0.0, max=1.0, rich_help_panel=ARMS_PANEL, help="Equivalence margin: an arm is equivalent when its disagreement with the reference exceeds the reference's own by less than this.")] = 0.02,
    max_new_tokens: MaxNewTokensOpt = None,
    temperature: TemperatureOpt = None,
    top_p: TopPOpt = None,
    reasoning_effort: ReasoningOpt = None,
    render_date: RenderDateOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    batch_size: Annotated[str, typer.Option("--batch-size", rich_help_panel=LOCAL_PANEL, help="local: auto (memory-aware) or N.")] = "auto",
    strategy: Annotated[str, typer.Option("--strategy", rich_help_panel=LOCAL_PANEL, help="local: prefix (batched + shared policy-prefix KV), batched, or naive (one generate per example; the reference).")] = "prefix",
    base_url: BaseUrlOpt = None,
    served_model: ServedModelOpt = None,
    provider: ProviderOpt = "auto",
    token: TokenOpt = None,
    api_server: ApiServerOpt = "auto",
    concurrency: ConcurrencyOpt = None,
    timeout: TimeoutOpt = None,
    max_retries: RetriesOpt = 4,
    threads: ThreadsOpt = None,
    logprobs: Annotated[Optional[int], typer.Option("--logprobs", rich_help_panel=API_PANEL, help=(
        "every api and local arm records each generated token's log-probability and its top K alternatives "
        "→ tokens.parquet (api: logprobs: true, top_logprobs: K; a server that refuses is asked again without them "
        "and the arm marked 'no log-probabilities'; local: from its own logits). Arm key: logprobs=K. Part of the "
        "cache key and the run id."))] = None,
    rate_limit_wait: Annotated[float, typer.Option("--rate-limit-wait", min=0.0, rich_help_panel=API_PANEL, help="api: seconds a request keeps waiting out HTTP 429s.")] = 300.0,
    threshold: ThresholdOpt = 0.95,
    min_labelled: MinLabelledOpt = 0.5,
    unparsed_as: UnparsedOpt = "none",
    output_dir: OutputDirOpt = Path("outputs/backend_comparison"),
    run_id: RunIdOpt = None,
    chunk_size: Annotated[int, typer.Option("--chunk-size", rich_help_panel=OUTPUT_PANEL, help="Rows per call to a backend that batches for itself, and per turn of arms that take turns (an api arm gets at least two rounds of its concurrency per call).")] = 16,
    no_margin: Annotated[bool, typer.Option("--no-margin", metavar="", rich_help_panel=ARMS_PANEL, help="Skip the local model's scoring of label disagreements (margins) and of where texts part (next-token log p).")] = False,
    cache_dir: CacheDirOpt = None,
    no_cache: NoCacheOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", metavar="", rich_help_panel=OUTPUT_PANEL, help=(
        "Start without asking: in a terminal, a run estimated at 10 min or more (or with 200+ requests to arms "
        "never measured here) shows its plan and asks first."))] = False,
) -> None:
    """Run backends on a ToxicChat sample: agreement, causes of disagreement, accuracy (one arm: its accuracy).

    Exit 0 pass · 1 fail · 2 bad input · 3 inconclusive (too few labels) · 4 backend error or incomplete run · 130 interrupted."""
    from toxcmp.backends import BackendConfig
    from toxcmp.run.config import CompareConfig
    from toxcmp.run.orchestrate import run_compare
    from toxcmp.config import GenerationConfig
    from toxcmp.report.console import render_report
    from toxcmp.report.live import LineObserver, LiveObserver

    cfg = CompareConfig(
        policy=policy, model=model, revision=revision, dataset=dataset, version=version, split=split,
        sample_size=sample_size, limit=limit, text_column=text_column, label_column=label_column, seed=seed,
        human_only=human_only, stratify=stratify, backends=backends,
        generation=GenerationConfig.from_defaults(max_new_tokens=max_new_tokens, reasoning_effort=reasoning_effort,
                                                  temperature=temperature, top_p=top_p),
        backend=BackendConfig(device=device, dtype=dtype, batch_size=batch_size, strategy=strategy, base_url=base_url, served_model=served_model, provider=provider,
                              token=token, concurrency=concurrency, timeout_s=timeout, max_retries=max_retries,
                              rate_limit_wait_s=rate_limit_wait, threads=threads, logprobs=logprobs,
                              api_server=None if api_server in ("", "none") else api_server,
                              cache_dir=cache_dir or default_cache_dir()),
        threshold=threshold, min_labelled=min_labelled, reference=reference, repeats=repeats, margin=margin,
        output_dir=output_dir, run_id=run_id, chunk_size=chunk_size, unparsed_as=unparsed_as,
        margins=not no_margin, use_cache=not no_cache, command=command_line(ctx), render_date=render_date)
    if as_json or quiet:
        observer = LineObserver(err_console, quiet=True)
    elif console.is_terminal:
        observer = LiveObserver(console)
    else:
        observer = LineObserver(console)
    from toxcmp.errors import Declined

    try:
        result = run_compare(cfg, observer, confirm=plan_prompt(quiet=quiet or as_json, ask=not yes))
    except Declined:
        err_console.print("declined: nothing ran, no request was sent and no file written (exit 130)")
        raise typer.Exit(Declined.exit_code)
    if as_json:
        print_json(dict(result.summary, run_dir=str(result.run_dir)))
    else:
        render_report(result.summary, console)
        console.print(f"results: {result.run_dir}", soft_wrap=True, highlight=False)
        console.print(f"report: {result.run_dir / 'report.html'}", soft_wrap=True, highlight=False)
    if result.status != "complete" or result.summary.get("n_errors"):
        err_console.print(f"partial run ({result.reason or str(result.summary['n_errors']) + ' example(s) with backend errors'}); "
                          "finished rows are saved and every response is cached: rerun the same command to resume",
                          soft_wrap=True)
    raise typer.Exit(result.exit_code)


def plan_prompt(quiet: bool, ask: bool):
    """The run's plan on stderr (unless quiet); in a terminal, a long run asks before it starts."""

    def confirm(work) -> bool:
        import sys

        from toxcmp.run.planning import plan_lines

        if not quiet:
            for line in plan_lines(work):
                err_console.print(line, soft_wrap=True, highlight=False)
        if not (ask and work.is_long and sys.stdin.isatty() and err_console.is_terminal):
            return True
        try:
            return typer.confirm("start it?", default=False, err=True)
        except typer.Abort:  # Ctrl-D or Ctrl-C at the question: a no
            return False

    return confirm


@friendly_errors
def rescore(
    paths: Annotated[List[Path], typer.Argument(help="A run dir, a results.parquet, a study backend_comparison parquet, or two study api_* parquets.")],
    policy: Annotated[Optional[str], typer.Option("--policy", "-p", help="Policy to parse with \\[default: the run's].")] = None,
    unparsed_as: UnparsedOpt = "none",
    threshold: ThresholdOpt = 0.95,
    min_labelled: MinLabelledOpt = 0.5,
    output_dir: Annotated[Optional[Path], typer.Option("--output-dir", rich_help_panel=OUTPUT_PANEL, help="Where the rescored run dir goes \\[default: next to the source].")] = None,
    run_id: RunIdOpt = None,
    no_write: Annotated[bool, typer.Option("--no-write", metavar="", rich_help_panel=OUTPUT_PANEL, help="Report only; write no files.")] = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Recompute parsing, metrics and the report from recorded outputs, without calling any model."""
    from toxcmp.run.rescore import rescore as run
    from toxcmp.analysis.verdict import EXIT_CODES
    from toxcmp.report.console import render_report

    from toxcmp.run.rescore import next_to_source

    target = None if no_write else (output_dir or next_to_source(paths[0]))
    result = run(paths, policy, unparsed_as, threshold, target, run_id, min_labelled)
    if as_json:
        print_json(dict(result.summary, run_dir=str(result.run_dir) if result.run_dir else None))
    else:
        for note in [] if quiet else result.summary["metadata"].get("rescore_notes", []):
            err_console.print(f"note: {note}", soft_wrap=True)
        render_report(result.summary, console)
        if result.run_dir:
            console.print(f"rescored results: {result.run_dir}", soft_wrap=True, highlight=False)
            console.print(f"report: {result.run_dir / 'report.html'}", soft_wrap=True, highlight=False)
    raise typer.Exit(EXIT_CODES[result.summary["verdict"]])
