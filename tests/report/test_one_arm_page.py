"""One arm's report.html in a real headless Chromium (issue 23): the row browser over one arm's answers — chips
that count its wrong answers and each way of being wrong, and a row that expands into that arm's answer, its
reasoning and its human label. Expected rows from the study file's own columns."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from toxcmp.config import configs_dir

from tests.helpers.browser import start_browser

N50 = configs_dir() / "recordings" / "backend_comparison_gpt-oss-safeguard-20b_toxic_chat_claude_1_n50.parquet"


@pytest.fixture(scope="module")
def browser():
    driver = start_browser()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    from toxcmp.cli.app import app

    out = tmp_path_factory.mktemp("one-arm-page")
    result = CliRunner().invoke(app, ["compare", "--backends", f"recorded[path={N50};side=api;label=provider]",
                                      "--dataset", str(N50), "--policy", "toxic_chat_claude_1", "--model",
                                      "gpt-oss-safeguard-20b", "--output-dir", str(out), "--json",
                                      "--cache-dir", str(out / "cache")])
    assert result.exit_code == 1, result.output  # 76 % < 95 %
    return Path(json.loads(result.stdout)["run_dir"]) / "report.html"


def _open(browser, path: Path) -> None:
    browser.get(path.resolve().as_uri())
    browser.implicitly_wait(5)
    assert browser.find_element("css selector", "body[data-ready='1']")


def _shown_ids(browser) -> list[str]:
    return [e.get_attribute("title") for e in browser.find_elements("css selector", "#rows tr.row td:nth-child(2)")]


def test_the_chips_count_the_wrong_answers_and_show_exactly_them(browser, page):
    study = pl.read_parquet(N50)
    said = study["api_binary_label"].cast(pl.Int64)
    wrong = study.filter(~study["api_parsed_successfully"] | (said != study["ground_truth"]))
    missed = study.filter(study["api_parsed_successfully"] & (said == 0) & (study["ground_truth"] == 1))
    _open(browser, page)
    chips = {b.get_attribute("data-filter"): b.text for b in browser.find_elements("css selector", "#filters button")}
    assert chips["Wrong"] == f"Wrong ({wrong.height})" and chips["missed"] == f"missed ({missed.height})"
    assert chips["false alarm"] == "false alarm (0)" and chips["All"] == "All (50)"
    heads = [th.text for th in browser.find_elements("css selector", "#rows thead th")]
    assert heads == ["#", "id", "truth", "A: provider", "right", "why not", "text"]
    browser.find_element("css selector", "#filters button[data-filter='Wrong']").click()
    assert _shown_ids(browser) == wrong["conv_id"].to_list() and wrong.height == 12


def test_a_row_expands_into_the_arms_answer_reasoning_and_human_label(browser, page):
    study = pl.read_parquet(N50)
    _open(browser, page)
    browser.find_element("css selector", "#filters button[data-filter='missed']").click()
    browser.find_element("css selector", "#rows tr.row").click()
    detail = browser.find_element("css selector", "#rows tr.detail")
    first = study.filter((pl.col("api_binary_label") == False) & (pl.col("ground_truth") == 1)).row(0, named=True)  # noqa: E712
    boxes = detail.find_elements("css selector", ".box[data-part='reasoning']")
    assert [b.get_attribute("textContent") for b in boxes] == [first["api_reasoning"]]
    answers = detail.find_elements("css selector", ".box[data-part='content']")
    assert [b.get_attribute("textContent") for b in answers] == [first["api_response"]]
    facts = dict(zip((e.text for e in detail.find_elements("css selector", "dt")),
                     (e.text for e in detail.find_elements("css selector", "dd"))))
    assert facts["human label"] == "1 · wrong: missed" and facts["outcome"].startswith("0")
    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errors, errors
