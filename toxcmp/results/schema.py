"""What a run writes, typed and versioned: the parquet column schemas, the file names, and the summary's records.

Schema versions (written as `schema_version` in summary.json and as `toxcmp_schema_version` in each parquet
file's key-value metadata; a file without it is version 1):

1. the files as first written: top-level summary keys describe the first comparison (the reference against the
   first other arm), `comparisons` every arm's; no `schema_version`, no `headline`.
2. the same files and keys, plus `schema_version` and `headline`, which names the comparison the top-level
   statistics describe. Nothing was removed: a version-1 reader reads version-2 files.
"""

from __future__ import annotations

from typing import Any, Mapping, TypedDict

import polars as pl

from toxcmp.analysis.scoring import SIDES
from toxcmp.errors import UsageError

SCHEMA_VERSION = 2
SCHEMA_KEY = "schema_version"  # in summary.json
PARQUET_SCHEMA_KEY = "toxcmp_schema_version"  # in the parquet files' key-value metadata (a string)
PARQUET_META_KEY = "toxcmp"  # provenance, JSON
PARQUET_SUMMARY_KEY = "toxcmp_summary"  # the summary, JSON

RESULTS_FILE = "results.parquet"  # tidy: one row per (example, arm, repeat)
PAIRS_FILE = "pairs.parquet"  # every arm against the reference, two-sided a_*/b_* columns
SUMMARY_FILE = "summary.json"
TOKENS_FILE = "tokens.parquet"  # one row per (example, arm, repeat, token position) of the arms that sent log p
TOKENS_SCHEMA: dict[str, Any] = {"example_id": pl.String, "arm": pl.String, "repeat": pl.Int32, "position": pl.Int32,
                                 "part": pl.String, "token": pl.String, "logprob": pl.Float64,
                                 "token_id": pl.Int64,  # an in-process arm's own id of the token (None off a wire)
                                 "top_tokens": pl.List(pl.String), "top_logprobs": pl.List(pl.Float64),
                                 # the local model's log p of the same characters (None: not scored, or not
                                 # aligned), whether this token was its top-1, the share of top-K alternatives shared
                                 "local_logprob": pl.Float64, "local_top1": pl.Boolean, "top_overlap": pl.Float64}

SIDE_SCHEMA = {"raw": pl.String, "content": pl.String, "reasoning": pl.String, "binary": pl.Int8, "fine": pl.String,
               "parse_ok": pl.Boolean, "parse_error": pl.String, "parse_failure": pl.String, "refusal": pl.Boolean,
               "outcome": pl.String, "latency_s": pl.Float64, "cached": pl.Boolean, "error": pl.String,
               "served_by": pl.String, "prompt_hash": pl.String, "finish_reason": pl.String, "retries": pl.Int32,
               "backend": pl.String, "batch_size": pl.Int32, "batch_latency_s": pl.Float64,
               "reasoning_source": pl.String}
# the backend's usage as it reported it (None: not reported); toxcmp.analysis.prompt_tokens
SIDE_SCHEMA |= {"prompt_tokens": pl.Int32, "completion_tokens": pl.Int32}
# parameters the server refused (HTTP 400/422) and the answer was asked again without, comma-joined; None: none
SIDE_SCHEMA |= {"rejected_parameters": pl.String}
# api: seconds the request waited for an in-flight slot (latency_s is its own time on the wire); None: not reported
SIDE_SCHEMA |= {"queue_s": pl.Float64}
# token log-probabilities: the top K asked for (None: not asked) and how many tokens came with one (None: none
# sent — not asked, refused, or the server does not send them); the tokens themselves are in tokens.parquet
SIDE_SCHEMA |= {"logprobs_asked": pl.Int32, "logprob_tokens": pl.Int32}
EXAMPLE_SCHEMA = {"example_id": pl.String, "text": pl.String, "toxicity": pl.Int8, "jailbreaking": pl.Int8,
                  "human_annotation": pl.Boolean, "weight": pl.Float64}
TIDY_SCHEMA: dict[str, Any] = {
    **EXAMPLE_SCHEMA, "arm": pl.String, "repeat": pl.Int32,
    **{k: t for k, t in SIDE_SCHEMA.items() if k not in ("backend", "reasoning_source")}, "reasoning_source": pl.String,
}
# toxcmp's own render of the row's request, counted with the model's tokenizer, and the render variants whose count
# equals the reported one (toxcmp.analysis.prompt_tokens)
TIDY_SCHEMA |= {"own_prompt_tokens": pl.Int32, "prompt_variants": pl.String}
# the probability of the policy's violating labels where the answer writes its label (repeat 0; None: not measured,
# toxcmp.analysis.label_probs)
TIDY_SCHEMA |= {"p_violating": pl.Float64}
ROW_SCHEMA: dict[str, Any] = {
    **EXAMPLE_SCHEMA,
    **{f"{p}_{k}": t for p in SIDES for k, t in SIDE_SCHEMA.items()},
    "binary_match": pl.Boolean, "fine_match": pl.Boolean, "content_similarity": pl.Float64,
    "reasoning_similarity": pl.Float64, "content_identical": pl.Boolean, "raw_identical": pl.Boolean,
    "cause": pl.String, "margin_nats": pl.Float64, "margin_kind": pl.String,
    "diverge_char": pl.Int64, "a_continuation": pl.String, "b_continuation": pl.String, "diverge_token": pl.Int64,
    "a_next_token": pl.String, "b_next_token": pl.String, "a_next_logprob": pl.Float64, "b_next_logprob": pl.Float64,
    "divergence_kind": pl.String,
}
PAIR_SCHEMA: dict[str, Any] = {**ROW_SCHEMA, "arm": pl.String, "reference": pl.String}


# -- the summary's records ---------------------------------------------------------------------------------------

class Proportion(TypedDict):
    value: float | None
    low: float | None
    high: float | None
    successes: float
    n: int


class Matrix(TypedDict):
    labels: list[str]
    cells: list[list[Any]]


class Headline(TypedDict):
    """Which comparison the summary's top-level statistics (`backends` a/b, agreement, κ, McNemar, causes, …)
    describe. The top-level `verdict` is the run's: with three or more arms, its weakest arm's."""

    arm: str  # side b, and its key in `comparisons`
    reference: str  # side a
    why: str


HEADLINE_WHY = ("the first arm against the reference: the top-level statistics are this comparison's; "
                "`comparisons` holds every arm's; the top-level verdict is the run's (its weakest arm's)")


class Equivalence(TypedDict, total=False):
    n: int
    disagreement: float | None
    floor_disagreement: float | None
    floor_measured: bool
    difference: float | None
    ci90: list[float | None]
    margin: float
    p_equivalent: float | None
    p_different: float | None
    p_equivalent_holm: float | None
    p_different_holm: float | None
    verdict: str  # equivalent, different, inconclusive
    why: str


class Comparison(TypedDict, total=False):
    """One arm against the reference (`summary["comparisons"][arm]`)."""

    verdict: str
    verdict_reason: str
    binary_agreement: Proportion
    binary_agreement_both_parsed: Proportion
    cohen_kappa: dict[str, Any]
    content_identical: Proportion
    mcnemar: dict[str, Any]  # only_a_correct, only_b_correct, p_value, p_holm
    accuracy: dict[str, Proportion]  # by arm label: the reference's and the arm's
    accuracy_difference: dict[str, Any]
    causes: dict[str, int]
    transitions: Matrix  # fine-grained categories, reference (rows) → arm (columns)
    divergence: dict[str, Any]
    equivalence: Equivalence


class Summary(TypedDict, total=False):
    """The keys every reader may rely on (summary.json has more: the headline comparison's statistics)."""

    schema_version: int
    headline: Headline | None
    reference: str
    comparisons: dict[str, Comparison]
    verdict: str
    verdict_reason: str
    passed: bool
    status: str
    n: int
    backends: dict[str, dict[str, Any]]  # "a": the reference, "b": the headline arm
    metadata: dict[str, Any]


def headline_of(summary: Mapping[str, Any]) -> Headline | None:
    """The summary's headline comparison: as written (version ≥ 2), else the one version 1 put at the top level
    (the first comparison; for rows scored without arms, side b against side a)."""
    written = summary.get("headline")
    if written:
        return written  # type: ignore[return-value]
    backends = summary.get("backends") or {}
    arm = next(iter(summary.get("comparisons") or {}), None) or (backends.get("b") or {}).get("label")
    reference = summary.get("reference") or (backends.get("a") or {}).get("label")
    if arm is None or reference is None:
        return None
    return Headline(arm=arm, reference=reference, why=HEADLINE_WHY)


def stamped(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The summary as this version writes it: `schema_version` first, then `headline`, then the rest."""
    rest = {k: v for k, v in summary.items() if k not in (SCHEMA_KEY, "headline")}
    return {SCHEMA_KEY: SCHEMA_VERSION, "headline": headline_of(summary), **rest}


def schema_version_of(summary: Mapping[str, Any] | None = None, parquet_meta: Mapping[str, str] | None = None,
                      source: Any = None) -> int:
    """The schema version a summary or a parquet file's metadata says it has; 1 when it says none. A version
    newer than this toxcmp's is refused (its files may mean something this reader does not know)."""
    raw = (summary or {}).get(SCHEMA_KEY) if summary is not None else (parquet_meta or {}).get(PARQUET_SCHEMA_KEY)
    if raw is None:
        return 1
    try:
        version = int(raw)
    except (TypeError, ValueError):
        raise UsageError(f"{source or 'results'}: schema version {raw!r} is not a number", "rescore the source run") from None
    if version > SCHEMA_VERSION:
        raise UsageError(f"{source or 'results'} was written with results schema {version}; this toxcmp reads up to "
                         f"{SCHEMA_VERSION}", "upgrade toxcmp to read it")
    return version


def upgraded(summary: Mapping[str, Any], source: Any = None) -> dict[str, Any]:
    """A summary of any known version in today's shape: `schema_version` says what the file was, `headline` is
    filled in for version 1 (the first comparison, which is what its top level describes)."""
    version = schema_version_of(summary, source=source)
    out = stamped(summary)
    out[SCHEMA_KEY] = version
    return out
