"""A run pins its render date: in every request (so in the cache key), in its provenance, and again on resume.

Rule-based doubles for the orchestration; the tiny random gpt-oss model with the real template's date line
(`tests.helpers.gptoss_template`) for the whole path: compare → cache → resume → `render --run` (slow). No clock
is frozen: dates are passed explicitly, and the default is checked against UTC from two time zones."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from importlib.metadata import EntryPoint
from pathlib import Path

import polars as pl
import pytest

import toxcmp.backends as backends
from toxcmp.config import GenerationConfig
from toxcmp.domain.models import resolve_model
from toxcmp.domain.prompting import ChatRequest
from toxcmp.run.cache import cache_key

from tests.helpers import doubles
from tests.helpers.gptoss_template import expected_prompt

TEXTS = ["hello there", "you idiot", "nice day", "what an idiot"]


class DateSpy(doubles.RuleBackend):
    """The rule double, noting the render date of every request it is sent."""

    name = "spy"
    calls = 0
    seen: list[str | None] = []

    def generate(self, requests, on_response=None):
        type(self).seen.extend(r.render_date for r in requests)
        return super().generate(requests, on_response)


@pytest.fixture(autouse=True)
def plugin_backends(monkeypatch):
    eps = [EntryPoint(name="rule", value="tests.helpers.doubles:RuleBackend", group=backends.ENTRY_POINT_GROUP),
           EntryPoint(name="spy", value="tests.run.test_render_date:DateSpy", group=backends.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(backends, "entry_points", lambda group: eps if group == backends.ENTRY_POINT_GROUP else [])
    doubles.reset()
    DateSpy.calls, DateSpy.seen = 0, []
    yield
    doubles.reset()


@pytest.fixture
def dataset(tmp_path) -> Path:
    path = tmp_path / "rows.csv"
    pl.DataFrame({"conv_id": [f"id{i:02d}" for i in range(len(TEXTS))], "user_input": TEXTS,
                  "toxicity": [0, 1, 0, 1], "jailbreaking": [0] * len(TEXTS)}).write_csv(path)
    return path


def _compare(cli, dataset, out, *extra):
    result = cli("compare", "--backends", "rule,spy", "--dataset", str(dataset), "--output-dir", str(out), "--json",
                 *extra)
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def test_every_request_carries_the_date_and_the_run_records_it(cli, dataset, tmp_path):
    summary = _compare(cli, dataset, tmp_path / "out", "--render-date", "2001-02-03")
    assert DateSpy.seen == ["2001-02-03"] * len(TEXTS)
    assert summary["metadata"]["render_date"] == "2001-02-03"
    on_disk = json.loads((Path(summary["run_dir"]) / "summary.json").read_text())
    assert on_disk["metadata"]["render_date"] == "2001-02-03"


def test_a_rerun_reuses_the_recorded_date_and_resumes_at_zero_cost(cli, dataset, tmp_path):
    first = _compare(cli, dataset, tmp_path / "out", "--render-date", "2001-02-03")
    assert DateSpy.calls == len(TEXTS)
    second = _compare(cli, dataset, tmp_path / "out")  # no date given: the run dir's own, not today's
    assert second["run_dir"] == first["run_dir"]  # the date is not part of the run id
    assert DateSpy.calls == len(TEXTS) and second["metadata"]["throughput"]["spy"]["calls"] == 0
    assert second["metadata"]["render_date"] == "2001-02-03"
    assert pl.read_parquet(Path(second["run_dir"]) / "results.parquet")["cached"].all()
    again = _compare(cli, dataset, tmp_path / "out", "--render-date", "2001-02-03")  # the same date, said again
    assert again["run_dir"] == first["run_dir"] and DateSpy.calls == len(TEXTS)


def test_another_date_for_a_recorded_run_is_one_line_and_another_run_id_answers_anew(cli, dataset, tmp_path):
    first = _compare(cli, dataset, tmp_path / "out", "--render-date", "2001-02-03")
    result = cli("compare", "--backends", "rule,spy", "--dataset", str(dataset), "--output-dir", str(tmp_path / "out"),
                 "--render-date", "2019-12-31")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "2001-02-03" in result.output and "--run-id" in result.output
    assert DateSpy.calls == len(TEXTS)
    other = _compare(cli, dataset, tmp_path / "out", "--render-date", "2019-12-31", "--run-id", "later")
    assert DateSpy.calls == 2 * len(TEXTS)  # another date: other prompts, other cache keys, nothing reused
    assert other["metadata"]["render_date"] == "2019-12-31" and other["run_dir"] != first["run_dir"]
    tidy = [pl.read_parquet(Path(s["run_dir"]) / "results.parquet").sort("example_id") for s in (first, other)]
    spy = [t.filter(pl.col("arm") == "spy")["prompt_hash"].to_list() for t in tidy]
    assert all(a != b for a, b in zip(*spy))


@pytest.mark.parametrize("zone", ["Etc/GMT-14", "Etc/GMT+12"])  # UTC+14 and UTC−12
def test_the_default_date_is_the_start_day_in_utc_not_the_machines_zone(cli, dataset, tmp_path, monkeypatch, zone):
    # at any instant, one of the two zones is on another calendar day than UTC: a local-time default fails there
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        before = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        summary = _compare(cli, dataset, tmp_path / "out")
        after = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    finally:
        monkeypatch.undo()
        time.tzset()
    assert summary["metadata"]["render_date"] in {before, after}
    assert set(DateSpy.seen) == {summary["metadata"]["render_date"]}


def test_two_dates_give_two_cache_keys():
    spec = resolve_model("smollm2-135m")
    messages = (("system", "policy"), ("user", "text"))
    keys = {cache_key("local", {}, ChatRequest(spec, messages, GenerationConfig(), render_date=d), "rev")
            for d in ("2001-02-03", "2019-12-31", None)}
    assert len(keys) == 3


@pytest.fixture(scope="module")
def dated_model(tmp_path_factory) -> Path:
    from tests.helpers.gptoss_template import build_dated_gptoss

    return build_dated_gptoss(tmp_path_factory.mktemp("dated-gptoss") / "model")


@pytest.mark.slow
def test_a_local_run_resumes_at_its_date_and_render_run_shows_that_prompt(cli, dataset, tmp_path, dated_model):
    args = ["compare", "--backends", "local,rule", "--model", str(dated_model), "--dataset", str(dataset),
            "--output-dir", str(tmp_path / "out"), "--max-new-tokens", "2", "--device", "cpu", "--dtype", "float32",
            "--no-margin", "--json"]
    first = json.loads(cli(*args, "--render-date", "2001-02-03").stdout)
    assert first["metadata"]["throughput"]["local"]["calls"] == len(TEXTS)
    second = json.loads(cli(*args).stdout)  # a rerun (on any day): the recorded date, the same prompts
    assert second["run_dir"] == first["run_dir"] and second["metadata"]["throughput"]["local"]["calls"] == 0
    tidy = pl.read_parquet(Path(second["run_dir"]) / "results.parquet").filter(pl.col("arm") == "local")
    row = tidy.filter(pl.col("example_id") == "id01").row(0, named=True)
    shown = cli("render", "--run", second["run_dir"], "--example", "id01", "--json")
    assert shown.exit_code == 0, shown.output
    rendered = json.loads(shown.stdout.strip().splitlines()[-1])
    from toxcmp.domain.policies import load_policy

    messages = [{"role": "system", "content": load_policy("toxic_simple").text},
                {"role": "user", "content": "you idiot"}]
    assert rendered["local_prompt"] == expected_prompt(messages, "2001-02-03", reasoning_effort="low")
    assert rendered["render_date"] == "2001-02-03" and rendered["prompt_hash"] == row["prompt_hash"]
    assert "differs" not in shown.output  # no note: the rebuilt request is the one the run sent
