"""One row of the README's exit-code table, one test (issue 17). The codes live in toxcmp.errors.ExitCode."""

from __future__ import annotations

import pytest

from toxcmp.config import configs_dir
from toxcmp.errors import ExitCode

from tests.conftest import RECORDED, require_shared

N50 = RECORDED / "backend_comparison_gpt-oss-safeguard-20b_toxic_chat_claude_1_n50.parquet"
DEAD_URL = "http://127.0.0.1:9/v1"  # the discard port: nothing listens
SAMPLE = configs_dir() / "samples" / "toxicchat0124_test_sample.csv"


def _one_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_table_is_what_the_readme_says():
    assert {c.name: int(c) for c in ExitCode} == {"OK": 0, "FAIL": 1, "USAGE": 2, "INCONCLUSIVE": 3, "BACKEND": 4,
                                                   "INTERRUPTED": 130}


def test_0_pass(cli):
    require_shared(N50)
    assert cli("rescore", str(N50), "--unparsed-as", "0", "--no-write").exit_code == 0


def test_1_below_threshold(cli):
    require_shared(N50)
    assert cli("rescore", str(N50), "--threshold", "0.99", "--no-write").exit_code == 1


def test_3_inconclusive(cli):
    require_shared(N50)
    result = cli("rescore", str(N50), "--min-labelled", "1.0", "--no-write")  # local labelled 49/50 < 100 %
    assert result.exit_code == 3 and "INCONCLUSIVE" in result.output


@pytest.mark.parametrize("args,needle", [
    (["--dtype", "float8"], "unknown dtype 'float8'"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--reasoning-effort", "extreme"], "unknown --reasoning-effort 'extreme'"),
    (["--strategy", "fastest"], "unknown strategy 'fastest'"),
    (["--backends", "local[dtype=float8],api"], "unknown dtype 'float8' in 'local[dtype=float8]'"),
])
def test_2_bad_options_stop_before_any_data_or_model(cli, tmp_path, args, needle):
    result = cli("compare", "--dataset", str(tmp_path / "missing.csv"), "--output-dir", str(tmp_path / "out"), *args)
    assert result.exit_code == 2 and needle in _one_line(result)
    assert not (tmp_path / "out").exists()


def test_2_cache_dir_that_is_a_file_is_a_usage_error_in_every_command(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    classify = cli("classify", "hi", "--backend", "local", "--cache-dir", str(blocker))
    assert classify.exit_code == 2 and "--cache-dir" in _one_line(classify)
    require_shared(N50)
    compare = cli("compare", "--backends", f"recorded[path={N50};side=api],recorded[path={N50};side=local]",
                  "--dataset", str(N50), "--policy", "toxic_chat_claude_1", "--cache-dir", str(blocker),
                  "--output-dir", str(tmp_path / "out"))
    assert compare.exit_code == 2 and "--cache-dir" in _one_line(compare)


def test_2_bundled_model_without_a_server_route(cli):
    result = cli("classify", "hi", "--backend", "api", "--api-server", "none")
    assert result.exit_code == 2 and "bundled model" in _one_line(result)


def test_4_unreachable_server_in_classify_and_compare_alike(cli, tmp_path):
    classify = cli("classify", "hi", "--backend", "api", "--base-url", DEAD_URL)
    assert classify.exit_code == 4, classify.output
    compare = cli("compare", "--dataset", str(SAMPLE), "--backends", f"api[base_url={DEAD_URL}],local",
                  "--output-dir", str(tmp_path / "out"))
    assert compare.exit_code == 4 and "cannot reach the API server" in _one_line(compare)
    assert not (tmp_path / "out").exists()  # stopped before any model or run dir


def test_a_fully_cached_run_does_not_need_its_server(cli, tmp_path):
    """Re-rendering a finished run works after the server is gone: only a cache miss needs it."""
    from toxcmp.testing.fake_server import FakeChatServer

    require_shared(N50)
    args = ["--dataset", str(N50), "--policy", "toxic_chat_claude_1", "--model", "gpt-oss-safeguard-20b",
            "--output-dir", str(tmp_path / "out"), "--no-margin"]
    with FakeChatServer(models=["openai/gpt-oss-safeguard-20b"]) as server:
        url = server.base_url
        first = cli("compare", "--backends", f"api[base_url={url}],recorded[path={N50};side=local]", *args)
        assert first.exit_code in (0, 1), first.output
    again = cli("compare", "--backends", f"api[base_url={url}],recorded[path={N50};side=local]", *args)
    assert again.exit_code == first.exit_code and "every answer is in the cache" in again.output
