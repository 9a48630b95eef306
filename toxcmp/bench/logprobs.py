"""`toxcmp bench logprobs`: what log-probability parity costs beside generating the rows (issue 24), in one
process on the same rows: the local backend's default strategy generating them (with and without recording its own
token log p), then teacher-forced scoring of those answers under the same model, then their label probabilities.
Ratios are against the plain generation run here; the goal is scoring ≤ 25 % of it. As in `compare --logprobs K`,
the run recording log p keeps each prompt's tail KV (toxcmp.backends.local_tails), so scoring runs only the scored
tokens where it holds them (`tails_reused`); keeping them is inside `generate_with_logprobs_s`. Each timed generation
computes its own shared prefix; scoring finds the one the recording run computed, as compare's scoring phase does
(toxcmp.backends.local_prefixes; `prefix_tokens_found`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from toxcmp.bench.result import BenchResult
from toxcmp.config import GenerationConfig

GOAL = 0.25


@dataclass(frozen=True)
class LogprobBenchResult(BenchResult):
    rows: int
    max_new_tokens: int
    policy: str
    strategy: str
    threads: int
    generate_s: float  # the default strategy, no log p recorded: the baseline
    generate_with_logprobs_s: float  # the same, recording each token's log p and top 5
    teacher_forcing_s: float  # every answer's tokens scored under the model (one forward pass each)
    label_probs_s: float | None  # every labelled answer's label probability (one forward pass each); None: no label
    label_rows: int  # answers that wrote a label where it can be read (SmolLM2 seldom does)
    scored_tokens: int
    tails_reused: int  # rows scored over the tail KV the recording run kept (the rest ran their whole tail again)
    prefix_tokens_found: int  # the shared prefix the scoring found instead of prefilling it (0: it computed its own)
    recording_ratio: float  # generate_with_logprobs_s / generate_s
    teacher_forcing_ratio: float  # teacher_forcing_s / generate_s
    label_probs_ratio: float | None
    goal: float = GOAL

    @property
    def met(self) -> bool:
        return self.teacher_forcing_ratio <= self.goal

    def to_dict(self) -> dict:
        return {**super().to_dict(), "met": self.met}


def bench_logprobs(csv_path, rows: int = 32, max_new_tokens: int = 32, policy: str = "toxic_chat_claude_1",
                   model: str = "smollm2-135m", log=print) -> LogprobBenchResult:
    import polars as pl
    import torch

    from toxcmp.backends import BackendConfig, local_prefixes
    from toxcmp.backends.local import LocalBackend, LocalOptions
    from toxcmp.domain.models import resolve_model
    from toxcmp.domain.policies import load_policy
    from toxcmp.domain.prompting import build_request
    from toxcmp.run.arms import Arm
    from toxcmp.run.label_scoring import local_label_probs
    from toxcmp.run.specs import BackendSpec
    from toxcmp.run.teacher_forcing import score_texts

    texts = pl.read_csv(csv_path, infer_schema=False)["user_input"].head(rows).to_list()
    spec, loaded_policy = resolve_model(model), load_policy(policy)
    generation = GenerationConfig.from_defaults(max_new_tokens=max_new_tokens)
    requests = [build_request(loaded_policy, t, spec, generation) for t in texts]
    options = LocalOptions.build(BackendConfig())
    LocalBackend(options).load(spec)  # loaded once per process; not timed

    def timed(what, run):
        started = time.perf_counter()
        out = run()
        elapsed = time.perf_counter() - started
        log(f"{what:34s} {elapsed:7.2f} s")
        return out, elapsed

    def generate(backend):
        local_prefixes.forget()  # each generation computes its own shared prefix
        return backend.generate(requests)

    plain, generate_s = timed(f"generate ({options.strategy})", lambda: generate(LocalBackend(options)))
    recorded, with_logprobs_s = timed("generate, recording log p (top 5)",
                                      lambda: generate(LocalBackend(options.with_values(logprobs=5))))
    errors = [r.error for r in [*plain, *recorded] if r.error]
    if errors:
        raise RuntimeError(f"{len(errors)} example(s) failed, first: {errors[0]}")
    # a fresh backend, as compare's scoring phase builds: it finds the shared prefix the recording run computed
    # (toxcmp.backends.local_prefixes), as in compare, and the tails that run kept
    scorer = LocalBackend(options)

    def teacher_force():
        return score_texts(scorer, [(request, r.raw_text, None) for request, r in zip(requests, plain)])

    scores, forcing_s = timed("teacher-forced scoring", teacher_force)
    arm = Arm(BackendSpec("local", "local"), spec, loaded_policy, generation, options)
    examples = [{"example_id": str(k)} for k in range(len(requests))]
    rows_ = [{"example_id": str(k), "raw": r.raw_text} for k, r in enumerate(plain)]
    (label_p, _), label_s = timed("label probabilities", lambda: local_label_probs(arm, rows_, requests, examples))
    measured = bool(label_p)  # with no label position found nothing was scored: no figure
    return LogprobBenchResult(
        rows=len(requests), max_new_tokens=max_new_tokens, policy=policy, strategy=options.strategy,
        threads=torch.get_num_threads(), generate_s=round(generate_s, 3),
        generate_with_logprobs_s=round(with_logprobs_s, 3), teacher_forcing_s=round(forcing_s, 3),
        label_probs_s=round(label_s, 3) if measured else None, label_rows=len(label_p), scored_tokens=sum(len(s.logprobs) for s in scores),
        tails_reused=scorer.stats["tails_reused"], prefix_tokens_found=scorer.stats["prefix_tokens_found"],
        recording_ratio=round(with_logprobs_s / generate_s, 3), teacher_forcing_ratio=round(forcing_s / generate_s, 3),
        label_probs_ratio=round(label_s / generate_s, 3) if measured else None)
