"""ToxicChat rows from the Hub or a file → a validated frame; sampling with stratification weights.

Every source ends in `normalize` (the same validation for the Hub, a Hub-layout directory and a plain file):
columns `example_id, text, toxicity, jailbreaking, human_annotation`, toxicity 0/1, or None for a row without a
human label (an empty cell, a null, a missing key; `--label-column none`: every row).
"""

from __future__ import annotations

import hashlib
import io
import os
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
TEXT_COLUMNS = ("user_input", "text")  # the text is read from the first of these a source has (text: the study's)
LABEL_COLUMNS = ("toxicity", "ground_truth")  # the 0/1 human label, likewise
NO_LABELS = "none"  # --label-column none: the rows carry no human label
# column names that look like a label: the missing-column error suggests --label-column with them
_LABEL_LIKE = ("label", "labels", "toxic", "is_toxic", "target", "class", "gold", "y", "human_label")
_EMPTY = ("", "nan", "null", "none")  # a label cell that holds no label
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
    strategy: str  # "all", "random", "stratified" or "first" (--limit)
    seed: int
    population: int
    note: str | None = None  # a documented clamp, e.g. sample size larger than the dataset
    limit: int | None = None  # --limit N: the first N rows


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
    import socket
    from urllib.parse import urlparse

    if hub_offline():
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((endpoint.hostname or "huggingface.co", endpoint.port or 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_host() -> str:
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return endpoint.netloc or "huggingface.co"


def load(dataset: str = DEFAULT_DATASET, version: str | None = None, split: str = "test",
         text_column: str | None = None, label_column: str | None = None) -> tuple[pl.DataFrame, DatasetInfo]:
    """`version`: the Hub config (None: toxicchat0124 for lmsys/toxic-chat, else the dataset's default).
    `text_column`/`label_column`: the source's names for the text and the 0/1 label (`NO_LABELS`: none)."""
    note = None
    check_source(dataset)
    if version is None and dataset == DEFAULT_DATASET:
        version = "toxicchat0124"
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
    frame = normalize(frame, dataset, text_column, label_column)
    return frame, DatasetInfo(dataset, version_used, split_used, frame.height, content_hash(frame), note)


def decode_utf8(data: bytes, where: str, encoding: str = "utf-8") -> str:
    """`data` as text; one line naming the first byte that is not UTF-8 in `where`, and how to re-encode it."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise UsageError(f"{where} is not UTF-8 (invalid byte at offset {exc.start})",
                         "re-encode it, e.g. iconv -f latin1 -t utf-8") from None


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}", "check the path") from None


def read_file(path: Path) -> pl.DataFrame:
    kind = FILE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise UsageError(f"unsupported dataset file type {path.suffix!r}", "use .csv, .parquet or .jsonl")
    if not path.is_file():
        raise UsageError(f"dataset file not found: {path}", "check the path, or pass a Hub id such as lmsys/toxic-chat")
    if kind in ("csv", "jsonl"):  # read once and checked: polars would put U+FFFD in place of latin-1's accents
        data = read_bytes(path)
        decode_utf8(data, str(path))
    try:
        if kind == "csv":
            return pl.read_csv(io.BytesIO(data), infer_schema=False)  # all strings; typed in normalize
        if kind == "parquet":
            return pl.read_parquet(path)
        return pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)
    except Exception as exc:  # polars raises many error types for malformed files
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot read {path} as {kind}: {first}", "check the file is valid " + kind) from None


TEXT_LIST_SUFFIXES = (".txt",)  # `classify --file`: one text per non-empty line


def read_texts(path: Path, text_column: str | None = None) -> tuple[list[tuple[str, str]], int]:
    """The texts of a file for `classify --file`, as (id, text) in file order, and how many blank lines or empty
    cells were skipped: a .txt file's non-empty lines (id: the line number), or a .csv/.parquet/.jsonl file's text
    column (`text_column`, else user_input or text; id: its conv_id or id column, else the row number). Repeated
    texts are kept: each is a line the user gave."""
    if str(path) == "-":
        raise UsageError("--file - : many texts are read from a file", "one text from standard input: classify -")
    if path.is_dir():
        raise UsageError(f"{path} is a directory", "pass a .txt (one text per line), .csv, .parquet or .jsonl file")
    if path.suffix.lower() in TEXT_LIST_SUFFIXES:
        if text_column is not None:
            raise UsageError(f"--text-column with a text file ({path.name}): each line is a text",
                             "drop --text-column, or pass a .csv/.parquet/.jsonl file")
        lines = decode_utf8(read_bytes(path), str(path), "utf-8-sig").splitlines()  # -sig: a BOM is not text
        texts = [(str(n), line) for n, line in enumerate(lines, 1) if line.strip()]
        skipped = len(lines) - len(texts)
    else:
        if path.suffix.lower() not in FILE_SUFFIXES:
            raise UsageError(f"unsupported file type {path.suffix!r} for --file",
                             "use .txt (one text per line), .csv, .parquet or .jsonl; or pipe one text: classify - < FILE")
        frame = read_file(path)
        columns = list(frame.columns)
        text = text_column or next((c for c in TEXT_COLUMNS if c in columns), None)
        if text is None or text not in columns:
            shown = f"no column {text_column!r}" if text_column else f"no {' or '.join(TEXT_COLUMNS)} column"
            raise UsageError(f"{path.name} has {shown} (its columns: {_column_list(columns)})",
                             "name the text column with --text-column NAME")
        ids_column = next((c for c in ("conv_id", "id") if c in columns), None)
        values = frame[text].cast(pl.String, strict=False).fill_null("").to_list()
        ids = (frame[ids_column].cast(pl.String, strict=False).to_list() if ids_column
               else [str(n) for n in range(1, len(values) + 1)])
        texts = [(str(i), t) for i, t in zip(ids, values) if t.strip()]
        skipped = len(values) - len(texts)
    if not texts:
        raise UsageError(f"{path} holds no text", "one text per line (.txt) or a text column with values")
    return texts, skipped


def read_hub(dataset: str, version: str | None, split: str) -> pl.DataFrame:
    """`datasets.load_dataset(dataset, version, split=split)`: a Hub id, or a local directory laid out like one.
    Offline (HF_HUB_OFFLINE) only the local datasets cache can answer; a Hub that cannot be reached is one line at
    once, never the Hub client's retries."""
    local_dir = Path(dataset).is_dir()
    if dataset == DEFAULT_DATASET and split not in SPLITS:
        raise UsageError(f"unknown split {split!r} of {DEFAULT_DATASET}", f"--split takes one of: {', '.join(SPLITS)}")
    files_hint = "or pass --dataset PATH (a .csv/.parquet/.jsonl file or a directory)"
    if not local_dir and not hub_offline() and not hub_reachable():
        raise UsageError(f"cannot load {dataset}: the Hugging Face Hub ({hub_host()}) cannot be reached",
                         "check your network or HF_ENDPOINT; with HF_HUB_OFFLINE=1 a copy in the local datasets cache "
                         f"is used; {files_hint}")
    try:
        import datasets
    except ImportError:
        raise UsageError("the Hub dataset path needs the 'datasets' package",
                         "pip install 'toxcmp[data]', or pass --dataset PATH (csv, parquet or jsonl)") from None
    what = f"{dataset} ({version or 'its default config'}, {split})"
    try:
        ds = datasets.load_dataset(dataset, version, split=split)
    except Exception as exc:  # offline, unknown config or split, gated repo…
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        kind = type(exc).__name__
        if not local_dir and hub_offline():
            bundled = (f"; offline, only {DEFAULT_DATASET} toxicchat0124 test is bundled (the default --dataset)"
                       if dataset == DEFAULT_DATASET else "")
            raise UsageError(f"cannot load {what}: HF_HUB_OFFLINE is set and the local datasets cache has no copy"
                             f"{bundled}", f"unset HF_HUB_OFFLINE to download it, {files_hint}") from None
        if kind == "DatasetNotFoundError":
            raise UsageError(f"dataset {dataset} is not on the Hub ({hub_host()}), or it is gated or private",
                             f"check the id (owner/name); for a gated dataset accept its terms and set HF_TOKEN; "
                             f"{files_hint}") from None
        if "BuilderConfig" in first or "config" in first.lower():
            raise UsageError(f"cannot load {what}: {first}", f"pick a config with --dataset-version NAME; {files_hint}") from None
        if "split" in first.lower():
            raise UsageError(f"cannot load {what}: {first}", f"pick a split with --split NAME; {files_hint}") from None
        raise UsageError(f"cannot load {what}: {first}",
                         f"check --dataset-version/--split, your network or HF_HUB_OFFLINE, {files_hint}") from None
    return pl.from_arrow(ds.data.table) if hasattr(ds, "data") else pl.DataFrame(ds.to_dict())


def _as_binary(frame: pl.DataFrame, column: str, source: str, required: bool, shown: str | None = None) -> pl.Series | None:
    """`column` as 0/1 (Int8). `required` (the label): an empty cell is None, a row without a label; any other
    value that is not 0/1 is an error naming the column as the source calls it (`shown`). Otherwise (an optional
    flag) what is not 0/1 is 0."""
    if column not in frame.columns:
        return None
    raw = frame[column]
    as_text = raw.cast(pl.String, strict=False).str.strip_chars().str.to_lowercase()
    mapped = as_text.replace_strict({"0": 0, "1": 1, "0.0": 0, "1.0": 1, "true": 1, "false": 0}, default=None,
                                    return_dtype=pl.Int8)
    empty = as_text.is_null() | as_text.is_in(list(_EMPTY))
    bad = mapped.is_null() & ~empty
    if required:
        if bad.any():
            examples = ", ".join(repr(v) for v in raw.filter(bad).head(3).to_list())
            raise UsageError(f"{source}: column {shown or column!r} must be 0/1; {int(bad.sum())} row(s) are not "
                             f"({examples})", "fix or drop those rows; an empty cell is a row without a label")
        return mapped
    return mapped.fill_null(0)


def _column_list(columns: list[str]) -> str:
    shown = ", ".join(columns[:12]) or "none"
    return shown + (f", … ({len(columns)} in all)" if len(columns) > 12 else "")


def _pick_columns(frame: pl.DataFrame, source: str, text_column: str | None,
                  label_column: str | None) -> pl.DataFrame:
    """Rename the source's text and label columns to `user_input` and `toxicity` (as `--text-column` /
    `--label-column` name them, else the first of `TEXT_COLUMNS` / `LABEL_COLUMNS` it has); one line naming the
    accepted columns and the options otherwise."""
    columns = list(frame.columns)
    for flag, name in (("--text-column", text_column), ("--label-column", label_column)):
        if name is not None and name != NO_LABELS * (flag == "--label-column") and name not in columns:
            raise UsageError(f"{source} has no column {name!r} ({flag}; its columns: {_column_list(columns)})",
                             f"pass one of its columns to {flag}")
    text = text_column or next((c for c in TEXT_COLUMNS if c in columns), None)
    label = None if label_column == NO_LABELS else (label_column or next((c for c in LABEL_COLUMNS if c in columns), None))
    missing, hints = [], []
    if text is None:
        missing.append("user_input")
        hints.append(f"the text is read from {' or '.join(TEXT_COLUMNS)}: name yours with --text-column NAME")
    if label is None and label_column != NO_LABELS:
        missing.append("toxicity")
        like = next((c for c in columns if c.lower() in _LABEL_LIKE and c != text), None)
        mapping = f"--label-column {like}" if like else "--label-column NAME"
        hints.append(f"the 0/1 label is read from {' or '.join(LABEL_COLUMNS)}: name yours with {mapping}, or pass "
                     f"--label-column {NO_LABELS} for rows without labels")
    if missing:
        raise UsageError(f"{source} is missing column(s) {', '.join(missing)} (its columns: {_column_list(columns)})",
                         "; ".join(hints))
    picked = {text: "user_input"}
    if label is not None:
        picked[label] = "toxicity"
    frame = frame.select([pl.col(old).alias(new) for old, new in picked.items()]
                         + [c for c in columns if c not in picked and c not in picked.values()])
    if label is None:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Int8).alias("toxicity"))
    return frame, label


def normalize(frame: pl.DataFrame, source: str = "dataset", text_column: str | None = None,
              label_column: str | None = None) -> pl.DataFrame:
    frame, label = _pick_columns(frame, source, text_column, label_column)
    if frame.height == 0:
        raise UsageError(f"{source} has no rows", "pick a non-empty file or split")
    text = frame["user_input"].cast(pl.String, strict=False).fill_null("")
    toxicity = (_as_binary(frame, "toxicity", source, required=True, shown=label) if label is not None
                else pl.Series([None] * frame.height, dtype=pl.Int8))
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
    """Over (example_id, text, toxicity) in order; a row without a label hashes its label as empty."""
    digest = hashlib.sha256()
    for i, t, y in frame.select("example_id", "text", "toxicity").iter_rows():
        digest.update(f"{i}\x1f{t}\x1f{'' if y is None else y}\x1e".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def check_sampling(size: int | None = None, stratify: bool = False, limit: int | None = None,
                   label_column: str | None = None) -> None:
    """What the sampling options say of each other, before any data is loaded."""
    if size is not None and size <= 0:
        raise UsageError(f"--sample-size must be positive (got {size})", "omit it to use every row")
    if limit is not None and limit <= 0:
        raise UsageError(f"--limit must be positive (got {limit})", "omit it to use every row")
    if limit is not None and size is not None:
        raise UsageError("--limit takes the first N rows and --sample-size draws N at random",
                         "pass one of them")
    if limit is not None and stratify:
        raise UsageError("--stratify draws a sample; --limit takes the first rows in file order",
                         "drop one of them (--stratify goes with --sample-size)")
    if stratify and label_column == NO_LABELS:
        raise UsageError("--stratify draws half the sample from positives; --label-column none has no labels",
                         "drop --stratify, or name the label column with --label-column NAME")


def sample(frame: pl.DataFrame, info: DatasetInfo, size: int | None = None, seed: int = 0,
           human_only: bool = False, stratify: bool = False, limit: int | None = None) -> Sample:
    """Rows to run, with a `weight` column such that weighted metrics estimate the population's.

    Stratified sampling draws `STRATIFIED_POSITIVE_SHARE` of the sample from positives (toxicity = 1); each
    row's weight is its stratum's population share over its sample share. `limit`: the first N rows as the source
    orders them (after --human-only), no sampling.
    """
    check_sampling(size, stratify, limit)
    if human_only:
        if frame["human_annotation"].null_count() == frame.height:
            raise UsageError(f"{info.source} has no human_annotation column", "drop --human-only")
        frame = frame.filter(pl.col("human_annotation"))
        if frame.height == 0:
            raise UsageError("no human-annotated rows in this dataset", "drop --human-only")
    if stratify:
        unlabelled = frame["toxicity"].null_count()
        if unlabelled == frame.height:
            raise UsageError(f"{info.source} has no toxicity labels: --stratify draws half the sample from positives",
                             "drop --stratify, or name the label column with --label-column NAME")
        if unlabelled:
            raise UsageError(f"{unlabelled} of {frame.height} rows of {info.source} have no toxicity label: --stratify "
                             "needs a label on every row", "drop --stratify, or drop the unlabelled rows")
    population = frame.height
    note = None
    if limit is not None:
        if limit > population:
            note = f"--limit {limit} is larger than the dataset ({population} rows); using all {population}"
        return Sample(frame.head(limit).with_columns(pl.lit(1.0).alias("weight")), info, "first", seed, population,
                      note, limit=limit)
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
    labels = sample_.frame["toxicity"]
    out = {"dataset": info.source, "version": info.version, "split": info.split, "rows": info.rows,
           "content_sha256": info.content_sha256, "population": sample_.population, "sampled": sample_.frame.height,
           "strategy": sample_.strategy, "seed": sample_.seed, "effective_n": round(effective_n(weights), 2),
           "positives": int(labels.sum() or 0), "labelled": len(labels) - labels.null_count(), "note": sample_.note}
    if sample_.limit is not None:
        out["limit"] = sample_.limit
    return out
