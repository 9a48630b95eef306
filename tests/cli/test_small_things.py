"""What a careful user notices (issue 17, last paragraph): each check failed before its fix."""

from __future__ import annotations

import polars as pl
import pytest


def _err(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.mark.parametrize("args,needle", [
    (["classify", "hi", "--policy", "toxic_simpel"], "did you mean 'toxic_simple'?"),
    (["classify", "hi", "--model", "smollm2-135"], "did you mean 'smollm2-135m'?"),
    (["classify", "hi", "--backend", "locale"], "did you mean 'local'?"),
    (["classify", "hi", "--policy", "nope"], "valid policies:"),
])
def test_names_get_a_did_you_mean_and_proper_plurals(cli, args, needle):
    assert needle in _err(cli(*args))


def test_square_brackets_in_errors_survive(cli, tmp_path):
    line = _err(cli("compare", "--backends", "api[nosuch=1],local", "--output-dir", str(tmp_path)))
    assert "'api[nosuch=1]'" in line  # rich markup used to eat the bracketed part


@pytest.mark.parametrize("dataset", ["data/mydata", "./mydata", "no-such-dir/x/y", "/abs/mydata"])
def test_a_missing_path_without_extension_is_not_taken_for_a_hub_id(cli, tmp_path, monkeypatch, dataset):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()  # data/mydata next to an existing data/ dir is a path, not a Hub id
    line = _err(cli("compare", "--dataset", dataset, "--output-dir", str(tmp_path / "out")))
    assert "is not a file, a directory or a Hub id" in line


def test_hub_shaped_name_still_goes_to_the_hub(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = _err(cli("compare", "--dataset", "someone/some-dataset", "--output-dir", str(tmp_path)))
    assert "cannot load someone/some-dataset" in line


def test_human_only_on_a_file_without_the_column_and_split_with_a_file(cli, tmp_path):
    data = tmp_path / "rows.csv"
    pl.DataFrame({"user_input": ["a", "b"], "toxicity": [0, 1]}).write_csv(data)
    out = str(tmp_path / "out")
    assert "no human_annotation column" in _err(cli("compare", "--dataset", str(data), "--human-only", "--output-dir", out))
    assert "a file has neither" in _err(cli("compare", "--dataset", str(data), "--split", "train", "--output-dir", out))
    assert "a file has neither" in _err(cli("compare", "--dataset", str(data), "--dataset-version", "toxicchat1123",
                                            "--output-dir", out))


def test_compare_version_is_the_dataset_config_no_more(cli):
    result = cli("compare", "--version")
    assert result.exit_code == 2  # the dataset config is --dataset-version; --version belongs to `toxcmp --version`
    assert cli("--version").stdout.startswith("toxcmp ")
