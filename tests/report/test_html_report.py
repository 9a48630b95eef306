"""report.html in a real headless Chromium (issue 14): the disagreement browser, side-by-side expansion, search,
keyboard, a screenshot that is not blank, and hostile text that must render as text and never run.

Expected values come from results.parquet (what the page must agree with) and from the study file's columns.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import polars as pl
import pytest

from toxcmp.config import configs_dir
from toxcmp.report.html import build_html
from toxcmp.domain.policies import load_policy
from toxcmp.analysis.scoring import derive, summarize

from tests.helpers.browser import start_browser

N50 = configs_dir() / "recordings" / "backend_comparison_gpt-oss-safeguard-20b_toxic_chat_claude_1_n50.parquet"
SAMPLE = configs_dir() / "samples" / "toxicchat0124_test_sample.csv"
ATTACK = ('<script>window.__pwned = "script"</script><img src=x onerror="window.__pwned=\'img\'">'
          '</script><script>window.__pwned="breakout"</script>{{DATA}} \u2028 <!-- & -->')


@pytest.fixture(scope="module")
def browser():
    driver = start_browser()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def n50_run(tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    from toxcmp.cli.app import app

    out = tmp_path_factory.mktemp("n50")
    both = f"recorded[path={N50};side=api;label=provider],recorded[path={N50};side=local;label=local-gpu]"
    result = CliRunner().invoke(app, ["compare", "--backends", both, "--dataset", str(N50), "--policy",
                                      "toxic_chat_claude_1", "--model", "gpt-oss-safeguard-20b", "--output-dir", str(out),
                                      "--json", "--cache-dir", str(out / "cache")])
    assert result.exit_code == 0, result.output
    return Path(json.loads(result.stdout)["run_dir"])


def _open(browser, path: Path) -> None:
    browser.get(path.resolve().as_uri())
    browser.implicitly_wait(5)
    assert browser.find_element("css selector", "body[data-ready='1']")


def _shown_ids(browser) -> list[str]:
    return [e.get_attribute("title") for e in browser.find_elements("css selector", "#rows tr.row td:nth-child(2)")]


def _click_filter(browser, name: str) -> None:
    browser.find_element("css selector", f"#filters button[data-filter='{name}']").click()


def test_disagree_filter_shows_exactly_the_disagreements(browser, n50_run):
    frame = pl.read_parquet(n50_run / "pairs.parquet")
    _open(browser, n50_run / "report.html")
    assert "PASS" in browser.find_element("id", "verdict").text
    assert len(_shown_ids(browser)) == frame.height == 50
    _click_filter(browser, "Disagree")
    expected = frame.filter(pl.col("cause").is_not_null())["example_id"].to_list()
    assert _shown_ids(browser) == expected and len(expected) == 2
    _click_filter(browser, "label_flip")
    assert _shown_ids(browser) == frame.filter(pl.col("cause") == "label_flip")["example_id"].to_list()


def test_a_row_expands_into_both_sides_with_their_reasoning(browser, n50_run):
    study = pl.read_parquet(N50)
    _open(browser, n50_run / "report.html")
    _click_filter(browser, "label_flip")
    browser.find_element("css selector", "#rows tr.row").click()
    detail = browser.find_element("css selector", "#rows tr.detail")
    boxes = detail.find_elements("css selector", ".box[data-part='reasoning']")
    assert len(boxes) == 2 and all(b.is_displayed() for b in boxes)
    flip = study.filter(pl.col("text").str.contains("Walmart")).row(0, named=True)
    shown = [b.get_attribute("textContent") for b in boxes]
    assert shown == [flip["api_reasoning"], flip["local_reasoning"]]  # the texts themselves, whole
    assert detail.find_elements("css selector", "mark.diff")  # the differing spans are marked
    answers = [b.get_attribute("textContent") for b in detail.find_elements("css selector", ".box[data-part='content']")]
    assert answers == [flip["api_response"], flip["local_response"]]


def test_search_keyboard_and_a_screenshot_that_is_not_blank(browser, n50_run):
    from PIL import Image

    frame = pl.read_parquet(n50_run / "pairs.parquet")
    _open(browser, n50_run / "report.html")
    word = "walmart"
    hits = [r["example_id"] for r in frame.iter_rows(named=True)
            if any(word in (r[k] or "").lower() for k in ("example_id", "text", "a_content", "b_content",
                                                            "a_reasoning", "b_reasoning"))]
    box = browser.find_element("id", "search")
    box.send_keys(word)
    assert _shown_ids(browser) == hits and hits
    box.clear()
    box.send_keys("zzzz-no-such-word")
    assert _shown_ids(browser) == []
    browser.refresh()
    _open(browser, n50_run / "report.html")
    body = browser.find_element("tag name", "body")
    body.send_keys("j")
    body.send_keys("j")
    selected = browser.find_elements("css selector", "#rows tr.row.sel td:nth-child(1)")
    assert [e.text for e in selected] == ["2"]
    body.send_keys("o")
    assert browser.find_elements("css selector", "#rows tr.detail")
    image = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50  # text, tables and charts, not one flat colour
    dark = sum(n for n, (r, g, b) in (colours or []) if r + g + b < 200)
    assert colours is None or dark > 1000


def _attack_rows() -> list[dict]:
    policy = load_policy("toxic_simple")
    rows = []
    for i, text in enumerate([ATTACK, "an ordinary row"]):
        row = {"example_id": f"<b>id{i}</b>", "text": text, "toxicity": 0, "weight": 1.0}
        for p in ("a", "b"):
            row |= {f"{p}_raw": ATTACK if p == "a" else "0", f"{p}_content": ATTACK if p == "a" else "0",
                    f"{p}_reasoning": ATTACK, f"{p}_latency_s": 0.1, f"{p}_cached": False, f"{p}_error": None,
                    f"{p}_served_by": "<i>server</i>", f"{p}_prompt_hash": "h", f"{p}_finish_reason": "stop",
                    f"{p}_retries": 0, f"{p}_backend": "<u>x</u>"}
        rows.append(derive(row, policy, False))
    return rows


def test_hostile_text_renders_as_text_and_never_runs(browser, tmp_path):
    rows = _attack_rows()
    summary = summarize(rows, ["<script>window.__pwned='label'</script>", "b"], kappa_resamples=20)
    summary["metadata"] = {"run_id": "<script>window.__pwned='meta'</script>", "policy": {"name": "{{DATA}}"}}
    page = tmp_path / "report.html"
    page.write_text(build_html(rows, summary), encoding="utf-8")
    _open(browser, page)
    assert browser.execute_script("return window.__pwned === undefined")
    first = browser.find_element("css selector", "#rows tr.row td.text")
    assert first.get_attribute("textContent") == ATTACK  # shown literally, whole
    first.click()
    assert browser.execute_script("return window.__pwned === undefined")
    content = browser.find_elements("css selector", "#rows tr.detail .box[data-part='content']")[0]
    assert content.get_attribute("textContent") == ATTACK
    assert not browser.find_elements("css selector", "#rows img, #rows script, #rows b, #rows u")


@pytest.mark.slow
def test_the_report_of_a_bundled_model_run(browser, cli, tmp_path):
    args = ["compare", "--backends", "local[strategy=naive],local", "--dataset", str(SAMPLE), "--sample-size", "3",
            "--max-new-tokens", "8", "--output-dir", str(tmp_path / "out"), "--json"]
    result = cli(*args)
    run_dir = Path(json.loads(result.stdout)["run_dir"])
    frame = pl.read_parquet(run_dir / "pairs.parquet")
    _open(browser, run_dir / "report.html")
    assert browser.find_element("id", "verdict").text.startswith("INCONCLUSIVE")
    assert _shown_ids(browser) == frame["example_id"].to_list()
    _click_filter(browser, "Parse failure")
    parse_failures = frame.filter(pl.col("a_binary").is_null() | pl.col("b_binary").is_null())["example_id"].to_list()
    assert _shown_ids(browser) == parse_failures


def test_bench_html_measures_a_2000_row_report(cli):
    from tests.conftest import RECORDED, require_shared

    sources = [require_shared(RECORDED / f"api_{m}_toxic_simple_n2000.parquet") for m in ("gpt-oss-20b", "gpt-oss-safeguard-20b")]
    result = cli("bench", "html", *map(str, sources), "--loads", "1", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["rows"] == 2000 and data["bytes"] < data["budget_bytes"] and data["interactive_ms"] > 0


def test_a_multi_arm_report_switches_comparisons(browser, tmp_path):
    from selenium.webdriver.support.ui import Select
    from typer.testing import CliRunner

    from toxcmp.cli.app import app

    copy = tmp_path / "copy.parquet"
    copy.write_bytes(N50.read_bytes())
    arms = (f"recorded[path={N50};side=local;label=local-gpu],recorded[path={N50};side=api;label=provider],"
            f"recorded[path={copy};side=local;label=copy]")
    result = CliRunner().invoke(app, ["compare", "--backends", arms, "--dataset", str(N50), "--policy",
                                      "toxic_chat_claude_1", "--output-dir", str(tmp_path / "out"), "--json"])
    run_dir = Path(json.loads(result.stdout)["run_dir"])
    pairs = pl.read_parquet(run_dir / "pairs.parquet")
    _open(browser, run_dir / "report.html")
    assert "Arms (reference: local-gpu)" in browser.find_element("tag name", "body").text
    _click_filter(browser, "Disagree")
    assert _shown_ids(browser) == pairs.filter((pl.col("arm") == "provider") & pl.col("cause").is_not_null())["example_id"].to_list()
    Select(browser.find_element("id", "pair")).select_by_value("copy")
    assert _shown_ids(browser) == []  # the copy never disagrees with the reference
    _click_filter(browser, "All")
    assert len(_shown_ids(browser)) == 50 and browser.find_element("id", "hb").text == "B: copy"
