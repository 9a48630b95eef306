"""`toxcmp bench logprobs`: what log-probability parity costs beside generating the rows (issue 24), in one
process on the same rows: the local backend's default strategy generating them (with and without recording its own
token log p), then teacher-forced scoring under the same model of what compare scores offline — another engine's
answers to the same rows (llama-cpp-python in process, on the bundled GGUF: `local` against `api --api-server
llamacpp`) — then the local answers' label probabilities. Ratios are against the plain generation run here; the
goal is scoring ≤ 25 % of it. As in `compare --logprobs K`, the run recording log p keeps each prompt's KV and its
new tokens' scores (toxcmp.backends.local_tails), so scoring runs only the tokens of each answer from the first
one the local generation did not write (`tokens_reused`: the rest), over the KV it kept (`tails_reused`); keeping
them is inside `generate_with_logprobs_s`. The same answers are scored again with every token forced
(`forced_every_token_s`): what scoring costs an answer that shares no token with the local one. Each timed
generation computes its own shared prefix; scoring finds the one the recording run computed, as compare's scoring
phase does (toxcmp.backends.local_prefixes; `prefix_tokens_found`)."""

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
    scored_answers: str  # whose answers were scored
    teacher_forcing_s: float  # every scored answer's tokens scored under the model
    forced_every_token_s: float  # the same, no token read from the generation: every one forced
    answers_identical: int  # scored answers whose text is the local generation's
    label_probs_s: float | None  # every labelled answer's label probability (one forward pass each); None: no label
    label_rows: int  # answers that wrote a label where it can be read (SmolLM2 seldom does)
    scored_tokens: int
    tokens_reused: int  # scored tokens read from what the recording run recorded (the answer began as it did)
    tails_reused: int  # rows forced over the KV the recording run kept (the rest ran their whole tail again)
    prefix_tokens_found: int  # the shared prefix the scoring found instead of prefilling it (0: it computed its own)
    recording_ratio: float  # generate_with_logprobs_s / generate_s
    teacher_forcing_ratio: float  # teacher_forcing_s / generate_s
    forced_every_token_ratio: float  # forced_every_token_s / generate_s
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
    from toxcmp.backends.server import gguf_of, llamacpp_version
    from toxcmp.bench.engines import llamacpp_in_process
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
    llamacpp_version()  # llama-cpp-python and a GGUF for the model, or a one-line error saying what to install
    engine = llamacpp_in_process(str(gguf_of(spec)), torch.get_num_threads())
    try:
        answers = [a.raw_text for a in engine.generate(requests)]  # not timed: another arm's run
    finally:
        engine.close()
    # a fresh backend, as compare's scoring phase builds: it finds the shared prefix the recording run computed
    # (toxcmp.backends.local_prefixes), as in compare, and what that run kept
    scorer = LocalBackend(options)
    items = [(request, text, None) for request, text in zip(requests, answers)]
    scores, forcing_s = timed("teacher-forced scoring (llama.cpp)", lambda: score_texts(scorer, items))
    reused, tails = scorer.stats["tokens_reused"], scorer.stats["tails_reused"]
    _, every_s = timed("  the same, every token forced", lambda: score_texts(scorer, items, reuse=False))
    arm = Arm(BackendSpec("local", "local"), spec, loaded_policy, generation, options)
    examples = [{"example_id": str(k)} for k in range(len(requests))]
    rows_ = [{"example_id": str(k), "raw": r.raw_text} for k, r in enumerate(plain)]
    (label_p, _), label_s = timed("label probabilities", lambda: local_label_probs(arm, rows_, requests, examples))
    measured = bool(label_p)  # with no label position found nothing was scored: no figure
    return LogprobBenchResult(
        rows=len(requests), max_new_tokens=max_new_tokens, policy=policy, strategy=options.strategy,
        threads=torch.get_num_threads(), generate_s=round(generate_s, 3),
        generate_with_logprobs_s=round(with_logprobs_s, 3), scored_answers="llama-cpp-python in process",
        teacher_forcing_s=round(forcing_s, 3), forced_every_token_s=round(every_s, 3),
        answers_identical=sum(a == r.raw_text for a, r in zip(answers, plain)),
        label_probs_s=round(label_s, 3) if measured else None, label_rows=len(label_p),
        scored_tokens=sum(len(s.logprobs) for s in scores),
        tokens_reused=reused, tails_reused=tails, prefix_tokens_found=scorer.stats["prefix_tokens_found"],
        recording_ratio=round(with_logprobs_s / generate_s, 3), teacher_forcing_ratio=round(forcing_s / generate_s, 3),
        forced_every_token_ratio=round(every_s / generate_s, 3),
        label_probs_ratio=round(label_s / generate_s, 3) if measured else None)
