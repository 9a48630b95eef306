"""Issue 23, data inputs: rows without a label, the columns a dataset may use (--text-column / --label-column),
--limit, and a Hub dataset that cannot be had (offline, an unreachable Hub, an unknown id).

Expected values come from the input files themselves (polars over them, hand counts), never from toxcmp's output.
The Hub cases run the real `datasets`/`huggingface_hub` client in a fresh process against a loopback HF_ENDPOINT
(`tests/helpers/fake_hub.py`) or a closed loopback port, never a mocked client."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from toxcmp.config import configs_dir
from toxcmp.domain import data
from toxcmp.errors import UsageError

from tests.helpers.fake_hub import FakeHub

SAMPLE = configs_dir() / "samples" / "toxicchat0124_test_sample.csv"
N50 = configs_dir() / "recordings" / "backend_comparison_gpt-oss-safeguard-20b_toxic_chat_claude_1_n50.parquet"
NO_SUCH_OPTION = re.compile(r"(?<![\w-])--version\b")  # the option the old hint named; compare has --dataset-version


def _one_line(exc: UsageError) -> str:
    line = exc.one_line()
    assert "\n" not in line and "Traceback" not in line
    return line


# -- 1. rows without a label ----------------------------------------------------------------------------------

def test_an_empty_or_missing_label_loads_as_none_in_every_format(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("conv_id,user_input,toxicity\na,hi,0\nb,you idiot,\nc,bake bread,1\n")
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"conv_id": "a", "user_input": "hi", "toxicity": 0}\n{"conv_id": "b", "user_input": "you idiot"}\n'
                     '{"conv_id": "c", "user_input": "bake bread", "toxicity": 1}\n')
    parquet = tmp_path / "d.parquet"
    pl.DataFrame({"conv_id": ["a", "b", "c"], "user_input": ["hi", "you idiot", "bake bread"],
                  "toxicity": [0, None, 1]}).write_parquet(parquet)
    hashes = set()
    for path in (csv, jsonl, parquet):
        frame, info = data.load(str(path))
        assert frame["toxicity"].to_list() == [0, None, 1], path.name  # by hand: row b has no label
        assert frame["example_id"].to_list() == ["a", "b", "c"]
        hashes.add(info.content_sha256)
        described = data.describe(data.sample(frame, info))
        assert (described["labelled"], described["positives"], described["sampled"]) == (2, 1, 3)
    assert len(hashes) == 1  # the same rows, whatever the format
    labelled, _ = data.load(str(_csv(tmp_path / "e.csv", "conv_id,user_input,toxicity\na,hi,0\nb,you idiot,0\nc,bake bread,1\n")))
    assert data.content_hash(labelled) not in hashes  # no label is not label 0


def test_a_label_that_is_there_but_not_0_or_1_is_still_an_error(tmp_path):
    path = _csv(tmp_path / "d.csv", "user_input,toxicity\nhi,0\nyo,2\nx,\n")
    with pytest.raises(UsageError) as err:
        data.load(str(path))
    line = _one_line(err.value)
    assert "'toxicity' must be 0/1; 1 row(s)" in line and "'2'" in line


def test_stratify_needs_labels_one_line(tmp_path):
    frame, info = data.load(str(_csv(tmp_path / "d.csv", "user_input,toxicity\na,1\nb,\nc,0\nd,0\n")))
    with pytest.raises(UsageError) as err:
        data.sample(frame, info, 2, stratify=True)
    assert "1 of 4 rows" in _one_line(err.value) and "--stratify" in err.value.one_line()
    none, info = data.load(str(_csv(tmp_path / "e.csv", "user_input,toxicity\na,\nb,\n")))
    with pytest.raises(UsageError) as err:
        data.sample(none, info, 1, stratify=True)
    assert "no toxicity labels" in _one_line(err.value) and "--label-column" in err.value.one_line()


def test_a_study_file_with_missing_ground_truth_reads_as_unlabelled(tmp_path):
    """results/io.py: the study's rows keep None for a missing label (it was `int(None)`: a TypeError)."""
    from toxcmp.results.io import read_results

    frame = pl.read_parquet(N50)
    gone = frame["conv_id"].head(3).to_list()
    path = tmp_path / "backend_comparison_x_n50.parquet"
    frame.with_columns(pl.when(pl.col("conv_id").is_in(gone)).then(None).otherwise(pl.col("ground_truth"))
                       .alias("ground_truth")).write_parquet(path)
    rows = read_results([path]).rows
    truth = {r["example_id"]: r["toxicity"] for r in rows}
    assert [truth[c] for c in gone] == [None, None, None]
    expected = dict(zip(frame["conv_id"].to_list(), frame["ground_truth"].to_list()))
    assert all(truth[c] == expected[c] for c in expected if c not in gone)


# -- 2. which columns ---------------------------------------------------------------------------------------------

def test_a_text_label_csv_is_told_what_is_accepted_and_how_to_map_it(tmp_path):
    path = _csv(tmp_path / "d.csv", "text,label\nhi,0\nyou idiot,1\n")
    with pytest.raises(UsageError) as err:
        data.load(str(path))
    line = _one_line(err.value)
    assert "missing column(s) toxicity" in line and "its columns: text, label" in line  # the file's own names
    assert "toxicity or ground_truth" in line and "--label-column label" in line and "--label-column none" in line
    frame, _ = data.load(str(path), label_column="label")
    direct = pl.read_csv(path)
    assert frame["text"].to_list() == direct["text"].to_list()
    assert frame["toxicity"].to_list() == direct["label"].to_list()


def test_text_and_label_columns_by_name_and_no_labels(tmp_path):
    path = _csv(tmp_path / "d.csv", "id,prompt,gold,user_input\n1,hi,0,ignored\n2,you idiot,1,ignored too\n")
    frame, _ = data.load(str(path), text_column="prompt", label_column="gold")
    direct = pl.read_csv(path)
    assert frame["text"].to_list() == direct["prompt"].to_list()
    assert frame["toxicity"].to_list() == direct["gold"].to_list()
    unlabelled, _ = data.load(str(path), text_column="prompt", label_column="none")
    assert unlabelled["toxicity"].to_list() == [None, None]
    for kwargs, flag in (({"text_column": "body"}, "--text-column"), ({"label_column": "tox"}, "--label-column")):
        with pytest.raises(UsageError) as err:
            data.load(str(path), **kwargs)
        line = _one_line(err.value)
        assert flag in line and "id, prompt, gold, user_input" in line
    with pytest.raises(UsageError) as err:
        data.load(str(_csv(tmp_path / "e.csv", "msg,y\nhi,0\n")))
    line = _one_line(err.value)
    assert "missing column(s) user_input, toxicity" in line and "--text-column NAME" in line and "--label-column y" in line


# -- 4. --limit ---------------------------------------------------------------------------------------------------

def test_limit_is_the_first_rows_in_file_order_without_sampling():
    frame, info = data.load(str(SAMPLE))
    first = pl.read_csv(SAMPLE)["conv_id"].head(7).to_list()
    picked = data.sample(frame, info, limit=7, seed=123)
    assert picked.frame["example_id"].to_list() == first and picked.strategy == "first"
    assert picked.frame["weight"].to_list() == [1.0] * 7 and data.describe(picked)["limit"] == 7
    everything = data.sample(frame, info, limit=1000)
    assert everything.frame.height == pl.read_csv(SAMPLE).height and "--limit 1000 is larger" in everything.note
    for kwargs in ({"limit": 0}, {"limit": 3, "size": 3}, {"limit": 3, "stratify": True}):
        with pytest.raises(UsageError) as err:
            data.sample(frame, info, **kwargs)
        assert "--limit" in _one_line(err.value)


# -- 3. a Hub dataset that cannot be had -------------------------------------------------------------------------

def test_offline_a_hub_dataset_is_one_line_at_once_naming_real_options(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(UsageError) as err:
        data.load("foo/bar")
    line = _one_line(err.value)
    assert time.monotonic() - started < 10
    assert "foo/bar" in line and "HF_HUB_OFFLINE" in line and "--dataset PATH" in line
    assert not NO_SUCH_OPTION.search(line), line


def _recorded_backends() -> str:
    return f"recorded[path={N50};side=api],recorded[path={N50};side=local]"


def _compare_in_a_fresh_process(dataset: str, env: dict[str, str], tmp_path: Path) -> tuple[int, str, float]:
    """`toxcmp compare` in its own process, so the real Hub client reads HF_ENDPOINT/HF_HUB_OFFLINE from `env`."""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "toxcmp", "compare", "--dataset", dataset, "--backends",
                           _recorded_backends(), "--model", "gpt-oss-safeguard-20b", "--output-dir", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stderr + proc.stdout, time.monotonic() - started


def test_an_unreachable_hub_is_one_line_at_once_not_five_retries(tmp_path):
    with socket.socket() as s:  # a loopback port nothing listens on: every connection is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HUB_OFFLINE="0")
    code, out, seconds = _compare_in_a_fresh_process("foo/bar", env, tmp_path)
    lines = [line for line in out.strip().splitlines() if line.strip()]
    assert code == 2, out
    assert len(lines) == 1 and "Traceback" not in out and "Retrying" not in out, out
    assert f"127.0.0.1:{port}" in lines[0] and "cannot be reached" in lines[0] and "--dataset PATH" in lines[0]
    assert not NO_SUCH_OPTION.search(lines[0]), lines[0]
    assert seconds < 15, seconds  # the client's five retries took ~25 s; this is one 2-second TCP check at most


class _HubWithFiles(FakeHub):
    """The loopback Hub, also answering the file HEADs `datasets` sends (404 RepoNotFound, as the Hub does)."""

    def _handler(self):
        base, outer = super()._handler(), self

        class Handler(base):
            def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
                outer.requests.append({"path": "HEAD " + self.path, "query": {}, "headers": {}})
                self.send_response(404)
                self.send_header("X-Error-Code", "RepoNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler


def test_a_dataset_the_hub_does_not_have_is_one_line_naming_real_options(tmp_path):
    pytest.importorskip("datasets", reason="Hub datasets are read with `datasets` (not in the floors venv)")
    with _HubWithFiles() as hub:
        env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0")
        code, out, seconds = _compare_in_a_fresh_process("foo/bar", env, tmp_path)
        asked = [r["path"] for r in hub.requests]
    lines = [line for line in out.strip().splitlines() if line.strip()]
    assert any("foo/bar" in path for path in asked), asked  # the real client asked the loopback Hub
    assert code == 2 and len(lines) == 1 and "Traceback" not in out, out
    assert "foo/bar" in lines[0] and "--dataset PATH" in lines[0]
    assert not NO_SUCH_OPTION.search(lines[0]), lines[0]
    assert seconds < 30


def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_the_offline_fallback_for_the_default_dataset_is_unchanged(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    frame, info = data.load()
    assert info.source.startswith("bundled:") and info.version == "toxicchat0124" and info.split == "test"
    bundled = pl.read_parquet(data.bundled_test_split())
    assert frame.height == bundled.height and frame["toxicity"].null_count() == 0
    assert json.dumps(data.describe(data.sample(frame, info)))  # serializable as provenance
