"""Dataset loading, validation and sampling (real ToxicChat rows where the shared data is present)."""

from __future__ import annotations

import json

import polars as pl
import pytest

from toxcmp.domain import data
from toxcmp.errors import UsageError

from tests.conftest import TOXICCHAT_CSV, require_shared


def _write(tmp_path, name, rows):
    path = tmp_path / name
    frame = pl.DataFrame(rows)
    if name.endswith(".csv"):
        frame.write_csv(path)
    elif name.endswith(".parquet"):
        frame.write_parquet(path)
    else:
        path.write_text("\n".join(json.dumps(r) for r in frame.to_dicts()) + "\n")
    return path


ROWS = {"conv_id": ["a", "b", "c"], "user_input": ["hi", "you idiot", "how to\nbake, \"bread\""], "toxicity": [0, 1, 0]}


@pytest.mark.parametrize("name", ["d.csv", "d.parquet", "d.jsonl"])
def test_each_file_format_loads_the_same_rows(tmp_path, name):
    frame, info = data.load(str(_write(tmp_path, name, ROWS)))
    assert frame["example_id"].to_list() == ["a", "b", "c"]
    assert frame["text"].to_list()[2] == "how to\nbake, \"bread\""
    assert frame["toxicity"].to_list() == [0, 1, 0]
    assert info.rows == 3 and len(info.content_sha256) == 64


def test_content_hash_is_format_independent(tmp_path):
    hashes = {data.load(str(_write(tmp_path, n, ROWS)))[1].content_sha256 for n in ("d.csv", "d.parquet", "d.jsonl")}
    assert len(hashes) == 1


def test_ids_fall_back_to_a_text_hash(tmp_path):
    frame, _ = data.load(str(_write(tmp_path, "d.csv", {"user_input": ["x", "y"], "toxicity": [0, 1]})))
    ids = frame["example_id"].to_list()
    assert all(i.startswith("sha256:") for i in ids) and ids[0] != ids[1]
    again, _ = data.load(str(_write(tmp_path, "e.csv", {"user_input": ["x", "y"], "toxicity": [0, 1]})))
    assert again["example_id"].to_list() == ids


def test_missing_columns_are_named(tmp_path):
    with pytest.raises(UsageError, match="missing column\\(s\\) toxicity"):
        data.load(str(_write(tmp_path, "d.csv", {"user_input": ["x"], "label": [1]})))


def test_labels_must_be_binary(tmp_path):
    with pytest.raises(UsageError, match="'toxicity' must be 0/1; 1 row"):
        data.load(str(_write(tmp_path, "d.csv", {"user_input": ["x", "y"], "toxicity": [0, 2]})))


def test_wrong_column_types_in_parquet_are_coerced_or_rejected(tmp_path):
    frame, _ = data.load(str(_write(tmp_path, "d.parquet", {"user_input": [1, 2], "toxicity": ["1", "0"]})))
    assert frame["text"].to_list() == ["1", "2"] and frame["toxicity"].to_list() == [1, 0]
    with pytest.raises(UsageError, match="must be 0/1"):
        data.load(str(_write(tmp_path, "e.parquet", {"user_input": ["a"], "toxicity": [0.5]})))


def test_empty_dataset(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("user_input,toxicity\n")
    with pytest.raises(UsageError, match="has no rows"):
        data.load(str(path))


def test_unsupported_unreadable_and_absent_files(tmp_path):
    with pytest.raises(UsageError, match="unsupported dataset file type"):
        data.read_file(tmp_path / "d.xlsx")
    with pytest.raises(UsageError, match="not found"):
        data.load(str(tmp_path / "nope.csv"))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not a parquet file")
    with pytest.raises(UsageError, match="cannot read .* as parquet"):
        data.load(str(bad))


def test_hub_path_offline_gives_one_line_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError) as err:
        data.load("lmsys/toxic-chat", "toxicchat1123", "test")  # no bundled fallback for this config
    assert "--dataset PATH" in err.value.one_line() and "\n" not in err.value.one_line()


def test_hub_layout_directory_goes_through_datasets_load_dataset(tmp_path):
    """The Hub code path (datasets.load_dataset with a config and split) on a local repo-shaped directory."""
    require_shared(TOXICCHAT_CSV)
    repo = tmp_path / "toxic-chat"
    (repo / "data" / "0124").mkdir(parents=True)
    pl.read_csv(TOXICCHAT_CSV).head(40).write_csv(repo / "data" / "0124" / "toxic-chat_annotation_test.csv")
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: toxicchat0124\n  data_files:\n  - split: test\n"
        "    path: data/0124/toxic-chat_annotation_test.csv\n---\n")
    frame, info = data.load(str(repo), "toxicchat0124", "test")
    direct, _ = data.load(str(TOXICCHAT_CSV))
    assert frame.height == 40 and info.version == "toxicchat0124"
    assert frame["example_id"].to_list() == direct["example_id"].head(40).to_list()


def test_sample_size_validation_and_clamp():
    frame = pl.DataFrame({"example_id": list("abcd"), "text": list("abcd"), "toxicity": [0, 1, 0, 0],
                          "jailbreaking": [0, 0, 0, 0], "human_annotation": [True, True, False, True]})
    info = data.DatasetInfo("mem", None, None, 4, data.content_hash(frame))
    for bad in (0, -3):
        with pytest.raises(UsageError, match="must be positive"):
            data.sample(frame, info, bad)
    clamped = data.sample(frame, info, 10)
    assert clamped.frame.height == 4 and "larger than the dataset" in clamped.note
    assert data.sample(frame, info, None, human_only=True).frame.height == 3
    s1, s2 = data.sample(frame, info, 2, seed=7), data.sample(frame, info, 2, seed=7)
    assert s1.frame["example_id"].to_list() == s2.frame["example_id"].to_list()


def test_stratified_weights_recover_population_prevalence():
    require_shared(TOXICCHAT_CSV)
    frame, info = data.load(str(TOXICCHAT_CSV))
    s = data.sample(frame, info, 200, seed=3, stratify=True)
    picked = s.frame
    assert picked.height == 200 and int(picked["toxicity"].sum()) == 100  # half positives
    # 362 positives of 2,853: weight(pos) = (362/2853)/(100/200), weight(neg) = (2491/2853)/(100/200)
    w = dict(picked.group_by("toxicity").agg(pl.col("weight").first()).iter_rows())
    assert w[1] == pytest.approx((362 / 2853) / 0.5) and w[0] == pytest.approx((2491 / 2853) / 0.5)
    weighted_prevalence = (picked["weight"] * picked["toxicity"]).sum() / picked["weight"].sum()
    assert weighted_prevalence == pytest.approx(362 / 2853)
    assert data.describe(s)["effective_n"] < 200
