"""ToxicChat rows from the Hub or a file → a validated frame; sampling with stratification weights.

Every source ends in `normalize` (the same validation for the Hub, a Hub-layout directory and a plain file):
columns `example_id, text, toxicity, jailbreaking, human_annotation`, toxicity strictly 0/1.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from toxcmp.errors import UsageError

DEFAULT_DATASET = "lmsys/toxic-chat"
VERSIONS = ("toxicchat0124", "toxicchat1123")
SPLITS = ("test", "train")
FILE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
REQUIRED = ("user_input", "toxicity")
STRATIFIED_POSITIVE_SHARE = 0.5


@dataclass(frozen=True)
class DatasetInfo:
    source: str  # Hub id, directory or file path
    version: str | None
    split: str | None
    rows: int
    content_sha256: str  # over (example_id, text, toxicity) of the loaded rows, in order
    note: str | None = None  # said once to the user (e.g. the offline fallback was used)


@dataclass(frozen=True)
class Sample:
    frame: pl.DataFrame  # normalized columns + `weight`
    info: DatasetInfo
    strategy: str  # "all", "random" or "stratified"
    seed: int
    population: int
    note: str | None = None  # a documented clamp, e.g. sample size larger than the dataset


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_file_source(dataset: str) -> bool:
    return Path(dataset).suffix.lower() in FILE_SUFFIXES


def check_source(dataset: str) -> None:
    """A name that is neither a file, an existing directory nor shaped like a Hub id (owner/name) is a typo'd path."""
    if is_file_source(dataset) or Path(dataset).is_dir():
        return
    parent = Path(dataset).parent
    looks_local = parent != Path(".") and parent.is_dir()  # data/mydata next to an existing data/ is a path
    if not _HUB_ID.match(dataset) or dataset.startswith((".", "/", "~")) or looks_local:
        raise UsageError(f"dataset {dataset!r} is not a file, a directory or a Hub id",
                         "pass an existing .csv/.parquet/.jsonl file or directory, or a Hub id such as lmsys/toxic-chat")


BUNDLED_TEST_SPLIT = "toxicchat0124_test.parquet"  # configs/samples/: the human-annotated test split, CC BY-NC 4.0


def bundled_test_split() -> Path:
    from toxcmp.config import configs_dir

    return configs_dir() / "samples" / BUNDLED_TEST_SPLIT


def hub_reachable(timeout_s: float = 2.0) -> bool:
    """False at once under HF_HUB_OFFLINE; else one TCP connect to the Hub (no retries, no waiting on them)."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((endpoint.hostname or "huggingface.co", endpoint.port or 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def load(dataset: str = DEFAULT_DATASET, version: str = "toxicchat0124", split: str = "test") -> tuple[pl.DataFrame, DatasetInfo]:
    note = None
    check_source(dataset)
    if is_file_source(dataset):
        frame = read_file(Path(dataset))
        version_used, split_used = None, None
    elif (dataset, version, split) == (DEFAULT_DATASET, "toxicchat0124", "test") and not hub_reachable():
        path = bundled_test_split()
        frame = read_file(path)
        note = (f"the Hugging Face Hub cannot be reached: using the bundled copy of {DEFAULT_DATASET} toxicchat0124 "
                f"test ({path.name}, human-annotated rows, CC BY-NC 4.0)")
        dataset, version_used, split_used = f"bundled:{path.name}", version, split
    else:
        frame = read_hub(dataset, version, split)
        version_used, split_used = version, split
    frame = normalize(frame, dataset)
    return frame, DatasetInfo(dataset, version_used, split_used, frame.height, content_hash(frame), note)


def read_file(path: Path) -> pl.DataFrame:
    kind = FILE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise UsageError(f"unsupported dataset file type {path.suffix!r}", "use .csv, .parquet or .jsonl")
    if not path.is_file():
        raise UsageError(f"dataset file not found: {path}", "check the path, or pass a Hub id such as lmsys/toxic-chat")
    try:
        if kind == "csv":
            return pl.read_csv(path, infer_schema=False, encoding="utf8-lossy")  # all strings; typed in normalize
        if kind == "parquet":
            return pl.read_parquet(path)
        return pl.read_ndjson(path, infer_schema_length=None)
    except Exception as exc:  # polars raises many error types for malformed files
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot read {path} as {kind}: {first}", "check the file is valid " + kind) from None


def read_hub(dataset: str, version: str, split: str) -> pl.DataFrame:
    """`datasets.load_dataset(dataset, version, split=split)`: a Hub id, or a local directory laid out like one."""
    if split not in SPLITS and not Path(dataset).is_dir():
        raise UsageError(f"unknown split {split!r}", f"use one of: {', '.join(SPLITS)}")
    try:
        import datasets
    except ImportError:
        raise UsageError("the Hub dataset path needs the 'datasets' package",
                         "pip install 'toxcmp[data]', or pass --dataset PATH (csv, parquet or jsonl)") from None
    try:
        ds = datasets.load_dataset(dataset, version, split=split)
    except Exception as exc:  # offline, unknown config, gated repo…
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot load {dataset} ({version}, {split}): {first}",
                         "check --version/--split, your network or HF_HUB_OFFLINE, "
                         "or pass --dataset PATH (csv, parquet or jsonl)") from None
    return pl.from_arrow(ds.data.table) if hasattr(ds, "data") else pl.DataFrame(ds.to_dict())


def _as_binary(frame: pl.DataFrame, column: str, source: str, required: bool) -> pl.Series | None:
    if column not in frame.columns:
        return None
    raw = frame[column]
    as_text = raw.cast(pl.String, strict=False).str.strip_chars().str.to_lowercase()
    mapped = as_text.replace_strict({"0": 0, "1": 1, "0.0": 0, "1.0": 1, "true": 1, "false": 0}, default=None,
                                    return_dtype=pl.Int8)
    bad = mapped.is_null()
    if bad.any():
        examples = ", ".join(repr(v) for v in raw.filter(bad).head(3).to_list())
        if required:
            raise UsageError(f"{source}: column {column!r} must be 0/1; {int(bad.sum())} row(s) are not ({examples})",
                             "fix or drop those rows")
        mapped = mapped.fill_null(0)
    return mapped


# Column names of the recorded study's comparison files, read as the dataset they were run on.
STUDY_COLUMNS = {"text": "user_input", "ground_truth": "toxicity"}


def normalize(frame: pl.DataFrame, source: str = "dataset") -> pl.DataFrame:
    frame = frame.rename({old: new for old, new in STUDY_COLUMNS.items()
                          if old in frame.columns and new not in frame.columns})
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise UsageError(f"{source} is missing column(s) {', '.join(missing)} (has: {', '.join(frame.columns[:12]) or 'none'})",
                         "a dataset needs user_input and toxicity; conv_id and jailbreaking are used when present")
    if frame.height == 0:
        raise UsageError(f"{source} has no rows", "pick a non-empty file or split")
    text = frame["user_input"].cast(pl.String, strict=False).fill_null("")
    toxicity = _as_binary(frame, "toxicity", source, required=True)
    jailbreaking = _as_binary(frame, "jailbreaking", source, required=False)
    if "conv_id" in frame.columns:
        ids = frame["conv_id"].cast(pl.String, strict=False)
    else:
        ids = pl.Series([None] * frame.height, dtype=pl.String)
    ids = pl.Series([i if i else "sha256:" + hashlib.sha256(t.encode("utf-8", "surrogatepass")).hexdigest()[:32]
                     for i, t in zip(ids.to_list(), text.to_list())], dtype=pl.String)
    if "human_annotation" in frame.columns:
        human = _as_binary(frame, "human_annotation", source, required=False).cast(pl.Boolean)
    else:
        human = pl.Series([None] * frame.height, dtype=pl.Boolean)  # unknown: --human-only refuses such a file
    out = pl.DataFrame({"example_id": ids, "text": text, "toxicity": toxicity,
                        "jailbreaking": jailbreaking if jailbreaking is not None else pl.Series([None] * frame.height, dtype=pl.Int8),
                        "human_annotation": human})
    dupes = out["example_id"].is_duplicated()
    if dupes.any():  # identical texts without conv_id, or repeated conv_ids: keep the first
        out = out.unique(subset="example_id", keep="first", maintain_order=True)
    return out


def content_hash(frame: pl.DataFrame) -> str:
    digest = hashlib.sha256()
    for i, t, y in frame.select("example_id", "text", "toxicity").iter_rows():
        digest.update(f"{i}\x1f{t}\x1f{y}\x1e".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def sample(frame: pl.DataFrame, info: DatasetInfo, size: int | None = None, seed: int = 0,
           human_only: bool = False, stratify: bool = False) -> Sample:
    """Rows to run, with a `weight` column such that weighted metrics estimate the population's.

    Stratified sampling draws `STRATIFIED_POSITIVE_SHARE` of the sample from positives (toxicity = 1); each
    row's weight is its stratum's population share over its sample share.
    """
    if human_only:
        if frame["human_annotation"].null_count() == frame.height:
            raise UsageError(f"{info.source} has no human_annotation column", "drop --human-only")
        frame = frame.filter(pl.col("human_annotation"))
        if frame.height == 0:
            raise UsageError("no human-annotated rows in this dataset", "drop --human-only")
    population = frame.height
    if size is not None and size <= 0:
        raise UsageError(f"--sample-size must be positive (got {size})", "omit it to use every row")
    note = None
    if size is not None and size > population:
        note = f"--sample-size {size} is larger than the dataset ({population} rows); using all {population}"
        size = None
    if size is None:
        return Sample(frame.with_columns(pl.lit(1.0).alias("weight")), info, "all", seed, population, note)
    if not stratify:
        picked = frame.sample(n=size, seed=seed, shuffle=True)
        return Sample(picked.with_columns(pl.lit(1.0).alias("weight")), info, "random", seed, population, note)
    positives = frame.filter(pl.col("toxicity") == 1)
    negatives = frame.filter(pl.col("toxicity") == 0)
    n_pos = min(positives.height, max(1, round(size * STRATIFIED_POSITIVE_SHARE))) if positives.height else 0
    n_neg = min(negatives.height, size - n_pos)
    n_pos = min(positives.height, size - n_neg)  # refill from positives if negatives ran short
    parts = []
    for stratum, n in ((positives, n_pos), (negatives, n_neg)):
        if n:
            weight = (stratum.height / population) / (n / size)
            parts.append(stratum.sample(n=n, seed=seed, shuffle=True).with_columns(pl.lit(weight).alias("weight")))
    picked = pl.concat(parts).sample(fraction=1.0, seed=seed, shuffle=True)
    return Sample(picked, info, "stratified", seed, population, note)


def effective_n(weights: list[float]) -> float:
    """Kish's effective sample size; equals n for equal weights."""
    total = sum(weights)
    squares = sum(w * w for w in weights)
    return total * total / squares if squares else 0.0


def describe(sample_: Sample) -> dict[str, Any]:
    info = sample_.info
    weights = sample_.frame["weight"].to_list()
    return {"dataset": info.source, "version": info.version, "split": info.split, "rows": info.rows,
            "content_sha256": info.content_sha256, "population": sample_.population, "sampled": sample_.frame.height,
            "strategy": sample_.strategy, "seed": sample_.seed, "effective_n": round(effective_n(weights), 2),
            "positives": int(sample_.frame["toxicity"].sum()), "note": sample_.note}
